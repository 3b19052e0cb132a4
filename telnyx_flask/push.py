"""Server-Sent Events: one Redis stream reader per worker, fanned out to every open page.

The public surface is small: `Message` (one event on the wire), `PushHub` (this process's
reader and subscribers), `StreamSlots` (how many streams each agent may hold open, counted across
every worker and host) and `event_stream` (the body of one GET /api/telnyx/events).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from flask import Flask, current_app

from . import metrics, presence
from .errors import StorageUnavailable
from .event_stream import CATCH_UP_PAGE, parse_stream_id
from .live_calls import LiveCalls
from .rate_limits import RateLimited
from .redis_store import REDIS_ERRORS, RedisClient, create_blocking_reader, lua_script, text

log = logging.getLogger(__name__)

T = TypeVar("T")

RESET = "reset"
SNAPSHOT = "snapshot"
# A stopping worker's pages come back this soon (spread over half to one and a half times it, so
# they do not all reconnect in the same instant).
DRAIN_RETRY_MS = 1000
# Announced on the call-event stream when an agent's session (or every session of theirs) is
# revoked: the agent's open streams end. It is for the workers, never for a page.
SESSION_REVOKED = "session.revoked"
# An open stream asks whether its session is still good at least this often (and at each
# heartbeat if that is sooner), so it ends within seconds even if the announcement was lost.
GUARD_CHECK_SECONDS = 2.0


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


def _shallow(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)`, on a short-lived greenlet of its own when gevent runs this process.

    For Redis and PostgreSQL calls made by an open stream (or by the request that opens it).
    A greenlet keeps the pages of Python frame memory it has touched (its data stack) until it
    ends, so one call through redis-py's two dozen frames would leave a stream holding a page
    (4 KiB) more for its whole life; a greenlet of its own gives it back as the call returns.
    Costs a greenlet switch or two (tens of microseconds) per call; without gevent, a plain call.
    See docs/bench/stream-memory.md.
    """
    try:
        from gevent import monkey
    except ImportError:
        return call(*args)
    if not monkey.is_module_patched("socket"):
        return call(*args)
    import gevent
    from gevent.event import AsyncResult

    result: AsyncResult = AsyncResult()
    context = contextvars.copy_context()  # the caller's (Flask's context, log fields)

    def run() -> None:
        try:
            result.set(context.run(call, *args))
        except BaseException as error:  # raised again in the caller, by result.get()
            result.set_exception(error)

    gevent.spawn_raw(run)
    return cast(T, result.get())


def _take(entries: Iterator[T], count: int) -> list[T]:
    """Up to `count` more entries."""
    return list(itertools.islice(entries, count))


def _message(entry) -> Message:
    stream_id, fields = entry
    fields = {text(k): text(v) for k, v in fields.items()}
    return Message.build(text(stream_id), fields.get("event", "message"), fields.get("data", "{}"))


def _revocation(entry) -> tuple[str, str | None] | None:
    """(agent id, session id or None for all of them) from a `session.revoked` entry."""
    fields = {text(k): text(v) for k, v in entry[1].items()}
    if fields.get("event") != SESSION_REVOKED:
        return None
    try:
        data = json.loads(fields.get("data") or "{}")
        agent_id, session_id = data["agent_id"], data.get("session_id")
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("push reader: malformed %s entry %s ignored", SESSION_REVOKED, entry[0])
        return ("", "")  # matches no page, and is not passed on either
    if not isinstance(agent_id, str) or not isinstance(session_id, str | None):
        return ("", "")
    return agent_id, session_id


