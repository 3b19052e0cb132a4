"""Answer, decline, hang up, ring timeout: one winner, and a clean release when Telnyx refuses."""

from __future__ import annotations

import json

import pytest

from telnyx_flask.ring_timeout import RingTimeouts

from .helpers import abandoned_call_events, answered_call_events, load_fixture

CALLER = "v3:Qf3u8JtKZq0pVm3xR2kL9w_ZbYc1dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA"


@pytest.fixture
def ringing(post_webhook):
    """A call ringing now (fixture 01)."""
    assert post_webhook(load_fixture("01_call.initiated.json")).status_code == 200
    return CALLER


def act(client, agent, action, call_control_id=CALLER, **kwargs):
    return client.post(
        f"/api/telnyx/calls/{call_control_id}/{action}", headers=agent.headers, **kwargs
    )


def stream(redis_client, redis_prefix):
    return [
        (f["event"], json.loads(f["data"])) for _, f in redis_client.xrange(f"{redis_prefix}events")
    ]


def test_answer_claims_answers_and_transfers_to_the_agent(
    client, agent, ringing, fake_telnyx, redis_client, redis_prefix, db_rows
):
    response = act(client, agent, "answer")
    assert response.status_code == 200
    body = response.get_json()
    assert body["transferred_to"] == "sip:agentalice@sip.telnyx.com"
    assert [(c.action, c.call_control_id) for c in fake_telnyx.received()] == [
        ("answer", CALLER),
        ("transfer", CALLER),
    ]
    transfer = fake_telnyx.received("transfer")[0].body
    assert transfer["to"] == "sip:agentalice@sip.telnyx.com"
    # Names the call, so that a browser sharing a WebRTC credential answers only its own.
    assert transfer["custom_headers"] == [{"name": "X-Call-Control-Id", "value": CALLER}]
    events = stream(redis_client, redis_prefix)
    assert events[-1] == (
        "call.claimed",
        {"call_control_id": CALLER, "agent": {"id": agent.id, "name": "Alice"}, "action": "answer"},
    )
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "answering"
    assert db_rows("SELECT answered_by::text FROM inbound_calls") == [{"answered_by": agent.id}]


def test_second_agent_gets_409_with_winner_name(client, agent, make_agent, ringing, fake_telnyx):
    bob = make_agent("Bob")
    assert act(client, agent, "answer").status_code == 200
    response = act(client, bob, "answer")
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "call_taken"
    assert error["claimed_by"] == {"id": agent.id, "name": "Alice"}
    assert "Alice" in error["message"]
    assert len(fake_telnyx.received("transfer")) == 1


def test_same_agent_pressing_again_is_not_a_conflict(client, agent, ringing, fake_telnyx):
    assert act(client, agent, "answer").status_code == 200
    assert act(client, agent, "answer").status_code == 200
    commands = fake_telnyx.received("transfer")
    # Sent twice, but with one command_id: Telnyx acts once.
    assert len({c.body["command_id"] for c in commands}) == 1


def test_answer_of_unknown_call_is_404(client, agent):
    response = act(client, agent, "answer", call_control_id="v3:nobody")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "call_not_found"


def test_answer_of_ended_call_is_404(client, agent, post_webhook, fake_telnyx):
    for body in abandoned_call_events():
        post_webhook(body)
    call_control_id = abandoned_call_events()[0]["data"]["payload"]["call_control_id"]
    assert act(client, agent, "answer", call_control_id=call_control_id).status_code == 404
    assert fake_telnyx.received() == []


