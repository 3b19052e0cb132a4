"""Server-Sent Events: snapshot, replay after reconnects, one reader per worker, real gunicorn."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest
import requests

from telnyx_flask import create_app
from telnyx_flask.push import PushHub, StreamSettings, event_stream

from . import helpers
from .helpers import abandoned_call_events, app_settings, encode, renamed, signed_headers
from .servers import Gunicorn, free_port
from .sse_client import SseClient
from .tcp_proxy import TcpProxy, through_proxy


@pytest.fixture(scope="module")
def server(database_url, redis_prefix, fake_telnyx):
    settings = app_settings(database_url, redis_prefix, fake_telnyx.base_url)
    settings.update(SSE_HEARTBEAT_SECONDS="1", RECORD_CALLS="false", SSE_QUEUE_SIZE="16")
    # Tests here open and drop many streams as one agent to reach every worker; the per-agent
    # limit has tests of its own (test_streams_limits.py).
    settings.update(SSE_MAX_STREAMS_PER_AGENT="1000")
    with Gunicorn(settings, workers=4, port=free_port()) as gunicorn:
        yield gunicorn


@pytest.fixture
def stream(server, agent, clean_storage):
    """Open an event stream as the agent (extra headers allowed); closed after the test."""
    opened = []

    def open_stream(**headers: str) -> SseClient:
        client = SseClient(
            f"{server.url}/api/telnyx/events",
            {"Authorization": agent.headers["Authorization"], **headers},
        )
        opened.append(client)
        return client

    yield open_stream
    for client in opened:
        client.close()


def deliver_calls(server, count: int, tag: str, hang_up: bool = False) -> list[str]:
    """Signed webhooks for `count` new calls, each POSTed on its own connection (any worker)."""
    ids = []
    for n in range(count):
        initiated, hangup = renamed(abandoned_call_events(), f"-{tag}{n}")
        for body in [initiated, hangup] if hang_up else [initiated]:
            raw = encode(body)
            response = requests.post(
                f"{server.url}/api/telnyx/webhook",
                data=raw,
                timeout=10,
                headers={"Connection": "close", **signed_headers(raw)},
            )
            assert response.status_code == 200, response.text
        ids.append(initiated["data"]["payload"]["call_control_id"])
    return ids


def stream_ids_after(redis_client, redis_prefix, after: str) -> list[str]:
    return [
        entry_id
        for entry_id, _ in redis_client.xrange(f"{redis_prefix}events", min=f"({after}", max="+")
    ]


def test_a_fresh_stream_starts_with_retry_then_snapshot(stream, server, agent):
    deliver_calls(server, 1, "snap")
    client = stream()
    assert client.status == 200
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    assert client.next_frame().retry == 3000
    snapshot = client.next_frame()
    assert snapshot.event == "snapshot"
    assert [c["call_control_id"] for c in snapshot.json["calls"]] == [
        abandoned_call_events()[0]["data"]["payload"]["call_control_id"] + "-snap0"
    ]
    assert snapshot.id  # the stream's newest id: resuming from it misses nothing


def test_every_worker_pushes_what_a_webhook_to_any_worker_delivered(stream, server):
    workers = server.worker_pids()
    assert len(workers) == 4
    clients: dict[int, SseClient] = {}
    for _ in range(200):
        client = stream()
        pid = client.serving_pid(workers)
        if pid in clients or pid is None:
            client.close()
        else:
            clients[pid] = client
        if len(clients) == 4:
            break
    assert len(clients) == 4, "could not reach every worker"
    for client in clients.values():
        assert client.next_event().event == "snapshot"
    calls = deliver_calls(server, 10, "fan")
    received = {pid: client.events(10) for pid, client in clients.items()}
    for frames in received.values():
        assert [f.event for f in frames] == ["call.ringing"] * 10
        assert [f.json["call_control_id"] for f in frames] == calls
    # Every page saw the same ids, in the stream's order.
    orders = {tuple(f.id for f in frames) for frames in received.values()}
    assert len(orders) == 1


def test_reconnecting_with_last_event_id_gets_exactly_what_was_missed(
    stream, server, redis_client, redis_prefix
):
    client = stream()
    resume_from = client.next_event().id
    client.close()
    deliver_calls(server, 25, "gap", hang_up=True)
    missed = stream_ids_after(redis_client, redis_prefix, resume_from)
    assert len(missed) == 50
    again = stream(**{"Last-Event-ID": resume_from})
    frames = again.events(50)
    assert [f.id for f in frames] == missed
    # Then nothing else: the next frame is a heartbeat.
    assert again.next_frame().comment == "ping"


def test_first_connection_may_resume_from_a_query_parameter(
    stream, server, redis_client, redis_prefix, agent
):
    client = stream()
    resume_from = client.next_event().id
    client.close()
    deliver_calls(server, 2, "query")
    again = SseClient(
        f"{server.url}/api/telnyx/events?last_event_id={resume_from}",
        {"Authorization": agent.headers["Authorization"]},
    )
    try:
        assert [f.id for f in again.events(2)] == stream_ids_after(
            redis_client, redis_prefix, resume_from
        )
    finally:
        again.close()


def test_clients_of_a_killed_worker_resume_elsewhere_and_lose_nothing(
    stream, server, redis_client, redis_prefix
):
    workers = server.worker_pids()
    victim = stream()
    victim.next_event()
    victim_pid = victim.serving_pid(workers)
    assert victim_pid is not None
    deliver_calls(server, 3, "before")
    last_seen = victim.events(3)[-1].id
    os.kill(victim_pid, signal.SIGKILL)
    with pytest.raises((ConnectionError, OSError)):
        while True:
            victim.next_frame()
    deliver_calls(server, 5, "during")
    resumed = stream(**{"Last-Event-ID": last_seen})
    assert resumed.serving_pid(workers + server.worker_pids()) != victim_pid
    frames = resumed.events(5)
    assert [f.id for f in frames] == stream_ids_after(redis_client, redis_prefix, last_seen)
    server.wait_ready()  # gunicorn replaces the worker; later tests want four again
    deadline = time.monotonic() + 30
    while len(server.worker_pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)  # watching the process table for the replacement worker


@pytest.mark.parametrize("resume_from", ["garbage", "12-x", "-1", "9" * 60])
def test_malformed_resume_point_gets_reset_then_snapshot(stream, resume_from):
    client = stream(**{"Last-Event-ID": resume_from})
    assert [f.event for f in client.events(2)] == ["reset", "snapshot"]


def test_aged_out_resume_point_gets_reset_then_snapshot(stream, server, redis_client, redis_prefix):
    client = stream()
    old = client.next_event().id
    client.close()
    deliver_calls(server, 3, "aged")
    # What MAXLEN does over time: the entries after `old` are trimmed away.
    redis_client.xtrim(f"{redis_prefix}events", maxlen=1, approximate=False)
    again = stream(**{"Last-Event-ID": old})
    reset, snapshot = again.events(2)
    assert (reset.event, snapshot.event) == ("reset", "snapshot")
    assert len(snapshot.json["calls"]) == 3


REBUILT = {"reason": "live state rebuilt from PostgreSQL"}


def announce_reset(redis_client, redis_prefix) -> str:
    """What the service writes to the stream once it rebuilt Redis's live state."""
    return redis_client.xadd(
        f"{redis_prefix}events", {"event": "reset", "data": json.dumps(REBUILT)}
    )


