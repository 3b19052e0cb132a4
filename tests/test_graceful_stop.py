"""Stops are graceful (DESIGN.md, invariant 12): on SIGTERM a worker ends its event streams at
once with a retry hint, refuses new ones, finishes requests in flight and exits in seconds; the
pages resume on the next server from their Last-Event-ID, missing nothing, seeing nothing twice.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest
import requests

from telnyx_flask.lifecycle import start_draining
from telnyx_flask.push import DRAIN_RETRY_MS, StreamSettings, event_stream

from .helpers import abandoned_call_events, encode, renamed, signed_headers
from .servers import Gunicorn
from .sse_client import Frame, SseClient

# Well inside gunicorn's graceful timeout (20 s), which is what a stop took before.
STOP_WITHIN_SECONDS = 5.0


def new_call(tag: str) -> dict:
    """A call.initiated webhook for a call of its own."""
    initiated, _ = renamed(abandoned_call_events(), f"-{tag}")
    return initiated


def post_webhook_to(server: Gunicorn, body: dict) -> None:
    """POST a signed webhook to the server, on a connection of its own."""
    raw = encode(body)
    response = requests.post(
        f"{server.url}/api/telnyx/webhook",
        data=raw,
        timeout=10,
        headers={"Connection": "close", "Content-Type": "application/json", **signed_headers(raw)},
    )
    assert response.status_code == 200, response.text


class HeldWebhook:
    """A webhook whose body is held back: gunicorn has the request in hand until it is sent."""

    def __init__(self, server: Gunicorn, body: dict):
        self.raw = encode(body)
        head = [
            "POST /api/telnyx/webhook HTTP/1.1",
            f"Host: 127.0.0.1:{server.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(self.raw)}",
            "Connection: close",
            "Expect: 100-continue",
            *(f"{name}: {value}" for name, value in signed_headers(self.raw).items()),
        ]
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        # gunicorn answers 100 Continue from inside the request handler: it is now in flight.
        assert self.sock.recv(64).startswith(b"HTTP/1.1 100 Continue")

    def finish(self) -> int:
        """Send the body; the response's status."""
        self.sock.sendall(self.raw)
        response = b""
        while chunk := self.sock.recv(65536):
            response += chunk
        self.sock.close()
        return int(response.split(b" ", 2)[1])


def open_pages(server: Gunicorn, agent, count: int) -> list[SseClient]:
    """`count` pages with their streams open (past the snapshot), on every worker."""
    workers = server.worker_pids()
    pages: list[SseClient] = []
    serving: set[int] = set()
    for _ in range(200):
        page = SseClient(f"{server.url}/api/telnyx/events", agent.headers)
        pid = page.serving_pid(workers)
        # Keep one page on each worker first, then any.
        if pid is None or (pid in serving and len(serving) < len(workers)):
            page.close()
            continue
        serving.add(pid)
        assert page.next_event().event == "snapshot"
        pages.append(page)
        if len(pages) == count:
            return pages
    raise AssertionError("could not open a page on every worker")


def is_drain_hint(frame: Frame) -> bool:
    return frame.retry is not None and DRAIN_RETRY_MS // 2 <= frame.retry <= DRAIN_RETRY_MS * 3 // 2


@pytest.fixture
def server_settings(settings) -> dict:
    """The settings for gunicorn: frequent heartbeats, so that silence is quick to tell."""
    # The test opens and closes many streams as one agent to land one on each worker; a closed
    # stream's slot is freed only at its next write, so the per-agent limit is raised here.
    return {
        **settings,
        "SSE_HEARTBEAT_SECONDS": "1",
        "RECORD_CALLS": "false",
        "SSE_MAX_STREAMS_PER_AGENT": "1000",
    }