def test_telnyx_refusing_the_answer_releases_the_claim_with_502(
    client, agent, make_agent, ringing, fake_telnyx, redis_client, redis_prefix
):
    fake_telnyx.script(
        "answer",
        403,
        body={
            "errors": [{"code": "10010", "title": "Authorization failed", "detail": "suspended"}]
        },
    )
    response = act(client, agent, "answer")
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "telnyx_refused"
    assert error["message"] == "Telnyx refused answer: suspended"
    assert error["telnyx"] == {"status": 403, "code": "10010"}
    assert "caller_waiting" not in error
    assert fake_telnyx.received("transfer") == []
    # Back to ringing, announced, and free for someone else.
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ringing"
    assert [name for name, _ in stream(redis_client, redis_prefix)][-2:] == [
        "call.claimed",
        "call.released",
    ]
    pending = client.get("/api/telnyx/calls/pending", headers=agent.headers).get_json()
    assert [c["call_control_id"] for c in pending["calls"]] == [CALLER]
    assert act(client, make_agent("Bob"), "answer").status_code == 200


def test_telnyx_refusing_the_transfer_keeps_the_answered_caller_with_the_agent(
    client, agent, make_agent, ringing, fake_telnyx, redis_client, redis_prefix
):
    """The caller is answered by then: releasing the call would leave them in dead air."""
    fake_telnyx.script(
        "transfer",
        422,
        body={
            "errors": [
                {"code": "90046", "title": "Invalid destination", "detail": "SIP URI not reachable"}
            ]
        },
    )
    response = act(client, agent, "answer")
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "telnyx_refused"
    assert "SIP URI not reachable" in error["message"]
    assert "the caller is answered and waiting" in error["message"]
    assert error["telnyx"] == {"status": 422, "code": "90046"}
    assert error["caller_waiting"] is True
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "claimed_by_id") == agent.id
    taken = act(client, make_agent("Bob"), "answer")
    assert taken.status_code == 409
    assert taken.get_json()["error"]["claimed_by"]["name"] == "Alice"
    # Alice tries again, and this time the transfer goes through.
    assert act(client, agent, "answer").status_code == 200
    assert [c.body["to"] for c in fake_telnyx.received("transfer")] == [
        "sip:agentalice@sip.telnyx.com"
    ] * 2


def test_a_retry_after_the_caller_was_answered_only_transfers(
    client, agent, ringing, fake_telnyx, post_webhook
):
    fake_telnyx.script(
        "transfer", 422, body={"errors": [{"code": "90046", "title": "Invalid destination"}]}
    )
    assert act(client, agent, "answer").status_code == 502
    answered = load_fixture("03_call.answered.json")
    assert post_webhook(answered).status_code == 200  # Telnyx: the caller's leg is answered
    assert act(client, agent, "answer").status_code == 200
    sent = [c.action for c in fake_telnyx.received() if c.action != "record_start"]
    assert sent == ["answer", "transfer", "transfer"]


def test_caller_gone_before_answer_is_404_not_502(client, agent, ringing, fake_telnyx):
    fake_telnyx.script("answer", 422)  # 90018: call already ended
    response = act(client, agent, "answer")
    assert response.status_code == 404
    assert fake_telnyx.received("transfer") == []


def test_answered_call_log_names_the_agent(client, agent, post_webhook, ringing, db_rows):
    assert act(client, agent, "answer").status_code == 200
    for body in answered_call_events()[1:]:
        post_webhook(body)
    [log] = db_rows("SELECT answered_by::text, caller_id::text, outcome FROM call_logs")
    assert log == {"answered_by": agent.id, "caller_id": agent.id, "outcome": "answered"}


def test_agent_without_sip_username_falls_back_to_the_shared_one(
    settings, make_agent, post_webhook, fake_telnyx
):
    from telnyx_flask import create_app

    settings["TELNYX_SIP_USERNAME"] = "sharedline"
    app = create_app(settings)
    agent = make_agent("Carol", sip_username=None)
    post_webhook(load_fixture("01_call.initiated.json"))
    assert act(app.test_client(), agent, "answer").status_code == 200
    assert fake_telnyx.received("transfer")[0].body["to"] == "sip:sharedline@sip.telnyx.com"


def test_agent_without_any_sip_username_gets_409(make_agent, client, ringing):
    agent = make_agent("Dan", sip_username=None)
    response = act(client, agent, "answer")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "no_sip_username"