class Subscriber:
    """One open page: a bounded queue of frames; dropped, never waited for, when it falls behind.

    There is one per open stream, so it is kept small (docs/bench/stream-memory.md): a list of
    frames and one Event (gevent's, in a worker), where queue.Queue would hold four deques, three
    Conditions and a lock, and make a lock for every wait.
    """

    __slots__ = (
        "_arrived",
        "_frames",
        "agent_id",
        "dropped",
        "ended",
        "farewell",
        "session_id",
        "size",
    )

    def __init__(self, size: int, agent_id: str | None = None, session_id: str | None = None):
        self.size = size
        # Appended by the reader, taken from the front by the stream (both atomic under the GIL).
        self._frames: list[Message] = []
        # Set when a frame arrives or the stream ends; the stream clears it before looking.
        self._arrived = threading.Event()
        # Whose stream this is: a revoked session ends it.
        self.agent_id = agent_id
        self.session_id = session_id
        self.dropped = False
        self.ended = False
        # What the stream writes last when the server ends it (a retry hint when draining).
        self.farewell = b""

    def offer(self, message: Message) -> bool:
        """Queue a frame without blocking; False (and dropped) if the page is too far behind."""
        if len(self._frames) >= self.size:
            self.dropped = True
            self.end()
            return False
        self._frames.append(message)
        self._arrived.set()
        return True

    def next_frame(self, timeout: float) -> Message | None:
        """The oldest queued frame, waiting up to `timeout` s for one; None if none came in time
        or the stream was ended (check `ended`)."""
        deadline = None
        while not self._frames and not self.ended:
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            elif now >= deadline:
                return None
            self._arrived.wait(deadline - now)
            # Cleared before the list is looked at again, so a frame added after this still
            # finds it set: no wake-up is lost.
            self._arrived.clear()
        return None if self.ended else self._frames.pop(0)

    def end(self, farewell: bytes = b"") -> None:
        """Make the stream end soon, writing `farewell` last; never blocks."""
        # Dropped after draining began: the retry hint still goes out.
        self.farewell = farewell or self.farewell
        # Frames still queued are not written: the page resumes from its Last-Event-ID.
        self.ended = True
        self._arrived.set()


class StreamBody:
    """An event stream's body as the WSGI server gets it: the frames, and a close() that also
    runs `on_close` (for a stream that is closed before its generator ever ran)."""

    __slots__ = ("_frames", "_on_close")

    def __init__(self, frames: Generator[bytes, None, None], on_close: Callable[[], None]):
        self._frames = frames
        self._on_close = on_close

    def __iter__(self) -> Generator[bytes, None, None]:
        return self._frames

    def close(self) -> None:
        try:
            self._frames.close()
        finally:
            self._on_close()


