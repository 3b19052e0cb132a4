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


@dataclass(frozen=True)
class Message:
    """One event, serialised once per worker and written as-is to every page."""

    id: str
    key: tuple[int, int]
    wire: bytes

    @classmethod
    def build(cls, stream_id: str, event: str, data: str) -> Message:
        """The SSE frame for a stream entry (data is one line of JSON)."""
        wire = f"id: {stream_id}\nevent: {event}\ndata: {data}\n\n".encode()
        return cls(stream_id, parse_stream_id(stream_id) or (0, 0), wire)


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

    def offer(self, message: Message) -> bool:
        """Queue a frame without blocking; False (and dropped) if the page is too far behind."""
        try:
            self.queue.put_nowait(message)
            return True
        except queue.Full:
            self.dropped = True
            return False


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
        # A connection of its own: a blocking XREAD must not hold one the requests need.
        self._client: redis.Redis | None = None

    def subscribe(self) -> Subscriber:
        """Register a page; the reader then hands it every entry it reads from now on."""
        self._ensure_reader()
        subscriber = Subscriber(self.queue_size)
        with self._lock:
            self._subscribers.add(subscriber)
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
            for _, entries in reply or ():
                for entry in entries:
                    message = _message(entry)
                    self._last_id = message.id
                    self._fan_out(message)

    def _fan_out(self, message: Message) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            if not subscriber.offer(message):
                self.unsubscribe(subscriber)
                # Wake its writer so it ends the response; the page resumes with Last-Event-ID.
                try:
                    subscriber.queue.get_nowait()
                    subscriber.queue.put_nowait(None)
                except (queue.Empty, queue.Full):
                    pass


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
        yield f"retry: {settings.retry_ms}\n\n".encode()
        resume = parse_stream_id(last_event_id) if last_event_id else None
        if last_event_id is not None and (resume is None or hub.live.aged_out(last_event_id)):
            # No id: the snapshot that follows carries the new resume point.
            reason = json.dumps({"reason": "the resume point is malformed or has aged out"})
            yield f"event: {RESET}\ndata: {reason}\n\n".encode()
            resume = None
        if resume is None:
            snapshot_id, calls = hub.live.snapshot()
            yield Message.build(snapshot_id, SNAPSHOT, json.dumps({"calls": calls})).wire
            start = snapshot_id
        else:
            start = last_event_id
        # Catch up from the stream itself; the live queue already holds what comes after, and
        # anything in both is skipped by id, so the seam has no gap and no repeat.
        last_key = parse_stream_id(start) or (0, 0)
        for entry in hub.live.events_after(start):
            message = _message(entry)
            if message.key > last_key:
                last_key = message.key
                yield message.wire
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
            if message is None or subscriber.dropped:
                return
            if message.key > last_key:
                last_key = message.key
                yield message.wire
    finally:
        metrics.SSE_STREAMS.dec()
        hub.unsubscribe(subscriber)


def get_hub() -> PushHub:
    """This app's PushHub."""
    return current_app.extensions["push"]


def init_app(app: Flask) -> None:
    """One hub per app (its reader starts with the first page, in each worker)."""
    app.extensions["push"] = PushHub(app.extensions["live"], app.config["SSE_QUEUE_SIZE"])