@pytest.mark.parametrize("cause", ["CALL_REJECTED", "USER_BUSY"])
def test_decline_rejects_and_the_log_says_declined(
    client, agent, ringing, fake_telnyx, post_webhook, db_rows, cause
):
    response = act(client, agent, "decline", json={"cause": cause})
    assert response.status_code == 200
    [command] = fake_telnyx.received("reject")
    assert command.body["cause"] == cause
    hangup = load_fixture("05_call.hangup.json")
    hangup["data"]["payload"].update(hangup_cause="call_rejected", hangup_source="callee")
    post_webhook(hangup)
    [log] = db_rows("SELECT outcome, duration FROM call_logs")
    assert log == {"outcome": "declined", "duration": 0}


def test_decline_defaults_to_call_rejected(client, agent, ringing, fake_telnyx):
    assert act(client, agent, "decline").status_code == 200
    assert fake_telnyx.received("reject")[0].body["cause"] == "CALL_REJECTED"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"json": {"cause": "HANG_UP"}}, "invalid_cause"),
        ({"json": {"cause": 5}}, "invalid_cause"),
        ({"data": "not json", "content_type": "application/json"}, "invalid_body"),
        ({"json": ["CALL_REJECTED"]}, "invalid_body"),
    ],
)
def test_bad_decline_body_is_400(client, agent, ringing, fake_telnyx, kwargs, code):
    response = act(client, agent, "decline", **kwargs)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code
    assert fake_telnyx.received() == []


def test_declined_call_cannot_then_be_answered(client, agent, make_agent, ringing):
    assert act(client, agent, "decline").status_code == 200
    response = act(client, make_agent("Bob"), "answer")
    assert response.status_code == 409
    assert response.get_json()["error"]["claimed_by"]["name"] == "Alice"


def test_end_hangs_up_the_agents_call(client, agent, ringing, fake_telnyx):
    act(client, agent, "answer")
    response = act(client, agent, "end")
    assert response.status_code == 200
    assert response.get_json()["already_ended"] is False
    assert fake_telnyx.received("hangup")[0].call_control_id == CALLER


def test_end_of_a_call_telnyx_says_ended_is_200_already_ended(client, agent, ringing, fake_telnyx):
    act(client, agent, "answer")
    fake_telnyx.script("hangup", 422)
    response = act(client, agent, "end")
    assert response.status_code == 200
    assert response.get_json()["already_ended"] is True


def test_end_of_an_ended_call_is_200_without_asking_telnyx(
    client, agent, post_webhook, fake_telnyx
):
    for body in abandoned_call_events():
        post_webhook(body)
    call_control_id = abandoned_call_events()[0]["data"]["payload"]["call_control_id"]
    response = act(client, agent, "end", call_control_id=call_control_id)
    assert response.get_json()["already_ended"] is True
    assert fake_telnyx.received() == []


def test_end_of_a_ringing_call_is_409(client, agent, ringing):
    response = act(client, agent, "end")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "call_not_answered"


def test_end_of_someone_elses_call_is_403(client, agent, make_agent, ringing, fake_telnyx):
    act(client, agent, "answer")
    response = act(client, make_agent("Bob"), "end")
    assert response.status_code == 403
    assert fake_telnyx.received("hangup") == []


def test_end_of_unknown_call_is_404(client, agent):
    assert act(client, agent, "end", call_control_id="v3:nobody").status_code == 404


@pytest.mark.parametrize("action", ["answer", "decline", "end"])
def test_actions_need_an_agent(client, ringing, action):
    response = client.post(f"/api/telnyx/calls/{CALLER}/{action}")
    assert response.status_code == 401