def test_sigterm_ends_open_streams_at_once_and_pages_resume_on_the_next_server_without_a_gap(
    server_settings, agent, post_webhook, redis_client, redis_prefix
):
    server = Gunicorn(server_settings, workers=2)
    restarted = None
    pages: list[SseClient] = []
    try:
        server.wait_ready()
        assert len(server.worker_pids()) == 2
        pages = open_pages(server, agent, 3)
        ringing = new_call("before-stop")
        post_webhook_to(server, ringing)
        for page in pages:
            assert page.next_event().event == "call.ringing"
        held = HeldWebhook(server, new_call("in-flight"))

        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for page in pages:
            frames = page.frames_until_end()
            # Nothing but the hint (and perhaps a heartbeat) before the end, and the hint last.
            assert frames and is_drain_hint(frames[-1]), frames
            assert all(frame.event is None for frame in frames), frames
            assert page.server_closed()  # not kept alive: the page's retry goes elsewhere
        streams_ended = time.monotonic() - started
        # Every worker is draining now (each ended a stream); the held request still finishes.
        assert held.finish() == 200
        server.process.wait(timeout=STOP_WITHIN_SECONDS)
        stopped = time.monotonic() - started
        print(
            f"\nSIGTERM with 3 open streams: streams ended after {streams_ended:.2f} s, "
            f"master exited after {stopped:.2f} s"
        )
        output = server.read_output()
        assert "graceful timeout" not in output.lower(), output
        assert server.process.returncode == 0, output

        # Announced while no server runs here (another host takes Telnyx's webhooks meanwhile).
        post_webhook(new_call("between-servers-1"))
        post_webhook(new_call("between-servers-2"))
        restarted = server.restarted()
        post_webhook_to(restarted, new_call("after-restart"))
        for page in pages:
            last_seen = page.last_event_id
            missed = [
                entry_id
                for entry_id, _ in redis_client.xrange(
                    f"{redis_prefix}events", min=f"({last_seen}", max="+"
                )
            ]
            assert len(missed) == 4  # in flight, two between servers, one after
            resumed = SseClient(
                f"{restarted.url}/api/telnyx/events",
                {**agent.headers, "Last-Event-ID": last_seen},
            )
            try:
                frames = resumed.events(len(missed))
                assert [frame.id for frame in frames] == missed
                assert {frame.event for frame in frames} == {"call.ringing"}
                # And nothing twice: the next frame is a heartbeat.
                assert resumed.next_frame().comment == "ping"
            finally:
                resumed.close()
    finally:
        for page in pages:
            page.close()
        server.stop()
        if restarted is not None:
            restarted.stop()


def test_a_stopping_worker_says_draining_on_readyz_and_refuses_new_streams(server_settings, agent):
    server = Gunicorn(server_settings, workers=1)
    try:
        server.wait_ready()
        [page] = open_pages(server, agent, 1)
        # Connections the worker already holds: it still answers on them while it drains.
        readiness = requests.Session()
        assert readiness.get(f"{server.url}/readyz", timeout=5).status_code == 200
        streams = requests.Session()
        assert streams.get(f"{server.url}/healthz", timeout=5).status_code == 200

        server.process.send_signal(signal.SIGTERM)
        assert is_drain_hint(page.frames_until_end()[-1])  # the worker is draining now
        ready = readiness.get(f"{server.url}/readyz", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["status"] == "draining"
        assert ready.json()["checks"] == {"postgresql": "ok", "redis": "ok"}
        refused = streams.get(f"{server.url}/api/telnyx/events", headers=agent.headers, timeout=5)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"
        assert refused.headers["Retry-After"] == "1"
        server.process.wait(timeout=STOP_WITHIN_SECONDS)
    finally:
        server.stop()


# --- the same, in-process: a test calls start_draining(app) -----------------------------------


def test_draining_app_answers_readyz_503_draining_and_refuses_new_streams(client, app, agent):
    assert client.get("/readyz").status_code == 200
    start_draining(app)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["status"] == "draining"
    assert ready.json["checks"] == {"postgresql": "ok", "redis": "ok"}
    refused = client.get("/api/telnyx/events", headers=agent.headers)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.json["error"]["code"] == "draining"
    assert refused.json["error"]["message"]
    # Ordinary requests are still served while the worker drains.
    assert client.get("/api/telnyx/calls/pending", headers=agent.headers).status_code == 200


def test_draining_ends_an_open_stream_at_once_with_a_short_retry_hint(app):
    settings = StreamSettings(heartbeat_seconds=30, lifetime_seconds=3600)
    body = event_stream(app.extensions["push"], None, settings)
    assert next(body) == b"retry: 3000\n\n"
    assert b"event: snapshot" in next(body)
    started = time.monotonic()
    start_draining(app)
    rest = list(body)
    assert time.monotonic() - started < 1  # not the 30 s heartbeat wait
    [hint] = rest
    retry_ms = int(hint.decode().removeprefix("retry: ").strip())
    assert DRAIN_RETRY_MS // 2 <= retry_ms <= DRAIN_RETRY_MS * 3 // 2
    assert app.extensions["push"].subscriber_count == 0


def test_a_stream_that_opens_as_draining_starts_gets_only_the_retry_hint(app):
    start_draining(app)
    body = event_stream(app.extensions["push"], None, StreamSettings(heartbeat_seconds=30))
    [hint] = list(body)
    assert hint.startswith(b"retry: ")
