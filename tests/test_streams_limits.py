"""One agent cannot exhaust the event streams: at most SSE_MAX_STREAMS_PER_AGENT open at once
(counted in Redis across workers), a catch-up from far back read in pages, and the streams of a
revoked session end within seconds, by announcement or by re-checking the session."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import tracemalloc

import pytest
import requests

from telnyx_flask.event_stream import CATCH_UP_PAGE
from telnyx_flask.push import (
    DRAIN_RETRY_MS,
    SESSION_REVOKED,
    StreamOwner,
    StreamSettings,
    event_stream,
)

from .helpers import app_settings, wait_until
from .servers import Gunicorn, free_port
from .sse_client import Frame, SseClient
from .test_push import deliver_calls

REVOKED_WITHIN_SECONDS = 5.0


@pytest.fixture(scope="module")
def server(database_url, redis_prefix, fake_telnyx):
    settings = app_settings(database_url, redis_prefix, fake_telnyx.base_url)
    settings.update(SSE_HEARTBEAT_SECONDS="1", RECORD_CALLS="false")
    with Gunicorn(settings, workers=2, port=free_port()) as gunicorn:
        yield gunicorn


@pytest.fixture(scope="module")
def other_host(server):
    """A second server on the same PostgreSQL and Redis, as another host would be."""
    with Gunicorn(server.settings, workers=1, port=free_port()) as gunicorn:
        yield gunicorn


@pytest.fixture
def streams(server, clean_storage):
    """Open event streams as an agent; every one is closed after the test."""
    opened: list[SseClient] = []

    def open_stream(agent, on=None, **headers: str) -> SseClient:
        url = f"{(on or server).url}/api/telnyx/events"
        client = SseClient(url, {**agent.headers, **headers})
        opened.append(client)
        return client

    yield open_stream
    for client in opened:
        client.close()


def deliver_call(server, tag: str) -> str:
    """A signed call.initiated webhook for a new call; its call_control_id."""
    return deliver_calls(server, 1, tag)[0]


def revoke(redis_client, redis_prefix, agent_id: str, session_id: str | None = None) -> str:
    """What the service announces when an agent's session (None: every one) is revoked."""
    data = json.dumps({"agent_id": agent_id, "session_id": session_id})
    return redis_client.xadd(f"{redis_prefix}events", {"event": SESSION_REVOKED, "data": data})


def is_retry_hint(frame: Frame) -> bool:
    return frame.retry is not None and DRAIN_RETRY_MS // 2 <= frame.retry <= DRAIN_RETRY_MS * 3 // 2


# --- at most N streams per agent, across workers ---------------------------------------------