def test_ring_timeout_rejects_once_however_many_workers_sweep(
    app, ringing, fake_telnyx, post_webhook, db_rows, redis_client, redis_prefix
):
    live, outbox = app.extensions["live"], app.extensions["outbox"]
    workers = [RingTimeouts(live, outbox, timeout_seconds=30) for _ in range(3)]
    # The clock starts when the call reached the service, not at the event's own timestamp.
    started_ms = int(redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER))
    assert [w.sweep(now=started_ms + 29_000) for w in workers] == [[], [], []]
    swept = [w.sweep(now=started_ms + 31_000) for w in workers]
    assert sorted(map(len, swept)) == [0, 0, 1]
    [command] = fake_telnyx.received("reject")
    assert command.body["cause"] == "USER_BUSY"
    assert stream(redis_client, redis_prefix)[-1][1]["action"] == "timeout"
    hangup = load_fixture("05_call.hangup.json")
    hangup["data"]["payload"].update(hangup_cause="user_busy", hangup_source="callee")
    post_webhook(hangup)
    assert db_rows("SELECT outcome FROM call_logs") == [{"outcome": "missed"}]


def test_ring_timeout_gives_the_call_back_when_telnyx_refuses_and_owes_it_again_later(
    app, ringing, fake_telnyx, redis_client, redis_prefix, db_rows
):
    started_ms = int(redis_client.zscore(f"{redis_prefix}calls:ringing", CALLER))
    fake_telnyx.script("reject", 400)
    outbox = app.extensions["outbox"]
    sweeper = RingTimeouts(app.extensions["live"], outbox, timeout_seconds=30)
    assert sweeper.sweep(now=started_ms + 60_000) == []
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ringing"
    # The next sweep owes it again, but not at once: no reject a second, the call stays claimed.
    assert sweeper.sweep(now=started_ms + 61_000) == []
    assert len(fake_telnyx.received("reject")) == 1
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "claimed_by_id") == "ring-timeout"
    # Once its backoff has passed (the test plays the clock), the outbox sends it.
    db_rows("UPDATE telnyx_outbox SET next_attempt_at = now() RETURNING id")
    assert outbox.deliver_due() == ["sent"]
    assert len(fake_telnyx.received("reject")) == 2


def test_stale_claim_is_released(app, client, agent, ringing, redis_client, redis_prefix):
    live = app.extensions["live"]
    claim = live.claim_call(CALLER, agent.id, agent.name, "answer", now_ms=1_000)
    assert claim.result == "claimed"
    sweeper = RingTimeouts(live, app.extensions["outbox"], timeout_seconds=30)
    sweeper.sweep(now=1_000 + 59_000)
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "answering"
    sweeper.sweep(now=1_000 + 61_000)
    assert redis_client.hget(f"{redis_prefix}call:{CALLER}", "status") == "ringing"


def test_naming_the_agent_after_the_hangup_tells_the_pages(
    app, agent, post_webhook, redis_client, redis_prefix, db_rows
):
    """A decline's hangup often lands before the decline is recorded: the row changes after
    call.ended, so pages are told to read it again."""
    from telnyx_flask.claims import name_agent_on_record
    from telnyx_flask.db import get_db
    from telnyx_flask.live_calls import get_live

    post_webhook(load_fixture("01_call.initiated.json"))
    post_webhook(load_fixture("05_call.hangup.json"))
    with app.app_context():
        name_agent_on_record(get_db(), get_live(), CALLER, "decline", agent_from(agent))
    name, data = stream(redis_client, redis_prefix)[-1]
    assert name == "call.logged"
    assert data == {"call_control_id": CALLER, "outcome": "declined"}
    assert db_rows("SELECT outcome FROM call_logs") == [{"outcome": "declined"}]


def test_naming_the_agent_while_the_call_is_on_announces_nothing(
    app, agent, ringing, redis_client, redis_prefix
):
    from telnyx_flask.claims import name_agent_on_record
    from telnyx_flask.db import get_db
    from telnyx_flask.live_calls import get_live

    before = stream(redis_client, redis_prefix)
    with app.app_context():
        name_agent_on_record(get_db(), get_live(), CALLER, "answer", agent_from(agent))
    assert stream(redis_client, redis_prefix) == before


def agent_from(test_agent):
    from telnyx_flask.users import Agent

    return Agent(test_agent.id, test_agent.email, test_agent.name, None)
