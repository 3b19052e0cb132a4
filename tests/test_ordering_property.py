"""Telnyx delivers at least once, in any order: every order, with any repeats, ends the same."""

from __future__ import annotations

import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telnyx_flask.webhook_events import parse_webhook
from telnyx_flask.webhook_intake import AppliedEvent, Incoming, apply_batch

from .helpers import abandoned_call_events, answered_call_events, encode, renamed

CALL_FIXTURES = {"answered": answered_call_events(), "abandoned": abandoned_call_events()}
IGNORED_COLUMNS = {"id", "created_at", "updated_at", "last_webhook_at", "prospect_id", "version"}
counter = itertools.count()


def final_rows(db_rows, session_id: str, suffix: str) -> dict:
    """The call's inbound_calls and call_logs rows, without per-run ids and clocks."""

    def normalise(row: dict) -> dict:
        return {
            key: value.removesuffix(suffix) if isinstance(value, str) else value
            for key, value in row.items()
            if key not in IGNORED_COLUMNS
        }

    calls = db_rows("SELECT * FROM inbound_calls WHERE call_session_id = %s", (session_id,))
    logs = db_rows("SELECT * FROM call_logs WHERE call_session_id = %s", (session_id,))
    return {"calls": [normalise(r) for r in calls], "logs": [normalise(r) for r in logs]}


def deliver(post_webhook, events) -> None:
    for body in events:
        assert post_webhook(body).status_code == 200


def deliver_in_batches(app, events, cuts: list[bool]) -> None:
    """Apply the events as group commits would: in consecutive batches, a batch ending after
    each event whose cut is True (and after the last)."""
    batch: list[Incoming] = []
    with app.app_context():
        for body, cut in zip(events, cuts + [False] * len(events), strict=False):
            raw = encode(body)
            batch.append(Incoming(parse_webhook(raw), raw))
            if cut:
                apply_all(batch)
                batch = []
        if batch:
            apply_all(batch)


def apply_all(batch: list[Incoming]) -> None:
    outcomes = apply_batch(batch)
    assert all(isinstance(outcome, AppliedEvent) for outcome in outcomes), outcomes


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(sorted(CALL_FIXTURES)),
    order=st.randoms(use_true_random=False),
    repeats=st.lists(st.integers(min_value=0, max_value=5), max_size=6),
)
def test_any_order_with_duplicates_gives_the_same_rows(
    post_webhook, db_rows, redis_client, redis_prefix, which, order, repeats
):
    def one_at_a_time(events):
        deliver(post_webhook, events)

    check_any_order(
        post_webhook, db_rows, redis_client, redis_prefix, which, order, repeats, one_at_a_time
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(sorted(CALL_FIXTURES)),
    order=st.randoms(use_true_random=False),
    repeats=st.lists(st.integers(min_value=0, max_value=5), max_size=6),
    cuts=st.lists(st.booleans(), max_size=12),
)
def test_any_order_with_duplicates_in_any_batches_gives_the_same_rows(
    app, post_webhook, db_rows, redis_client, redis_prefix, which, order, repeats, cuts
):
    """Group commit: the same events split into batches, a call's events and their duplicates
    side by side in one batch, end exactly as one at a time does."""

    def in_batches(events):
        deliver_in_batches(app, events, cuts)

    check_any_order(
        post_webhook, db_rows, redis_client, redis_prefix, which, order, repeats, in_batches
    )


def check_any_order(
    post_webhook, db_rows, redis_client, redis_prefix, which, order, repeats, deliver_run
):
    """Deliver a reference copy of the call in order, then a renamed copy shuffled with repeats
    through `deliver_run`; both must leave the same rows and a sane live state."""
    events = CALL_FIXTURES[which]
    reference = f"-ref{next(counter)}"
    deliver(post_webhook, renamed(events, reference))

    suffix = f"-run{next(counter)}"
    shuffled = renamed(events, suffix)
    shuffled += [shuffled[i % len(shuffled)] for i in repeats]
    order.shuffle(shuffled)
    deliver_run(shuffled)

    session = events[0]["data"]["payload"]["call_session_id"]
    expected = final_rows(db_rows, session + reference, reference)
    actual = final_rows(db_rows, session + suffix, suffix)
    assert actual == expected
    assert len(actual["logs"]) == 1

    # Live state: the call is over, no longer ringing, and each step was announced at most once,
    # never a ring after the end.
    caller = events[0]["data"]["payload"]["call_control_id"] + suffix
    assert redis_client.hget(f"{redis_prefix}call:{caller}", "status") == "ended"
    assert redis_client.zscore(f"{redis_prefix}calls:ringing", caller) is None
    names = [
        fields["event"]
        for _, fields in redis_client.xrange(f"{redis_prefix}events")
        if json.loads(fields["data"])["call_control_id"] == caller
    ]
    assert len(names) == len(set(names))
    assert names.index("call.ended") == len(names) - 1 or names[-1] == "call.recording"
    if "call.ringing" in names:
        assert names.index("call.ringing") == 0