def test_a_reset_in_the_stream_makes_an_open_page_take_a_fresh_snapshot(
    stream, server, redis_client, redis_prefix
):
    client = stream()
    client.next_event()
    [ringing] = deliver_calls(server, 1, "live-reset")
    assert client.next_event().event == "call.ringing"
    reset_id = announce_reset(redis_client, redis_prefix)
    reset, snapshot = client.events(2)
    assert (reset.event, reset.id, reset.json) == ("reset", None, REBUILT)
    assert snapshot.event == "snapshot"
    assert snapshot.id == reset_id  # the stream's newest: the page goes on from there
    assert [call["call_control_id"] for call in snapshot.json["calls"]] == [ringing]
    [after] = deliver_calls(server, 1, "after-live-reset")
    frame = client.next_event()
    assert (frame.event, frame.json["call_control_id"]) == ("call.ringing", after)
    assert client.next_frame().comment == "ping"  # nothing twice


def test_a_page_resuming_from_before_a_reset_gets_reset_and_snapshot_in_its_catch_up(
    stream, server, redis_client, redis_prefix
):
    client = stream()
    resume_from = client.next_event().id
    client.close()
    before = deliver_calls(server, 2, "catch-up-reset")
    announce_reset(redis_client, redis_prefix)
    after = deliver_calls(server, 1, "after-catch-up-reset")
    again = stream(**{"Last-Event-ID": resume_from})
    frames = again.events(4)
    assert [f.event for f in frames] == ["call.ringing", "call.ringing", "reset", "snapshot"]
    assert [f.json["call_control_id"] for f in frames[:2]] == before
    assert frames[2].id is None
    snapshot = frames[3]
    assert snapshot.id == stream_ids_after(redis_client, redis_prefix, resume_from)[-1]
    assert [c["call_control_id"] for c in snapshot.json["calls"]] == before + after
    # The entry after the reset is in the snapshot, so it does not come again.
    assert again.next_frame().comment == "ping"