def test_the_eleventh_stream_of_one_agent_on_any_host_is_429_and_others_are_unaffected(
    server, other_host, streams, make_agent, redis_client, redis_prefix
):
    alice, bob = make_agent("Alice"), make_agent("Bob")
    pages = [streams(alice, on=host) for host in (server, other_host) for _ in range(5)]
    for page in pages:
        assert page.status == 200
        assert page.next_event().event == "snapshot"
    assert redis_client.zcard(f"{redis_prefix}sse:streams:{alice.id}") == 10
    assert 0 < redis_client.pttl(f"{redis_prefix}sse:streams:{alice.id}") <= 3000

    for host in (server, other_host):
        refused = requests.get(f"{host.url}/api/telnyx/events", headers=alice.headers, timeout=5)

        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "too_many_streams"
        assert "10 event streams" in error["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 3
    other = streams(bob)
    assert other.status == 200
    assert other.next_event().event == "snapshot"


def test_a_dropped_stream_gives_its_slot_back(
    server, streams, make_agent, redis_client, redis_prefix
):
    alice = make_agent("Alice")
    pages = [streams(alice) for _ in range(10)]
    for page in pages:
        assert page.next_event().event == "snapshot"
    pages[0].close()  # the tab is closed: the server notices at its next heartbeat write
    key = f"{redis_prefix}sse:streams:{alice.id}"
    deadline = time.monotonic() + 10
    while redis_client.zcard(key) > 9:
        assert time.monotonic() < deadline, "the closed stream kept its slot"
        time.sleep(0.05)  # polling Redis for the release; there is nothing to block on
    again = streams(alice)
    assert again.status == 200
    assert again.next_event().event == "snapshot"


def test_streams_ended_by_the_server_free_their_slots_at_once(
    server, streams, make_agent, redis_client, redis_prefix
):
    alice = make_agent("Alice")
    pages = [streams(alice) for _ in range(10)]
    for page in pages:
        assert page.next_event().event == "snapshot"
    revoke(redis_client, redis_prefix, alice.id)
    for page in pages:
        page.frames_until_end()
    # Given back before the response ended, so at once.
    assert redis_client.zcard(f"{redis_prefix}sse:streams:{alice.id}") == 0


def test_the_slots_of_a_killed_worker_come_free_once_they_lapse(
    server, other_host, streams, make_agent, redis_client, redis_prefix
):
    alice = make_agent("Alice")
    pages = [streams(alice, on=other_host) for _ in range(10)]
    for page in pages:
        assert page.next_event().event == "snapshot"
    [worker] = other_host.worker_pids()
    os.kill(worker, signal.SIGKILL)  # no finally runs: nothing gives the slots back
    killed_at = time.monotonic()
    url = f"{server.url}/api/telnyx/events"
    assert requests.get(url, headers=alice.headers, timeout=5).status_code == 429

    while True:
        page = streams(alice)
        if page.status == 200:
            break
        assert time.monotonic() - killed_at < 10, "the dead worker's slots never lapsed"
        time.sleep(0.2)  # waiting for the lease (3 s here) to run out; nothing to block on
    lapsed_after = time.monotonic() - killed_at
    print(f"\nslots of a killed worker came free after {lapsed_after:.1f} s (lease 3 s)")
    assert page.next_event().event == "snapshot"
    # The dead streams' leases ran out one by one (each was last renewed at its own moment);
    # within one more lease every one has, and the live stream's renewal clears them away.
    key = f"{redis_prefix}sse:streams:{alice.id}"
    wait_until(lambda: redis_client.zcard(key) == 1, timeout=10, interval=0.1)
    other_host.wait_ready()


def test_slots_of_a_killed_worker_lapse_and_stop_counting(
    app, client, agent, redis_client, redis_prefix
):
    key = f"{redis_prefix}sse:streams:{agent.id}"
    past = int(time.time() * 1000) - 1
    # What a SIGKILLed worker leaves behind: slots nobody renews any more.
    redis_client.zadd(key, {f"dead-{n}": past for n in range(10)})
    response = client.get("/api/telnyx/events", headers=agent.headers, buffered=False)
    try:
        assert response.status_code == 200
        assert redis_client.zcard(key) == 1
    finally:
        response.close()
    assert redis_client.zcard(key) == 0  # closing the response gave the slot back


def test_the_stream_limit_is_a_setting(settings, request):
    settings["SSE_MAX_STREAMS_PER_AGENT"] = "2"
    client, agent = request.getfixturevalue("client"), request.getfixturevalue("agent")
    held = [client.get("/api/telnyx/events", headers=agent.headers, buffered=False) for _ in "ab"]
    try:
        assert [response.status_code for response in held] == [200, 200]
        third = client.get("/api/telnyx/events", headers=agent.headers)
        assert third.status_code == 429
        assert third.json["error"]["code"] == "too_many_streams"
        assert "2 event streams" in third.json["error"]["message"]
        assert int(third.headers["Retry-After"]) >= 1
    finally:
        for response in held:
            response.close()


# --- a catch-up from far back is read in pages -------------------------------------------------


def test_a_resume_from_ten_thousand_entries_back_is_read_in_pages_without_a_gap(
    app, redis_client, redis_prefix, monkeypatch
):
    key = f"{redis_prefix}events"
    data = json.dumps(
        {"call_control_id": "v3:" + "x" * 120, "from": "+13125550147", "pad": "y" * 200}
    )
    first = redis_client.xadd(key, {"event": "call.ringing", "data": data})
    with redis_client.pipeline(transaction=False) as pipe:
        for _ in range(10_000):
            pipe.xadd(key, {"event": "call.ringing", "data": data})
        expected = pipe.execute()
    live = app.extensions["live"]
    replies: list[int] = []
    xrange = live.client.xrange

    def counting_xrange(*args, **kwargs):
        reply = xrange(*args, **kwargs)
        replies.append(len(reply))
        return reply

    monkeypatch.setattr(live.client, "xrange", counting_xrange)
    body = event_stream(
        app.extensions["push"], first, StreamSettings(heartbeat_seconds=0.2, lifetime_seconds=60)
    )
    received: list[str] = []
    tracemalloc.start()
    try:
        for frame in body:
            if frame.startswith(b"id: "):
                received.append(frame.split(b"\n", 1)[0][4:].decode())
            elif frame == b": ping\n\n":
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        body.close()
    print(
        f"\ncatch-up of 10,000 entries: peak {peak / 1e6:.2f} MB traced, "
        f"XRANGE replies {replies[:3]}…"
    )
    assert received == expected
    assert max(replies) <= CATCH_UP_PAGE
    assert peak < 2_000_000  # one page's worth, not the whole stream (about 7 MB in one read)


# --- revoked sessions end their streams --------------------------------------------------------


def test_revoking_an_agent_ends_their_open_streams_at_once_and_no_page_sees_the_announcement(
    server, streams, make_agent, redis_client, redis_prefix
):
    alice, bob = make_agent("Alice"), make_agent("Bob")
    alice_pages = [streams(alice) for _ in range(3)]
    bob_page = streams(bob)
    for page in [*alice_pages, bob_page]:
        assert page.next_event().event == "snapshot"

    started = time.monotonic()
    revoke(redis_client, redis_prefix, alice.id)
    for page in alice_pages:
        frames = page.frames_until_end()
        assert frames and is_retry_hint(frames[-1]), frames
        # Bob's page opening is news to them (agent.presence); the revocation is not.
        assert all(frame.event in (None, "agent.presence") for frame in frames), frames
    ended_after = time.monotonic() - started
    print(f"\nrevocation announced: 3 streams ended after {ended_after:.3f} s")
    assert ended_after < REVOKED_WITHIN_SECONDS

    call = deliver_call(server, "after-revoke")
    frame = bob_page.next_event()
    assert (frame.event, frame.json["call_control_id"]) == ("call.ringing", call)


def test_a_revocation_in_the_catch_up_is_skipped_and_loses_nothing(
    server, streams, make_agent, redis_client, redis_prefix
):
    alice, bob = make_agent("Alice"), make_agent("Bob")
    page = streams(alice)
    resume_from = page.next_event().id
    page.close()
    before = deliver_call(server, "before-revocation")
    revoke(redis_client, redis_prefix, bob.id)
    after = deliver_call(server, "after-revocation")

    again = streams(alice, **{"Last-Event-ID": resume_from})

    frames = again.events(2)
    assert [frame.json["call_control_id"] for frame in frames] == [before, after]
    assert again.next_frame().comment == "ping"  # and no session.revoked frame, ever


def test_only_the_revoked_session_of_an_agent_loses_its_stream(app, redis_client, redis_prefix):
    hub = app.extensions["push"]
    settings = StreamSettings(heartbeat_seconds=30, lifetime_seconds=60)
    revoked_session = event_stream(hub, None, settings, StreamOwner("agent-1", "session-a"))
    other_session = event_stream(hub, None, settings, StreamOwner("agent-1", "session-b"))
    for body in (revoked_session, other_session):
        assert next(body).startswith(b"retry:")
        assert b"event: snapshot" in next(body)

    revoke(redis_client, redis_prefix, "agent-1", "session-a")

    [hint] = list(revoked_session)
    assert hint.startswith(b"retry: ")
    ringing = redis_client.xadd(f"{redis_prefix}events", {"event": "call.ringing", "data": "{}"})
    assert next(other_session).startswith(f"id: {ringing}\nevent: call.ringing".encode())
    other_session.close()


def test_a_stream_whose_session_is_no_longer_valid_ends_without_an_announcement(app):
    # The announcement can be lost (a Redis flush): each stream re-checks its session itself.
    valid = threading.Event()
    valid.set()
    guard = StreamOwner("agent-1", "session-a", valid.is_set)
    body = event_stream(app.extensions["push"], None, StreamSettings(heartbeat_seconds=15), guard)
    assert next(body).startswith(b"retry:")
    assert b"event: snapshot" in next(body)

    valid.clear()
    started = time.monotonic()
    rest = list(body)

    ended_after = time.monotonic() - started
    print(f"\nsession no longer valid: stream ended after {ended_after:.2f} s")
    assert ended_after < REVOKED_WITHIN_SECONDS
    assert rest[-1].startswith(b"retry: ")
    assert all(frame == b": ping\n\n" for frame in rest[:-1])