class PushHub:
    """This worker's single XREAD reader and the pages it feeds."""

    def __init__(self, live: LiveCalls, queue_size: int = 256, block_ms: int = 5000):
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
        self._client: RedisClient | None = None

    def subscribe(self, agent_id: str | None = None, session_id: str | None = None) -> Subscriber:
        """Register a page; the reader then hands it every entry it reads from now on."""
        self._ensure_reader()
        subscriber = Subscriber(self.queue_size, agent_id, session_id)
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

    def end_sessions(self, agent_id: str, session_id: str | None) -> int:
        """End the streams of one session of an agent (None: all of theirs); how many ended."""
        with self._lock:
            matching = [
                subscriber
                for subscriber in self._subscribers
                if subscriber.agent_id == agent_id
                and (session_id is None or subscriber.session_id == session_id)
            ]
        for subscriber in matching:
            # The page's retry then meets a 401 and asks its agent to sign in again.
            subscriber.end(_retry_hint(DRAIN_RETRY_MS))
        return len(matching)

    def _ensure_reader(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._subscribers = set()
            self._ready.clear()
            self._client = None
            self._thread = threading.Thread(target=self._run, name="push-reader", daemon=True)
            self._thread.start()
        # Subscribers start only once the reader knows where it starts (see event_stream).
        self._ready.wait(10)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                if self._client is None:
                    # Made here, where a failure is retried: a cluster client connects at once.
                    self._client = create_blocking_reader(self.live.client)
                if not self._ready.is_set():
                    newest = self._client.xrevrange(self.live.keys.events, count=1)
                    self._last_id = text(newest[0][0]) if newest else "0-0"
                    self._note_position()
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
                self._notice_replaced_stream(self._client)
                continue
            if isinstance(reply, dict):
                # redis-py's type allows RESP3's shape; only RESP2's is read here.
                raise TypeError("push reader: XREAD replied in RESP3 form; use RESP2 (protocol=2)")
            for _, entries in reply:
                for entry in entries:
                    self._last_id = text(entry[0])
                    revoked = _revocation(entry)
                    if revoked is not None:
                        self.end_sessions(*revoked)
                        continue
                    self._fan_out(_message(entry))
            self._note_position()

    def _note_position(self) -> None:
        """Export how far this reader has read (the time in its last id), for the lag alert."""
        position = parse_stream_id(self._last_id)
        if position is not None and position[0] > 0:
            metrics.STREAM_READER_POSITION.labels("events").set(position[0] / 1000)

    def _notice_replaced_stream(self, client: RedisClient) -> None:
        """After a quiet XREAD: if the stream's newest id is older than the last one read, Redis
        lost the stream and the new one's ids started lower (a failover to a server whose clock
        is behind, say). Reading on from `_last_id` would skip every new entry, so read from the
        new stream's newest, and tell every page to take a fresh snapshot.

        A stream that is merely gone needs nothing: XREAD wakes when it is created, and its
        time-based ids normally follow the old ones.
        """
        try:
            newest = client.xrevrange(self.live.keys.events, count=1)
        except REDIS_ERRORS:
            return  # the next XREAD reports it
        if not newest:
            return
        newest_id = text(newest[0][0])
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


class TooManyStreams(RateLimited):
    """The agent already holds as many event streams open as one agent may."""

    code = "too_many_streams"

    def __init__(self, limit: int, retry_after: int):
        super().__init__(
            f"this agent already has {limit} event streams open, the most allowed: close a page "
            f"or tab that shows the calls, or try again in {retry_after} s",
            retry_after,
        )


class StreamSlot:
    """One open stream's place among its agent's: renewed while it runs, given back at its end."""

    __slots__ = ("_slots", "agent_id", "key", "stream_id")

    def __init__(self, slots: StreamSlots, agent_id: str, stream_id: str, key: str):
        self._slots = slots
        self.agent_id = agent_id
        self.stream_id = stream_id
        self.key = key

    @property
    def renew_seconds(self) -> float:
        """How often the stream renews it (three times per lease)."""
        return self._slots.lease_ms / 3000

    def renew(self) -> None:
        """Push the slot's lapse one lease further; a Redis error only logs (the slot may lapse)."""
        try:
            _shallow(self._slots.run, "renew", self.key, self.stream_id)
        except REDIS_ERRORS as error:
            log.warning("stream slot of agent %s not renewed: %s", self.agent_id, error)

    def release(self) -> None:
        """Give the slot back (safe to call twice); if Redis is away, the slot lapses instead."""
        try:
            self._slots.client.zrem(self.key, self.stream_id)
        except REDIS_ERRORS as error:
            log.warning("stream slot of agent %s not released: %s", self.agent_id, error)


class StreamSlots:
    """At most `limit` open event streams per agent, counted in Redis across workers and hosts.

    A page that takes calls holds a slot in keys.agent_streams, which presence reads as "a page
    is open"; a page that only watches (the supervisor's view) holds one in keys.watch_streams,
    counted apart, so watching the floor never makes anyone available for calls.

    Each stream holds a slot that lapses `lease_ms` after its last renewal, so the slots of a
    worker that was killed free themselves; a stream that ends gives its slot back at once.
    """

    def __init__(self, live: LiveCalls, limit: int, lease_ms: int):
        self.client = live.client
        self.keys = live.keys
        self.limit = limit
        self.lease_ms = lease_ms
        script = lua_script("stream_slot.lua")
        self._script = live.client.register_script(script)

    def run(self, op: str, key: str, stream_id: str) -> list[int]:
        """Run stream_slot.lua ("take" or "renew") for one stream, whose slots are in `key`."""
        now_ms = int(time.time() * 1000)
        reply = self._script(
            keys=[key],
            args=[op, stream_id, now_ms, self.lease_ms, self.limit],
        )
        return [int(item) for item in reply]

    def take(self, agent_id: str, watching: bool = False) -> StreamSlot:
        """A slot for a new stream of this agent's (`watching`: of a page that takes no calls),
        or TooManyStreams (429) when all are held."""
        stream_id = uuid.uuid4().hex
        key = self.keys.watch_streams(agent_id) if watching else self.keys.agent_streams(agent_id)
        try:
            reply = _shallow(self.run, "take", key, stream_id)
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        if reply[0] != 1:
            raise TooManyStreams(self.limit, max(1, -(-reply[1] // 1000)))
        return StreamSlot(self, agent_id, stream_id, key)


class StreamGuard(Protocol):
    """Whose stream this is, and whether their session is still good (auth.StreamGuard)."""

    # Read-only, so that frozen dataclasses (auth.StreamGuard, StreamOwner) match.
    @property
    def agent_id(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def still_valid(self) -> Callable[[], bool]: ...


@dataclass(frozen=True)
class StreamOwner:
    """A StreamGuard for when the session cannot be checked again: the agent, always valid."""

    agent_id: str
    session_id: str | None = None
    still_valid: Callable[[], bool] = lambda: True


@dataclass(frozen=True)
class StreamSettings:
    """Timings of one event stream."""

    heartbeat_seconds: float = 15.0
    lifetime_seconds: float = 3600.0
    retry_ms: int = 3000
    guard_check_seconds: float = GUARD_CHECK_SECONDS


def _still_valid(guard: StreamGuard) -> bool:
    """Ask the guard; an error (PostgreSQL away) keeps the stream, since nothing can be revoked
    while the store that records revocations is down, and the announcement still ends it."""
    try:
        return bool(_shallow(guard.still_valid))
    except Exception:
        log.warning(
            "could not check the session of agent %s's stream", guard.agent_id, exc_info=True
        )
        return True


def event_stream(
    hub: PushHub,
    last_event_id: str | None,
    settings: StreamSettings,
    guard: StreamGuard | None = None,
    slot: StreamSlot | None = None,
) -> Generator[bytes, None, None]:
    """The body of GET /api/telnyx/events: catch-up or snapshot, then live events.

    With a `guard`, the stream ends (with a retry hint) once its session is revoked; with a
    `slot`, it keeps its agent's stream slot renewed and gives it back when it ends.
    """
    subscriber = hub.subscribe(
        guard.agent_id if guard else None, guard.session_id if guard else None
    )
    metrics.SSE_STREAMS.inc()
    try:
        if subscriber.ended:
            yield subscriber.farewell  # the worker began draining as this stream opened
            return
        yield f"retry: {settings.retry_ms}\n\n".encode()
        last_key = yield from _opening(hub, last_event_id)
        now = time.monotonic()
        deadline = now + settings.lifetime_seconds * random.uniform(0.9, 1.1)
        check_every = min(settings.guard_check_seconds, settings.heartbeat_seconds)
        next_ping = now + settings.heartbeat_seconds
        next_check = now + check_every if guard else float("inf")
        next_renew = now + slot.renew_seconds if slot else float("inf")
        while True:
            now = time.monotonic()
            if now >= deadline:
                return  # the page reconnects, perhaps to another worker, and resumes
            if guard is not None and now >= next_check:  # without one, next_check is inf
                next_check = now + check_every
                if not _still_valid(guard):
                    # The announcement was missed (a Redis flush, say): end it the same way.
                    yield _retry_hint(DRAIN_RETRY_MS)
                    return
            if slot is not None and now >= next_renew:  # without one, next_renew is inf
                next_renew = now + slot.renew_seconds
                slot.renew()
            if now >= next_ping:
                next_ping = now + settings.heartbeat_seconds
                yield b": ping\n\n"
            wait = min(deadline, next_ping, next_check, next_renew) - now
            message = subscriber.next_frame(max(wait, 0.001))
            if subscriber.ended:
                if subscriber.farewell:
                    yield subscriber.farewell
                return
            if message is None:
                continue
            frames, last_key = _deliver(hub, message, last_key)
            if frames:
                next_ping = time.monotonic() + settings.heartbeat_seconds
            yield from frames
            # Not held while the stream waits: after a reset, frames has a snapshot of its own.
            del frames, message
    finally:
        metrics.SSE_STREAMS.dec()
        hub.unsubscribe(subscriber)
        if slot is not None:
            slot.release()


def _opening(hub: PushHub, last_event_id: str | None) -> Generator[bytes, None, tuple[int, int]]:
    """A fresh page's snapshot, or what a resuming page missed; returns the key to go on from.

    A resume point that is malformed or has aged out gets a reset and a snapshot. A generator
    of its own, so that what it made (a snapshot can be large) is not held by the stream for
    the rest of its life.
    """
    resume = parse_stream_id(last_event_id) if last_event_id else None
    if last_event_id is not None and (
        resume is None or _shallow(hub.live.stream.aged_out, last_event_id)
    ):
        # No id: the snapshot that follows carries the new resume point.
        reason = json.dumps({"reason": "the resume point is malformed or has aged out"})
        yield f"event: {RESET}\ndata: {reason}\n\n".encode()
        resume = None
    if resume is None:
        frame, start = _shallow(_snapshot, hub)
        yield frame
    else:
        assert last_event_id is not None  # resume was parsed from it
        start = last_event_id
    # Catch up from the stream itself; the live queue already holds what comes after, and
    # anything in both is skipped by id, so the seam has no gap and no repeat.
    last_key = parse_stream_id(start) or (0, 0)
    entries = hub.live.stream.events_after(start)
    while page := _shallow(_take, entries, CATCH_UP_PAGE):
        for entry in page:
            frames, last_key = _deliver(hub, _message(entry), last_key)
            yield from frames
    return last_key


def _snapshot(hub: PushHub) -> tuple[bytes, str]:
    """The snapshot frame and its id (the stream's newest, read with the calls).

    The agents' presence is read just after that id: a change made in between is in the
    snapshot and on the stream after the id too. Each `agent.presence` carries the agent's whole
    presence, so the page, replaying the stream in order from the id, ends where the newest
    change left it and misses none.
    """
    snapshot_id, calls = hub.live.stream.snapshot()
    data = {"calls": calls, "agents": presence.live_agents(hub.live)}
    return Message.build(snapshot_id, SNAPSHOT, json.dumps(data)).wire, snapshot_id


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
    if message.event == SESSION_REVOKED:
        # For the workers only; skipping it leaves the resume point where it was, so nothing
        # after it is lost (the entry is skipped again on the next resume).
        return [], last_key
    if message.event != RESET:
        return [message.wire], message.key
    frame, snapshot_id = _shallow(_snapshot, hub)
    return [message.wire, frame], parse_stream_id(snapshot_id) or (0, 0)


def get_hub() -> PushHub:
    """This app's PushHub."""
    return current_app.extensions["push"]


def get_stream_slots() -> StreamSlots:
    """This app's per-agent stream slots."""
    return current_app.extensions["stream_slots"]


def init_app(app: Flask) -> None:
    """One hub per app (its reader starts with the first page, in each worker); a draining app
    ends its streams."""
    hub = PushHub(app.extensions["live"], app.config["SSE_QUEUE_SIZE"])
    app.extensions["push"] = hub
    app.extensions["lifecycle"].on_start(hub.end_all)
    # Three heartbeats' worth: a stream renews its slot well before it lapses, and a killed
    # worker's slots come free within a minute at the default heartbeat.
    lease_ms = int(max(3 * app.config["SSE_HEARTBEAT_SECONDS"], 3) * 1000)
    app.extensions["stream_slots"] = StreamSlots(
        app.extensions["live"], app.config["SSE_MAX_STREAMS_PER_AGENT"], lease_ms
    )