def test_pages_keep_receiving_after_redis_loses_the_stream(
    stream, server, redis_client, redis_prefix
):
    client = stream()
    client.next_event()
    deliver_calls(server, 1, "before-flush")
    assert client.next_event().event == "call.ringing"
    # What FLUSHDB does to this test's keys (the whole server is shared with other runs).
    helpers.empty_redis(redis_client, redis_prefix)
    assert not redis_client.exists(f"{redis_prefix}events")
    reset_id = announce_reset(redis_client, redis_prefix)
    reset, snapshot = client.events(2)
    assert (reset.event, snapshot.event) == ("reset", "snapshot")
    assert (snapshot.id, snapshot.json["calls"]) == (reset_id, [])
    [after] = deliver_calls(server, 1, "after-flush")
    assert client.next_event().json["call_control_id"] == after


def test_resume_point_from_the_future_gets_reset(stream):
    client = stream(**{"Last-Event-ID": f"{int(time.time() * 1000) + 10**9}-0"})
    assert client.next_event().event == "reset"


def test_no_credentials_is_401_before_any_stream(server):
    response = requests.get(f"{server.url}/api/telnyx/events", timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_an_idle_stream_gets_heartbeats(stream):
    client = stream()
    client.next_event()
    assert client.next_frame().comment == "ping"
    assert client.next_frame().comment == "ping"


def test_a_stalled_client_does_not_delay_the_others(stream, server, agent):
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(
        f"GET /api/telnyx/events HTTP/1.1\r\nHost: x\r\nAuthorization: "
        f"{agent.headers['Authorization']}\r\n\r\n".encode()
    )
    try:
        healthy = stream()
        healthy.next_event()
        calls = deliver_calls(server, 40, "stall")
        frames = healthy.events(40)
        assert [f.json["call_control_id"] for f in frames] == calls
    finally:
        stalled.close()


# --- the fan-out itself, in-process against the real Redis --------------------------------------


def test_seam_between_catch_up_and_live_has_no_gap_and_no_repeat(
    app, redis_client, redis_prefix, clean_storage
):
    key = f"{redis_prefix}events"
    start = redis_client.xadd(key, {"event": "call.ringing", "data": "{}"})
    stop = threading.Event()

    def produce():
        while not stop.is_set():
            redis_client.xadd(key, {"event": "call.ringing", "data": "{}"})

    producer = threading.Thread(target=produce)
    producer.start()
    hub = app.extensions["push"]
    body = event_stream(hub, start, StreamSettings(heartbeat_seconds=0.2, lifetime_seconds=60))
    try:
        received = []
        for frame in body:
            if frame.startswith(b"id: "):
                received.append(frame.split(b"\n", 1)[0][4:].decode())
            if len(received) >= 300:
                break
    finally:
        stop.set()
        producer.join()
        body.close()
    expected = stream_ids_after(redis_client, redis_prefix, start)[:300]
    assert received == expected


def test_a_subscriber_that_falls_behind_is_dropped_and_others_keep_up(
    app, redis_client, redis_prefix, clean_storage
):
    hub = app.extensions["push"]
    slow, fast = hub.subscribe(), hub.subscribe()
    count = hub.queue_size + 10
    got: list[str] = []

    def keep_up() -> None:
        got.extend(fast.next_frame(10).id for _ in range(count))

    reader = threading.Thread(target=keep_up)
    reader.start()
    key = f"{redis_prefix}events"
    ids = [
        redis_client.xadd(key, {"event": "call.ringing", "data": json.dumps({"n": n})})
        for n in range(count)
    ]
    reader.join(15)
    assert got == ids
    assert slow.dropped
    assert hub.subscriber_count == 1
    hub.unsubscribe(fast)


def test_a_stream_ends_after_its_lifetime(app, clean_storage):
    body = event_stream(
        app.extensions["push"], None, StreamSettings(heartbeat_seconds=0.1, lifetime_seconds=0.5)
    )
    started = time.monotonic()
    frames = list(body)
    assert 0.4 < time.monotonic() - started < 2
    assert frames[0].startswith(b"retry:")
    assert b"event: snapshot" in frames[1]
    assert frames[2:] and all(frame == b": ping\n\n" for frame in frames[2:])


def test_reader_survives_losing_redis_and_resumes_without_a_gap(
    settings, redis_client, redis_prefix
):
    proxy = TcpProxy.for_url(helpers.TEST_REDIS_URL, 6379)
    settings["REDIS_URL"] = through_proxy(helpers.TEST_REDIS_URL, proxy)
    hub = create_app(settings).extensions["push"]
    page = hub.subscribe()
    key = f"{redis_prefix}events"
    try:
        first = redis_client.xadd(key, {"event": "call.ringing", "data": "{}"})
        assert page.next_frame(10).id == first
        proxy.cut()
        # Written while the reader cannot see Redis (straight to the server, not via the proxy).
        during = [redis_client.xadd(key, {"event": "call.ringing", "data": "{}"}) for _ in range(5)]
        proxy.restore()
        assert [page.next_frame(15).id for _ in during] == during
    finally:
        hub.unsubscribe(page)
        hub.stop()
        proxy.close()


def test_pages_take_a_snapshot_when_the_stream_comes_back_with_older_ids(
    app, redis_client, redis_prefix, clean_storage
):
    # A flush, then a Redis whose clock is behind the old one's: the new ids are lower than
    # any a page has seen, so no id comparison can tell the page what is new.
    hub = PushHub(app.extensions["live"], block_ms=100)
    key = f"{redis_prefix}events"
    ahead = redis_client.xadd(
        key, {"event": "call.ringing", "data": "{}"}, id=f"{int(time.time() * 1000) + 3_600_000}-0"
    )
    body = event_stream(hub, None, StreamSettings(heartbeat_seconds=0.2, lifetime_seconds=10))

    def next_event() -> bytes:
        for frame in body:
            if frame != b": ping\n\n":
                return frame
        raise AssertionError("the stream ended")

    try:
        assert next_event().startswith(b"retry:")
        assert next_event().startswith(f"id: {ahead}\nevent: snapshot".encode())
        helpers.empty_redis(redis_client, redis_prefix)
        behind = redis_client.xadd(key, {"event": "call.ringing", "data": "{}"})
        assert next_event().startswith(b"event: reset\n")
        assert next_event().startswith(f"id: {behind}\nevent: snapshot".encode())
        later = redis_client.xadd(key, {"event": "call.ringing", "data": "{}"})
        assert next_event().startswith(f"id: {later}\nevent: call.ringing".encode())
    finally:
        body.close()
        hub.stop()
