"""Server-Sent Events: one Redis stream reader per worker, fanned out to every open page.

The public surface is small: `Message` (one event on the wire), `PushHub` (this process's
reader and subscribers) and `event_stream` (the body of one GET /api/telnyx/events).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from flask import Flask, current_app

from . import metrics
from .live import REDIS_ERRORS, LiveState, parse_stream_id

log = logging.getLogger(__name__)

RESET = "reset"
SNAPSHOT = "snapshot"
# A stopping worker's pages come back this soon (spread over half to one and a half times it, so
# they do not all reconnect in the same instant).
DRAIN_RETRY_MS = 1000


@dataclass(frozen=True)
class Message:
    """One event, serialised once per worker and written as-is to every page."""

    id: str
    key: tuple[int, int]
    wire: bytes
    event: str = ""

    @classmethod
    def build(cls, stream_id: str, event: str, data: str) -> Message:
        """The SSE frame for a stream entry (data is one line of JSON).

        A `reset` carries no id: the snapshot that each page takes after it carries the resume
        point, read atomically with the calls it lists.
        """
        if event == RESET:
            wire = f"event: {event}\ndata: {data}\n\n".encode()
        else:
            wire = f"id: {stream_id}\nevent: {event}\ndata: {data}\n\n".encode()
        return cls(stream_id, parse_stream_id(stream_id) or (0, 0), wire, event)


# Handed to every page when the stream's ids went backwards (Redis lost it, and the new one's ids
# are older than what pages saw): no id comparison can place it, so every page resets.
STREAM_REPLACED = Message.build(
    "", RESET, json.dumps({"reason": "the event stream was replaced; take a fresh snapshot"})
)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _message(entry) -> Message:
    stream_id, fields = entry
    fields = {_text(k): _text(v) for k, v in fields.items()}
    return Message.build(_text(stream_id), fields.get("event", "message"), fields.get("data", "{}"))


class Subscriber:
    """One open page: a bounded queue of frames; dropped, never waited for, when it falls behind."""

    def __init__(self, size: int):
        self.queue: queue.Queue[Message | None] = queue.Queue(maxsize=size)
        self.dropped = False
        self.ended = False
        # What the stream writes last when the server ends it (a retry hint when draining).
        self.farewell = b""

    def offer(self, message: Message) -> bool:
        """Queue a frame without blocking; False (and dropped) if the page is too far behind."""
        try:
            self.queue.put_nowait(message)
            return True
        except queue.Full:
            self.dropped = True
            self.end()
            return False

    def end(self, farewell: bytes = b"") -> None:
        """Make the stream end soon, writing `farewell` last; never blocks."""
        # Dropped after draining began: the retry hint still goes out.
        self.farewell = farewell or self.farewell
        # The flag is what the writer checks; the None only wakes it if it is waiting.
        self.ended = True
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            # A full queue means the writer is not waiting and will see the flag. Making room
            # anyway loses nothing: the page resumes from its Last-Event-ID.
            try:
                self.queue.get_nowait()
                self.queue.put_nowait(None)
            except (queue.Empty, queue.Full):
                pass


class PushHub:
    """This worker's single XREAD reader and the pages it feeds."""

    def __init__(self, live: LiveState, queue_size: int = 256, block_ms: int = 5000):
        self.live = live
        self.queue_size = queue_size
        self.block_ms = block_ms
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._last_id = "0-0"
        # Set once this worker drains: every page, open or still to come, ends with it.
        self._farewell: bytes | None = None
        # A connection of its own: a blocking XREAD must not hold one the requests need.
        self._client: redis.Redis | None = None

    def subscribe(self) -> Subscriber:
        """Register a page; the reader then hands it every entry it reads from now on."""
        self._ensure_reader()
        subscriber = Subscriber(self.queue_size)
        with self._lock:
            self._subscribers.add(subscriber)
            farewell = self._farewell
        if farewell is not None:
            subscriber.end(farewell)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a page (it closed, or was dropped)."""
        with self._lock:
            self._subscribers.discard(subscriber)

    @property
    def subscriber_count(self) -> int:
        """Pages open on this worker."""
        return len(self._subscribers)

    def stop(self) -> None:
        """Stop this process's reader (it ends within one XREAD block)."""
        self._stopping.set()

    def end_all(self) -> None:
        """End every page's stream now with a short retry hint; pages that open later end at once.

        For a stopping worker: its pages reconnect (with Last-Event-ID) to one that is not.
        """
        with self._lock:
            self._farewell = _retry_hint(DRAIN_RETRY_MS)
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.end(_retry_hint(DRAIN_RETRY_MS))

    def _ensure_reader(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._subscribers = set()
            self._ready.clear()
            shared = self.live.client.connection_pool
            pool = redis.ConnectionPool(
                connection_class=shared.connection_class,
                max_connections=1,
                **{**shared.connection_kwargs, "socket_timeout": None},
            )
            self._client = redis.Redis(connection_pool=pool)
            self._thread = threading.Thread(target=self._run, name="push-reader", daemon=True)
            self._thread.start()
        # Subscribers start only once the reader knows where it starts (see event_stream).
        self._ready.wait(10)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                if not self._ready.is_set():
                    newest = self._client.xrevrange(self.live.keys.events, count=1)
                    self._last_id = _text(newest[0][0]) if newest else "0-0"
                    self._ready.set()
                # A batch fans out without yielding, so it must fit in a page's queue with room
                # to spare; pages that keep up drain it while the next XREAD waits.
                reply = self._client.xread(
                    {self.live.keys.events: self._last_id},
                    block=self.block_ms,
                    count=max(1, self.queue_size // 2),
                )
                backoff = 0.1
            except REDIS_ERRORS as error:
                # Resume from the last id read: pages see no gap, only a delay.
                log.warning("push reader: redis unavailable (%s); retry in %.1fs", error, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not reply:
                self._notice_replaced_stream()
            for _, entries in reply or ():
                for entry in entries:
                    message = _message(entry)
                    self._last_id = message.id
                    self._fan_out(message)

    def _notice_replaced_stream(self) -> None:
        """After a quiet XREAD: if the stream's newest id is older than the last one read, Redis
        lost the stream and the new one's ids started lower (a failover to a server whose clock
        is behind, say). Reading on from `_last_id` would skip every new entry, so read from the
        new stream's newest, and tell every page to take a fresh snapshot.

        A stream that is merely gone needs nothing: XREAD wakes when it is created, and its
        time-based ids normally follow the old ones.
        """
        try:
            newest = self._client.xrevrange(self.live.keys.events, count=1)
        except REDIS_ERRORS:
            return  # the next XREAD reports it
        if not newest:
            return
        newest_id = _text(newest[0][0])
        if (parse_stream_id(newest_id) or (0, 0)) >= (parse_stream_id(self._last_id) or (0, 0)):
            return
        log.warning(
            "push reader: the event stream went back from %s to %s; pages take a snapshot",
            self._last_id,
            newest_id,
        )
        self._last_id = newest_id
        self._fan_out(STREAM_REPLACED)

    def _fan_out(self, message: Message) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            if not subscriber.offer(message):
                # offer() woke its writer to end the response; the page resumes with Last-Event-ID.
                self.unsubscribe(subscriber)


def _retry_hint(retry_ms: int) -> bytes:
    return f"retry: {random.randint(retry_ms // 2, retry_ms * 3 // 2)}\n\n".encode()


@dataclass(frozen=True)
class StreamSettings:
    """Timings of one event stream."""

    heartbeat_seconds: float = 15.0
    lifetime_seconds: float = 3600.0
    retry_ms: int = 3000


def event_stream(
    hub: PushHub, last_event_id: str | None, settings: StreamSettings
) -> Iterator[bytes]:
    """The body of GET /api/telnyx/events: catch-up or snapshot, then live events."""
    subscriber = hub.subscribe()
    metrics.SSE_STREAMS.inc()
    try:
        if subscriber.ended:
            yield subscriber.farewell  # the worker began draining as this stream opened
            return
        yield f"retry: {settings.retry_ms}\n\n".encode()
        resume = parse_stream_id(last_event_id) if last_event_id else None
        if last_event_id is not None and (resume is None or hub.live.aged_out(last_event_id)):
            # No id: the snapshot that follows carries the new resume point.
            reason = json.dumps({"reason": "the resume point is malformed or has aged out"})
            yield f"event: {RESET}\ndata: {reason}\n\n".encode()
            resume = None
        if resume is None:
            frame, start = _snapshot(hub)
            yield frame
        else:
            start = last_event_id
        # Catch up from the stream itself; the live queue already holds what comes after, and
        # anything in both is skipped by id, so the seam has no gap and no repeat.
        last_key = parse_stream_id(start) or (0, 0)
        for entry in hub.live.events_after(start):
            frames, last_key = _deliver(hub, _message(entry), last_key)
            yield from frames
        deadline = time.monotonic() + settings.lifetime_seconds * random.uniform(0.9, 1.1)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return  # the page reconnects, perhaps to another worker, and resumes
            try:
                message = subscriber.queue.get(timeout=min(settings.heartbeat_seconds, remaining))
            except queue.Empty:
                yield b": ping\n\n"
                continue
            if message is None or subscriber.ended:
                if subscriber.farewell:
                    yield subscriber.farewell
                return
            frames, last_key = _deliver(hub, message, last_key)
            yield from frames
    finally:
        metrics.SSE_STREAMS.dec()
        hub.unsubscribe(subscriber)


def _snapshot(hub: PushHub) -> tuple[bytes, str]:
    """The snapshot frame and its id (the stream's newest, read with the calls)."""
    snapshot_id, calls = hub.live.snapshot()
    return Message.build(snapshot_id, SNAPSHOT, json.dumps({"calls": calls})).wire, snapshot_id


def _deliver(
    hub: PushHub, message: Message, last_key: tuple[int, int]
) -> tuple[list[bytes], tuple[int, int]]:
    """The frames a page gets for one entry, and its resume key after them.

    An entry the page already has (by id) gives nothing. A `reset` (the live state was rebuilt
    from PostgreSQL) is passed on without an id and followed by a fresh snapshot; the page goes
    on from the snapshot's id, which may be older than its last one if the stream was replaced.
    """
    if message is not STREAM_REPLACED and message.key <= last_key:
        return [], last_key
    if message.event != RESET:
        return [message.wire], message.key
    frame, snapshot_id = _snapshot(hub)
    return [message.wire, frame], parse_stream_id(snapshot_id) or (0, 0)


def get_hub() -> PushHub:
    """This app's PushHub."""
    return current_app.extensions["push"]


def init_app(app: Flask) -> None:
    """One hub per app (its reader starts with the first page, in each worker); a draining app
    ends its streams."""
    hub = PushHub(app.extensions["live"], app.config["SSE_QUEUE_SIZE"])
    app.extensions["push"] = hub
    app.extensions["lifecycle"].on_start(hub.end_all)
