"""The metrics operators alert on, read from /metrics as Prometheus would: requests by route
template, calls ringing and the longest wait, calls ended by outcome, rebuilds, the stream."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from telnyx_flask.live_rebuild import ensure_live_state

from .helpers import abandoned_call_events, empty_redis, renamed


def samples(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics, by (name, sorted labels)."""
    body = client.get("/metrics").get_data(as_text=True)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_template_not_by_path(client, agent):
    before = samples(client)
    for call in ("v3:one", "v3:two", "v3:three"):
        assert client.get(f"/api/calls/{call}", headers=agent.headers).status_code == 404
    assert client.get("/no/such/page").status_code == 404
    after = samples(client)

    route = "/api/calls/<path:call_id>"
    counted = {labels for (name, labels) in after if name == "telnyx_flask_http_requests_total"}
    assert not any("v3:one" in str(labels) for labels in counted)
    delta = value(
        after, "telnyx_flask_http_requests_total", route=route, method="GET", status="4xx"
    )
    assert (
        delta
        - value(before, "telnyx_flask_http_requests_total", route=route, method="GET", status="4xx")
        == 3
    )
    unmatched = ("telnyx_flask_http_requests_total", "unmatched", "GET", "4xx")
    assert value(after, unmatched[0], route=unmatched[1], method="GET", status="4xx") >= 1
    timed = value(after, "telnyx_flask_http_request_seconds_count", route=route, method="GET")
    assert (
        timed - value(before, "telnyx_flask_http_request_seconds_count", route=route, method="GET")
        == 3
    )


def test_calls_ringing_and_the_longest_wait_come_from_redis(client, post_webhook):
    first = renamed(abandoned_call_events(), "-ring1")
    second = renamed(abandoned_call_events(), "-ring2")
    assert value(samples(client), "telnyx_flask_calls_ringing") == 0
    assert value(samples(client), "telnyx_flask_longest_ringing_seconds") == 0
    post_webhook(first[0])
    post_webhook(second[0])
    found = samples(client)
    assert value(found, "telnyx_flask_calls_ringing") == 2
    assert 0 <= value(found, "telnyx_flask_longest_ringing_seconds") < 60
    # The stream's newest entry is the second call.ringing, written just now.
    assert abs(value(found, "telnyx_flask_stream_newest_entry_seconds") - time.time()) < 60
    post_webhook(first[1])
    assert value(samples(client), "telnyx_flask_calls_ringing") == 1


def test_a_call_that_ends_is_counted_once_by_its_outcome(client, post_webhook):
    initiated, hangup = renamed(abandoned_call_events(), "-ended")
    before = value(samples(client), "telnyx_flask_calls_ended_total", outcome="abandoned")
    post_webhook(initiated)
    post_webhook(hangup)
    post_webhook(hangup)  # a redelivery ends nothing again
    after = value(samples(client), "telnyx_flask_calls_ended_total", outcome="abandoned")
    assert after - before == 1


def test_a_rebuild_is_counted_with_the_calls_it_restored(
    app, client, post_webhook, redis_client, redis_prefix
):
    post_webhook(renamed(abandoned_call_events(), "-rebuilt")[0])
    before = samples(client)
    empty_redis(redis_client, redis_prefix)
    redis_client.delete(f"{redis_prefix}live:generation")
    assert ensure_live_state(app.extensions["database"], app.extensions["live"]) == 1
    after = samples(client)
    assert (
        value(after, "telnyx_flask_live_rebuilds_total")
        - value(before, "telnyx_flask_live_rebuilds_total")
        == 1
    )
    assert (
        value(after, "telnyx_flask_live_rebuilt_calls_total")
        - value(before, "telnyx_flask_live_rebuilt_calls_total")
        == 1
    )


def test_a_call_the_ring_timeout_takes_is_counted_once_even_while_telnyx_keeps_its_reject(
    app, client, post_webhook, fake_telnyx, redis_client, redis_prefix
):
    initiated, _ = renamed(abandoned_call_events(), "-timeout")
    post_webhook(initiated)
    call = initiated["data"]["payload"]["call_control_id"]
    started_ms = int(redis_client.zscore(f"{redis_prefix}calls:ringing", call))
    fake_telnyx.script("reject", 503, times=10)  # Telnyx down: the outbox keeps the reject
    ring_timeouts = app.extensions["ring_timeouts"]
    before = value(samples(client), "telnyx_flask_ring_timeouts_total")

    assert ring_timeouts.sweep(now=started_ms + 31_000) == []  # taken, but nothing sent yet
    assert ring_timeouts.sweep(now=started_ms + 32_000) == []  # still its: not taken again

    assert value(samples(client), "telnyx_flask_ring_timeouts_total") - before == 1
