"""Ring latency: from a signed call.initiated webhook to each agent's page hearing call.ringing.

`make bench` runs this after webhook_throughput.py. One run creates a throwaway database and
Redis prefix, starts gunicorn as production would (gevent workers), and measures:

1. push: N Server-Sent Events streams open; calls arrive at a steady rate (each hung up a few
   seconds later, as a caller who gives up would); latency per (page, call) and what went missing;
2. polling, the seed's design: N pages polling GET /api/telnyx/calls/pending every 2 s;
3. memory: the workers' private memory (USS, from /proc/<pid>/smaps_rollup) per open stream,
   with 1,000 and 10,000 streams open (`--memory-streams`), on workers that have held no more;
4. capacity: ring latency as the number of open streams grows, and worker memory per stream;
5. cost: gunicorn workers' CPU per delivered event (from /proc), and the load generator's share.

The pages live in one or two load-generator processes (raw sockets on epoll, scanning only for
the frames that matter). It measures; it asserts nothing about speed.

    .venv/bin/python bench/ring_latency.py [--quick] [--clients N] [--calls N] [--rate R] ...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import errno
import heapq
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from webhook_throughput import (  # bench/ is not a package: found through sys.path
    CLOCK_TICKS,
    GROUPS,
    NPROC,
    ROOT,
    close,
    cpu_sample,
    cpu_split,
    delete_redis_keys,
    free_port,
    gunicorn_env,
    http_request,
    iso,
    load_templates,
    notable_log_lines,
    percentile,
    query_one,
    read_response,
    run_with_cleanup,
    running_gunicorn,
    stop_gunicorn,
    wait_ready,
)

from telnyx_flask.redis_store import RedisKeys
from telnyx_flask.signature import sign
from tests.helpers import throwaway_database

DEFAULT_OUTPUT = ROOT / "docs" / "bench" / "ring-latency.json"
DEFAULT_STEPS = "250,500,1000,2500,5000,10000"
DEFAULT_MEMORY_STREAMS = "1000,10000"
# Streams each agent holds at most in the bench (SSE_MAX_STREAMS_PER_AGENT allows up to 1,000).
STREAMS_PER_AGENT = 500
# Streams per worker open before the memory baseline: each worker's reader and code paths warm.
MEMORY_WARM_STREAMS_PER_WORKER = 10
EVENTS_PATH = "/api/telnyx/events"
PENDING_PATH = "/api/telnyx/calls/pending"
# A stream or a first poll not answered within this long counts as a failed open.
OPEN_TIMEOUT_NS = 60 * 10**9
# Connections each load-generator process has in the middle of opening at once: enough to open
# thousands of streams in seconds, few enough to stay inside gunicorn's listen backlog.
OPEN_IN_FLIGHT = 100
# Waiting for the last frames stops once nothing new has arrived for this long.
DRAIN_IDLE_SECONDS = 10.0
# Reuse a kept-alive webhook connection only this soon: gunicorn closes idle ones after 5 s.
KEEPALIVE_REUSE_SECONDS = 2.0
# Target the brief sets for the workers' CPU per delivered event.
TARGET_US_PER_EVENT = 30.0
AGENTS = 10  # at least; more when there are more than STREAMS_PER_AGENT pages per agent
# About the size of a call.ringing frame on the wire (the calibration sends frames this big).
FLOOR_FRAME_BYTES = 520
STREAM, POLL = "stream", "poll"
# One SSE frame: its event name, and the call_control_id when the data starts with it (the
# live call summaries do; the snapshot does not).
FRAME = re.compile(rb'event: ([\w.]+)\ndata: (?:\{"call_control_id": "([^"]*)")?')
CALL_ID = re.compile(rb'"call_control_id": ?"([^"]*)"')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="pages (push and polling)")
    parser.add_argument("--calls", type=int, default=200, help="calls in each measured phase")
    parser.add_argument("--rate", type=float, default=10.0, help="calls per second")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn WEB_CONCURRENCY")
    parser.add_argument("--ring-seconds", type=float, default=4.0, help="caller hangs up after")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between polls")
    parser.add_argument(
        "--capacity-steps", default=DEFAULT_STEPS, help="open streams per step ('' to skip)"
    )
    parser.add_argument("--capacity-calls", type=int, default=30, help="calls per capacity step")
    parser.add_argument(
        "--memory-streams",
        default=None,
        help=f"open streams at which to take worker memory (default {DEFAULT_MEMORY_STREAMS}; "
        "--quick: 1000; '' to skip)",
    )
    parser.add_argument("--capacity-rate", type=float, default=1.0, help="calls/s in capacity")
    parser.add_argument("--warmup-calls", type=int, default=50, help="calls with nobody listening")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--profile-seconds", type=int, default=10, help="py-spy on a worker after push (0: off)"
    )
    parser.add_argument("--db-pool-size", type=int, default=10, help="DB_POOL_SIZE per worker")
    parser.add_argument("--quick", action="store_true", help="100 clients, 20 calls, no capacity")
    parser.add_argument(
        "--database-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.calls, args.capacity_steps = 100, 20, ""
        args.warmup_calls, args.profile_seconds = 10, 0
    if args.memory_streams is None:
        args.memory_streams = "1000" if args.quick else DEFAULT_MEMORY_STREAMS
    try:
        args.steps = [int(s) for s in args.capacity_steps.split(",") if s.strip()]
        args.memory_steps = sorted(int(s) for s in args.memory_streams.split(",") if s.strip())
    except ValueError:
        parser.error("--capacity-steps and --memory-streams must be comma-separated whole numbers")
    warm = MEMORY_WARM_STREAMS_PER_WORKER * args.workers
    if args.memory_steps and args.memory_steps[0] <= warm:
        parser.error(f"--memory-streams must exceed the {warm} streams open for the baseline")
    if min(args.clients, args.calls, args.workers, args.processes, *args.steps, 1) < 1:
        parser.error("counts must be positive")
    if args.rate <= 0 or args.capacity_rate <= 0 or args.poll_interval <= 0:
        parser.error("rates and intervals must be positive")
    if args.ring_seconds <= args.poll_interval:
        parser.error("--ring-seconds must exceed --poll-interval, or polls could miss calls")
    return args


# --- Load-generator process: many pages on one epoll loop --------------------------------------


class Page:
    """One connection: an SSE stream, or a polling page's keep-alive connection."""

    __slots__ = (
        "body_at",
        "buf",
        "close_after",
        "deadline",
        "fd",
        "index",
        "kind",
        "need",
        "ready",
        "request",
        "seen",
        "sent_ns",
        "sock",
        "state",
        "status",
    )

    def __init__(self, index: int, kind: str, request: bytes):
        self.index, self.kind, self.request = index, kind, request
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = "connecting"
        self.buf = b""
        self.ready = False  # stream: snapshot seen; poll: first poll answered 200
        self.deadline = 0
        self.sent_ns = 0
        self.seen: set[bytes] = set()
        self.need: int | None = None  # poll: bytes of the whole response once the head is in
        self.body_at = 0
        self.status = 0
        self.close_after = False


class PageFleet:
    """The pages of one load-generator process, driven by commands over a pipe."""

    def __init__(self, control, port: int):
        self.control = control
        self.address = ("127.0.0.1", port)
        self.host = f"127.0.0.1:{port}"
        self.epoll = select.epoll()
        self.epoll.register(control.fileno(), select.EPOLLIN)
        self.pages: dict[int, Page] = {}
        self.kinds: dict[str, set[Page]] = {STREAM: set(), POLL: set()}
        self.waiting: deque[Page] = deque()
        self.opening: set[Page] = set()
        self.open_op: dict[str, Any] | None = None
        self.polls: list[tuple[int, int, Page]] = []  # heap of (due ns, tie-break, page)
        self.poll_seq = 0
        self.poll_interval_ns = 0
        self.polling = False
        self.stop_deadline: float | None = None  # poll_stop: answered once no poll is unanswered
        self.reset()

    def reset(self) -> None:
        """Forget what was received: a new measurement starts."""
        self.rings: defaultdict[bytes, list] = defaultdict(list)
        self.first_seen: defaultdict[bytes, list] = defaultdict(list)
        self.frames: Counter = Counter()
        self.ring_count = self.seen_count = 0
        self.dropped = 0
        self.poll_stats: Counter = Counter()
        self.poll_statuses: Counter = Counter()
        self.poll_ms: list[float] = []
        self.samples: list[str] = []

    def sample(self, text: str) -> None:
        """Keep the first few problems for the report."""
        if len(self.samples) < 10:
            self.samples.append(text)

    # Connections

    def request(self, kind: str, token: str) -> bytes:
        """The GET a page sends: the event stream once, or the pending list on every poll."""
        path = EVENTS_PATH if kind == STREAM else PENDING_PATH
        accept = "text/event-stream" if kind == STREAM else "application/json"
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {token}\r\n"
            f"Accept: {accept}\r\n\r\n"
        ).encode()

    def connect(self, page: Page) -> None:
        """Start a non-blocking connect; the page's first request goes once it completes."""
        page.state, page.buf, page.need = "connecting", b"", None
        page.deadline = time.monotonic_ns() + OPEN_TIMEOUT_NS
        if not page.ready:
            self.opening.add(page)  # in flight until ready; a reconnect is not an open
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as error:
            self.fail(page, errno.errorcode.get(error.errno, str(error)))
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail(page, errno.errorcode.get(code, str(code)))
            return
        page.sock, page.fd = sock, sock.fileno()
        self.pages[page.fd] = page
        self.epoll.register(page.fd, select.EPOLLOUT)

    def connected(self, page: Page) -> None:
        """The connect finished: send the page's first request (or wait for its next poll)."""
        code = page.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(page, errno.errorcode.get(code, str(code)))
            return
        self.epoll.modify(page.fd, select.EPOLLIN)
        if page.kind == STREAM:
            page.state = "head"
            page.sock.send(page.request)
        elif page.ready:
            page.state = "idle"  # a reconnect: the next poll is already scheduled
        else:
            self.send_poll(page, time.monotonic_ns())  # the page loads: its first poll

    def drop(self, page: Page) -> None:
        """Close a page's socket and forget it."""
        if page.sock is not None:
            self.pages.pop(page.fd, None)
            with contextlib.suppress(OSError):
                self.epoll.unregister(page.fd)
            page.sock.close()
            page.sock = None
        self.kinds[page.kind].discard(page)
        self.opening.discard(page)

    def fail(self, page: Page, reason: str) -> None:
        """A page that could not open: counted with its reason, and closed."""
        was_opening = page in self.opening
        self.drop(page)
        if was_opening and self.open_op is not None:
            self.open_op["errors"][reason] += 1
            self.open_op["pending"] -= 1
        elif page.kind == POLL:
            self.poll_stats[f"lost: {reason}"] += 1
        self.sample(f"{page.kind} {page.index}: {reason}")

    def opened(self, page: Page) -> None:
        """A page is ready: its stream sent the snapshot, or its first poll was answered."""
        page.ready = True
        if page in self.opening:
            self.opening.discard(page)
            self.open_op["ok"] += 1
            self.open_op["pending"] -= 1

    # Data

    def readable(self, page: Page) -> None:
        """Read what arrived and act on it."""
        try:
            data = page.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            data, reason = b"", errno.errorcode.get(error.errno, str(error))
        else:
            reason = "closed by the server"
        now = time.monotonic_ns()
        if not data:
            self.closed(page, reason)
        elif page.kind == STREAM:
            self.stream_data(page, data, now)
        else:
            self.poll_data(page, data, now)

    def closed(self, page: Page, reason: str) -> None:
        """The server (or the network) closed a connection."""
        if page in self.opening:
            self.fail(page, f"{reason} before ready")
        elif page.kind == STREAM:
            self.dropped += 1
            self.sample(f"stream {page.index}: {reason} while open")
            self.drop(page)
        else:
            # A browser reconnects a closed keep-alive connection on its next fetch.
            if page.state == "waiting":
                self.poll_stats["closed mid-request"] += 1
            self.poll_stats["reconnects"] += 1
            self.drop(page)
            self.kinds[POLL].add(page)
            self.connect(page)

    def stream_data(self, page: Page, data: bytes, now: int) -> None:
        """Scan whole frames for event names; note each call.ringing's call_control_id."""
        if page.state == "head":
            data = page.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                page.buf = data
                return
            status = int(data.split(b" ", 2)[1])
            if status != 200:
                self.fail(page, f"HTTP {status}")
                return
            page.state, page.buf, data = "open", b"", data[end + 4 :]
        buf = page.buf + data if page.buf else data
        cut = buf.rfind(b"\n\n")  # frames end with a blank line; the rest waits for more bytes
        if cut < 0:
            page.buf = buf
            return
        page.buf = buf[cut + 2 :]
        for match in FRAME.finditer(buf, 0, cut + 2):
            name = match.group(1)
            self.frames[name] += 1
            if name == b"call.ringing":
                call_id = match.group(2)
                if call_id is None:  # the summary does not start with it: look in the frame
                    found = CALL_ID.search(buf, match.end(), buf.find(b"\n\n", match.end()))
                    call_id = found.group(1) if found else b""
                self.rings[call_id].append((page.index, now))
                self.ring_count += 1
            elif name == b"snapshot" and not page.ready:
                self.opened(page)

    def send_poll(self, page: Page, now: int) -> None:
        """Ask for the pending calls."""
        try:
            page.sock.send(page.request)
        except OSError as error:
            self.closed(page, errno.errorcode.get(error.errno, str(error)))
            return
        page.state, page.sent_ns = "waiting", now
        self.poll_stats["requests"] += 1

    def poll_data(self, page: Page, data: bytes, now: int) -> None:
        """Collect a Content-Length response; note each listed call the page had not seen."""
        page.buf += data
        while True:
            if page.need is None:
                end = page.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = page.buf[:end].split(b"\r\n")
                page.status = int(lines[0].split(b" ", 2)[1])
                length, page.close_after = 0, False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection":
                        page.close_after = value.strip().lower() == b"close"
                page.body_at, page.need = end + 4, end + 4 + length
            if len(page.buf) < page.need:
                return
            body, page.buf = page.buf[page.body_at : page.need], page.buf[page.need :]
            page.need = None
            self.poll_answered(page, body, now)
            if page.sock is None or page.close_after:
                if page.sock is not None:
                    self.closed(page, "Connection: close")
                return

    def poll_answered(self, page: Page, body: bytes, now: int) -> None:
        """One whole poll response."""
        page.state = "idle"
        self.poll_ms.append((now - page.sent_ns) / 1e6)
        self.poll_statuses[page.status] += 1
        if page.status != 200:
            self.sample(f"poll {page.index}: HTTP {page.status} {body[:200]!r}")
            if not page.ready:
                self.fail(page, f"HTTP {page.status}")
            return
        for call_id in CALL_ID.findall(body):
            if call_id not in page.seen:
                page.seen.add(call_id)
                self.first_seen[call_id].append((page.index, now))
                self.seen_count += 1
        if not page.ready:
            self.opened(page)

    def due_polls(self, now: int) -> None:
        """Send the polls that are due; a page still waiting for its last answer skips one."""
        while self.polls and self.polls[0][0] <= now:
            due, _, page = heapq.heappop(self.polls)
            if page.sock is None and page not in self.kinds[POLL]:
                continue  # closed for good
            if page.state == "idle":
                self.send_poll(page, now)
            else:
                self.poll_stats["skipped (previous poll unanswered)"] += 1
            if self.polling:
                self.schedule_poll(page, due + self.poll_interval_ns)

    def schedule_poll(self, page: Page, due: int) -> None:
        """Queue a page's next poll."""
        self.poll_seq += 1
        heapq.heappush(self.polls, (due, self.poll_seq, page))

    # Commands from the main process

    def command(self, message: tuple) -> tuple | None:
        """Act on one command; return the reply, or None when it comes later (open, stop)."""
        name, *args = message
        if name == "open":
            kind, clients = args
            self.open_op = {
                "ok": 0,
                "pending": len(clients),
                "errors": Counter(),
                "start": time.monotonic(),
            }
            for index, token in clients:
                page = Page(index, kind, self.request(kind, token))
                self.kinds[kind].add(page)
                self.waiting.append(page)
            return None
        if name == "progress":
            return (self.ring_count, self.frames[b"call.ended"], self.seen_count)
        if name == "collect":
            reply = self.results()
            self.reset()
            return reply
        if name == "poll_start":
            interval_s, start_ns, total = args
            self.poll_interval_ns, self.polling = int(interval_s * 1e9), True
            for page in self.kinds[POLL]:
                # Staggered: page i polls at i/total of the interval, as pages opened over time.
                self.schedule_poll(page, start_ns + int(self.poll_interval_ns * page.index / total))
            return ("polling", len(self.kinds[POLL]))
        if name == "poll_stop":
            self.polling, self.polls = False, []
            self.stop_deadline = time.monotonic() + 10
            return None
        if name == "close":
            (kind,) = args
            pages = list(self.kinds[kind])
            for page in pages:
                self.drop(page)
            return ("closed", len(pages))
        raise ValueError(f"unknown command {name!r}")

    def results(self) -> dict[str, Any]:
        """What this process received since the last reset."""
        return {
            "rings": {key.decode(): value for key, value in self.rings.items()},
            "first_seen": {key.decode(): value for key, value in self.first_seen.items()},
            "frames": {key.decode(): value for key, value in self.frames.items()},
            "dropped": self.dropped,
            "poll_stats": dict(self.poll_stats),
            "poll_statuses": dict(self.poll_statuses),
            "poll_ms": self.poll_ms,
            "samples": self.samples,
            "open": {kind: len(pages) for kind, pages in self.kinds.items()},
        }

    def run(self) -> None:
        """The event loop: sockets, due polls, opens in progress, and commands."""
        control_fd = self.control.fileno()
        while True:
            while self.waiting and len(self.opening) < OPEN_IN_FLIGHT:
                self.connect(self.waiting.popleft())
            now = time.monotonic_ns()
            timeout = 1.0
            if self.polls:
                timeout = max(0.0, (self.polls[0][0] - now) / 1e9)
            if self.opening:
                timeout = min(timeout, 0.05)
            for fd, events in self.epoll.poll(timeout):
                if fd == control_fd:
                    try:
                        message = self.control.recv()
                    except EOFError:
                        return  # the main process is gone
                    if message[0] == "quit":
                        return
                    reply = self.command(message)
                    if reply is not None:
                        self.control.send(reply)
                    continue
                page = self.pages.get(fd)
                if page is None:
                    continue
                if page.state == "connecting":
                    self.connected(page)
                elif events & select.EPOLLIN or events & (select.EPOLLHUP | select.EPOLLERR):
                    self.readable(page)
            now = time.monotonic_ns()
            if self.polls:
                self.due_polls(now)
            if self.opening:
                for page in [p for p in self.opening if p.deadline < now]:
                    self.fail(page, "timed out")
            if self.open_op is not None and self.open_op["pending"] <= 0:
                op, self.open_op = self.open_op, None
                seconds = time.monotonic() - op["start"]
                self.control.send(("opened", op["ok"], dict(op["errors"]), seconds))
            if self.stop_deadline is not None and (
                time.monotonic() > self.stop_deadline
                or not any(p.state == "waiting" for p in self.kinds[POLL])
            ):
                self.stop_deadline = None
                self.control.send(("stopped",))


def fleet_main(control, port: int) -> None:
    """Entry point of a load-generator process; Ctrl-C is the main process's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    PageFleet(control, port).run()


class Fleet:
    """The load-generator processes, seen from the main process."""

    def __init__(self, processes: int, port: int):
        context = multiprocessing.get_context("fork")
        self.controls, self.processes = [], []
        for _ in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=fleet_main, args=(child, port), daemon=True)
            process.start()
            child.close()
            self.controls.append(parent)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        """The processes' ids (for CPU accounting)."""
        return [p.pid for p in self.processes]

    def ask(self, *message, timeout: float = 600.0) -> list:
        """Send one command to every process and return their replies."""
        for control in self.controls:
            control.send(message)
        return [self._reply(control, timeout) for control in self.controls]

    def _reply(self, control, timeout: float):
        if not control.poll(timeout):
            raise RuntimeError(f"a load-generator process did not answer within {timeout:.0f} s")
        return control.recv()

    def open(self, kind: str, clients: list[tuple[int, str]]) -> dict[str, Any]:
        """Open pages, spread over the processes; how many opened, why the others did not."""
        count = len(self.controls)
        for number, control in enumerate(self.controls):
            control.send(("open", kind, clients[number::count]))
        replies = [self._reply(control, 600) for control in self.controls]
        errors = Counter()
        for reply in replies:
            errors.update(reply[2])
        return {
            "ok": sum(r[1] for r in replies),
            "errors": dict(errors),
            "seconds": max(r[3] for r in replies),
        }

    def progress(self) -> tuple[int, int, int]:
        """call.ringing frames, call.ended frames and first sightings by polls, since reset."""
        replies = self.ask("progress", timeout=60)
        return tuple(sum(r[i] for r in replies) for i in range(3))

    def collect(self) -> dict[str, Any]:
        """Everything received since the last collect, merged."""
        merged = {
            "rings": defaultdict(list),
            "first_seen": defaultdict(list),
            "frames": Counter(),
            "dropped": 0,
            "poll_stats": Counter(),
            "poll_statuses": Counter(),
            "poll_ms": [],
            "samples": [],
        }
        for reply in self.ask("collect"):
            for name in ("rings", "first_seen"):
                for call_id, seen in reply[name].items():
                    merged[name][call_id].extend(seen)
            for name in ("frames", "poll_stats", "poll_statuses"):
                merged[name].update(reply[name])
            merged["dropped"] += reply["dropped"]
            merged["poll_ms"].extend(reply["poll_ms"])
            merged["samples"].extend(reply["samples"])
        return merged

    def stop(self) -> None:
        """Ask the processes to quit, then make sure they have."""
        for control in self.controls:
            with contextlib.suppress(OSError):
                control.send(("quit",))
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


# --- Webhooks -----------------------------------------------------------------------------------


def webhook_body(template: dict, call_id: str, when: datetime, started: datetime) -> bytes:
    """A fixture event for this call, stamped `when` (its call started at `started`)."""
    event = copy.deepcopy(template)
    data, payload = event["data"], event["data"]["payload"]
    data["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{call_id}/{data['event_type']}"))
    payload["call_control_id"] = call_id
    payload["call_leg_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{call_id}/leg"))
    payload["call_session_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{call_id}/session"))
    data["occurred_at"] = iso(when)
    payload["start_time"] = iso(started)
    if "end_time" in payload:
        payload["end_time"] = iso(when)
    return json.dumps(event).encode()


@dataclass
class Sent:
    """What the webhook sender did: when each call.initiated left, and what came back."""

    initiated_ns: dict[str, int] = field(default_factory=dict)
    started: dict[str, datetime] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    results: Counter = field(default_factory=Counter)
    response_ms: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    max_lag_ms: float = 0.0
    retries: int = 0


class WebhookSender:
    """Signs each webhook just before sending it, over a few keep-alive connections."""

    def __init__(self, port: int, seed: bytes, connections: int = 16):
        self.port, self.seed = port, seed
        self.host = f"127.0.0.1:{port}"
        self.initiated, self.hangup = load_templates()
        self.connections = connections
        # Made anew by each run(): an asyncio lock waited on belongs to that run's event loop.
        self.slots = asyncio.Semaphore(connections)
        # (reader, writer, idle since): gunicorn closes a connection idle for `keepalive` (5 s).
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def send(self, kind: str, call_id: str, sent: Sent) -> None:
        """One webhook; a call.initiated's send time is taken just before its bytes go out."""
        async with self.slots:
            now = datetime.now(UTC)
            if kind == "initiated":
                sent.started[call_id] = now
                body = webhook_body(self.initiated, call_id, now, now)
            else:
                body = webhook_body(self.hangup, call_id, now, sent.started[call_id])
            request = http_request(self.host, body, sign(self.seed, body, int(time.time())))
            start = None
            for attempt in (1, 2):
                reader = writer = None
                try:
                    reader, writer, reused = await self.connection()
                    if start is None:
                        start = time.monotonic_ns()
                        if kind == "initiated":
                            sent.initiated_ns[call_id] = start
                    writer.write(request)
                    async with asyncio.timeout(30):
                        await writer.drain()
                        status, answer, keep_alive = await read_response(reader)
                    break
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
                    await close(writer)
                    # A kept-alive connection the server closed just as we wrote: the request
                    # was not read. HTTP clients retry that once; a webhook is idempotent anyway.
                    if attempt == 1 and reused and not isinstance(error, TimeoutError):
                        sent.retries += 1
                        continue
                    sent.statuses[type(error).__name__] += 1
                    if len(sent.samples) < 10:
                        sent.samples.append(f"{kind} {call_id}: {type(error).__name__} {error}")
                    return
            sent.response_ms.append((time.monotonic_ns() - start) / 1e6)
            sent.statuses[status] += 1
            if status == 200:
                sent.results[json.loads(answer).get("result")] += 1
            elif len(sent.samples) < 10:
                sent.samples.append(f"{kind} {call_id}: {status} {answer[:200]!r}")
            if keep_alive:
                self.idle.append((reader, writer, time.monotonic()))
            else:
                await close(writer)

    async def connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """An idle connection fresh enough to reuse (True), or a new one (False)."""
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < KEEPALIVE_REUSE_SECONDS:
                return reader, writer, True
            await close(writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return reader, writer, False

    async def run(self, schedule: list[tuple[float, str, str]], sent: Sent) -> None:
        """Send (offset s, kind, call_id) at their offsets from now, not waiting for answers."""
        loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(self.connections)
        start, tasks = loop.time(), []
        for offset, kind, call_id in schedule:
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.max_lag_ms = max(sent.max_lag_ms, (loop.time() - start - offset) * 1000)
            tasks.append(asyncio.create_task(self.send(kind, call_id, sent)))
        await asyncio.gather(*tasks)
        for _, writer, _ in self.idle:
            await close(writer)
        self.idle = []


def call_schedule(
    call_ids: list[str], rate: float, ring_seconds: float | None
) -> list[tuple[float, str, str]]:
    """call.initiated at a steady rate, each call.hangup ring_seconds later (None: none)."""
    schedule = [(i / rate, "initiated", call_id) for i, call_id in enumerate(call_ids)]
    if ring_seconds is not None:
        schedule += [(i / rate + ring_seconds, "hangup", c) for i, c in enumerate(call_ids)]
    return sorted(schedule)


# --- Server-side measurements from /proc ----------------------------------------------------


def worker_pids(master: int) -> list[int]:
    """gunicorn's worker processes."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == master:
                pids.append(int(entry.name))
    return sorted(pids)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_kib(pid: int) -> dict[str, int]:
    """A process's resident (RSS), proportional (PSS) and private (USS) memory, KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0])
    private = fields["Private_Clean"] + fields["Private_Dirty"]
    return {"uss": private, "pss": fields["Pss"], "rss": fields["Rss"]}


def tcp_sockets(port: int) -> tuple[dict[int, str], set[int]]:
    """Inode -> state of the server's accepted connections, and every TCP socket's inode."""
    pages, every = {}, set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as table:
            next(table)
            for line in table:
                fields = line.split()
                inode = int(fields[9])
                every.add(inode)
                # The server's local port, and not the listener (0A): a page's connection.
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "0A":
                    pages[inode] = fields[3]
    return pages, every


def worker_sockets(pid: int, pages: dict[int, str], every: set[int]) -> tuple[int, int, int]:
    """A worker's page connections; those the page closed (CLOSE_WAIT); non-TCP sockets.

    A connection reset by its page leaves the TCP table but not the worker, which holds it
    until it next writes there: it shows up only as a socket that is in no TCP table.
    """
    held = closed = other = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{name}")
            if not link.startswith("socket:["):
                continue
            inode = int(link[8:-1])
            if inode in pages:
                held += 1
                closed += pages[inode] == "08"
            elif inode not in every:
                other += 1
    return held, closed, other


class ServerProbe:
    """gunicorn's workers seen through /proc: memory, and the page connections they hold."""

    def __init__(self, master: int, port: int):
        self.master, self.port = master, port
        self.baseline: dict[int, int] = {}

    def set_baseline(self) -> None:
        """Remember each idle worker's non-TCP sockets (unix, netlink), to tell orphans apart."""
        self.baseline = {pid: n for pid, n in self.state()["other_sockets"].items()}

    def state(self) -> dict[str, Any]:
        """Per worker: RSS, page connections held (reset ones included), closed by the page."""
        workers = worker_pids(self.master)
        pages, every = tcp_sockets(self.port)
        sockets = {pid: worker_sockets(pid, pages, every) for pid in workers}
        return {
            "rss_kib": {pid: rss_kib(pid) for pid in workers},
            "connections": {
                pid: held + max(0, other - self.baseline.get(pid, other))
                for pid, (held, _, other) in sockets.items()
            },
            "close_wait": {pid: closed for pid, (_, closed, _) in sockets.items()},
            "other_sockets": {pid: other for pid, (_, _, other) in sockets.items()},
        }

    def memory(self, streams: int, timeout: float = 60.0) -> dict[str, Any]:
        """The workers' memory (KiB, summed) once they hold `streams` page connections.

        Read after a short pause, so the opens' passing garbage is gone and only what the open
        streams hold remains.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = self.state()["connections"]
            if sum(held.values()) >= streams:
                break
            time.sleep(0.5)
        time.sleep(2)
        per_worker = {pid: memory_kib(pid) for pid in worker_pids(self.master)}
        total = {kind: sum(m[kind] for m in per_worker.values()) for kind in ("uss", "pss", "rss")}
        return {**total, "streams_per_worker": sorted(held.values())}

    def wait_released(self, timeout: float) -> float | None:
        """Seconds until the workers hold no page connection, or None if they still do."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not any(self.state()["connections"].values()):
                return round(time.monotonic() - start, 1)
            time.sleep(0.5)
        return None


class CpuWindows:
    """CPU samples of gunicorn, PostgreSQL, Redis and the load generator (all its processes)."""

    def __init__(self, master: int, helpers: list[int]):
        self.master, self.helpers = master, helpers

    def sample(self) -> dict[str, Any]:
        """One sample; the load-generator processes move from 'others' to their group."""
        sample = cpu_sample(self.master)
        for pid in self.helpers:
            if pid in sample["others"]:
                sample["groups"]["load_generator"][pid] = sample["others"].pop(pid)[1]
        sample["at"] = time.monotonic()
        return sample

    def split(self, before: dict, after: dict) -> dict[str, Any]:
        """CPU by group over one window, plus the workers' total in seconds."""
        wall = after["at"] - before["at"]
        split = cpu_split([(before, after)], wall, self.master)
        workers = after["groups"]["gunicorn"]
        ticks = sum(
            now - before["groups"]["gunicorn"].get(pid, 0)
            for pid, now in workers.items()
            if pid != self.master
        )
        split["workers_cpu_seconds"] = ticks / CLOCK_TICKS
        split["wall_seconds"] = round(wall, 2)
        return split


# --- Phases ---------------------------------------------------------------------------------------


def latency_figures(values_ns: list[int]) -> dict[str, Any]:
    """Percentiles (ms) of sorted latencies."""
    if not values_ns:
        return {}
    return {
        "count": len(values_ns),
        "p50": round(percentile(values_ns, 50) / 1e6, 2),
        "p90": round(percentile(values_ns, 90) / 1e6, 2),
        "p99": round(percentile(values_ns, 99) / 1e6, 2),
        "p99_9": round(percentile(values_ns, 99.9) / 1e6, 2),
        "max": round(values_ns[-1] / 1e6, 2),
        "mean": round(sum(values_ns) / len(values_ns) / 1e6, 2),
        "min": round(values_ns[0] / 1e6, 2),
    }


def quantile_curve(values_ns: list[int]) -> list[list[float]]:
    """(percent, ms) points of the distribution, enough to redraw its CDF."""
    points = [*range(1, 100), 99.5, 99.9, 99.99, 100]
    return [[p, round(percentile(values_ns, p) / 1e6, 3)] for p in points] if values_ns else []


def match_latencies(
    seen: dict[str, list[tuple[int, int]]], sent: dict[str, int], pages: int
) -> tuple[list[int], dict[str, int]]:
    """Latency of each (page, call) first sighting; missing, duplicate and unexpected counts."""
    latencies, duplicates, unexpected, pairs = [], 0, 0, 0
    for call_id, sightings in seen.items():
        start = sent.get(call_id)
        if start is None:
            unexpected += len(sightings)
            continue
        first: dict[int, int] = {}
        for page, at in sightings:
            if page in first:
                duplicates += 1
                first[page] = min(first[page], at)
            else:
                first[page] = at
        pairs += len(first)
        latencies.extend(at - start for at in first.values())
    latencies.sort()
    missing = len(sent) * pages - pairs
    return latencies, {"missing": missing, "duplicates": duplicates, "unexpected": unexpected}


def send_calls(sender: WebhookSender, schedule: list, sent: Sent) -> None:
    """Run a schedule of webhooks to completion."""
    asyncio.run(sender.run(schedule, sent))


def drain(fleet: Fleet, rings: int, ended: int, cap: float = 300.0) -> tuple[int, int]:
    """Wait until the expected frames arrived, or nothing new came for DRAIN_IDLE_SECONDS."""
    start = last_change = time.monotonic()
    last = None
    while time.monotonic() - start < cap:
        progress = fleet.progress()
        if progress[0] >= rings and progress[1] >= ended:
            return progress[:2]
        if progress != last:
            last, last_change = progress, time.monotonic()
        elif time.monotonic() - last_change > DRAIN_IDLE_SECONDS:
            break
        time.sleep(0.05)
    return last[:2] if last else (0, 0)


def sender_summary(sent: Sent) -> dict[str, Any]:
    """Webhook answers during a phase."""
    times = sorted(sent.response_ms)
    return {
        "statuses": {str(k): v for k, v in sent.statuses.items()},
        "results": dict(sent.results),
        "response_ms": {
            "p50": round(percentile(times, 50), 2) if times else None,
            "p99": round(percentile(times, 99), 2) if times else None,
            "max": round(times[-1], 2) if times else None,
        },
        "max_schedule_lag_ms": round(sent.max_lag_ms, 1),
        "retried_on_a_closed_keep_alive_connection": sent.retries,
        "samples": sent.samples,
    }


def problems_of(sent: Sent, received: dict[str, Any]) -> list[str]:
    """Anything that went wrong in a phase, in words."""
    found = []
    bad = {k: v for k, v in sent.statuses.items() if k != 200}
    if bad:
        found.append(f"webhook answers other than 200: {bad}; e.g. {sent.samples[:3]}")
    if received["dropped"]:
        found.append(f"{received['dropped']} open streams closed by the server")
    if received["samples"]:
        found.append(f"load generator saw: {received['samples'][:5]}")
    return found


@dataclass
class Bench:
    """Everything a phase needs: the processes, the sender, and where results go."""

    args: argparse.Namespace
    run_id: str
    fleet: Fleet
    sender: WebhookSender
    cpu: CpuWindows
    probe: ServerProbe
    tokens: list[str]
    shared_session_tokens: list[str]
    problems: list[str] = field(default_factory=list)
    curves: dict[str, list[int]] = field(default_factory=dict)

    def call_ids(self, phase: str, count: int) -> list[str]:
        """Unique call_control_ids for a phase."""
        return [f"v3:ring-{self.run_id}-{phase}-{i}" for i in range(count)]

    def open_pages(
        self, kind: str, start: int, stop: int, shared_sessions: bool = False
    ) -> dict[str, Any]:
        """Open pages start..stop-1 (each its own bearer token, of a session of its own unless
        `shared_sessions`: then of its agent's one session)."""
        tokens = self.shared_session_tokens if shared_sessions else self.tokens
        clients = [(i, tokens[i]) for i in range(start, stop)]
        before = self.cpu.sample()
        opened = self.fleet.open(kind, clients)
        split = self.cpu.split(before, self.cpu.sample())
        opened["per_second"] = round(opened["ok"] / max(opened["seconds"], 1e-9), 1)
        opened["worker_cpu_ms_per_open"] = round(
            1000 * split["workers_cpu_seconds"] / max(opened["ok"], 1), 2
        )
        if opened["errors"]:
            self.problems.append(f"{kind} opens failed: {opened['errors']}")
        return opened

    def warmup(self) -> dict[str, Any]:
        """Calls with nobody listening: warms the workers, and prices a webhook on its own."""
        # First, untimed: a fresh worker's first requests import and connect lazily.
        first = self.call_ids("first", 2 * self.args.workers)
        send_calls(self.sender, call_schedule(first, self.args.rate, 0.1), Sent())
        calls = self.call_ids("warmup", self.args.warmup_calls)
        sent = Sent()
        before = self.cpu.sample()
        send_calls(self.sender, call_schedule(calls, self.args.rate, self.args.ring_seconds), sent)
        split = self.cpu.split(before, self.cpu.sample())
        bad = {k: v for k, v in sent.statuses.items() if k != 200}
        if bad:
            self.problems.append(f"warm-up webhook answers other than 200: {bad}")
        return {
            "calls": len(calls),
            "webhooks": sender_summary(sent),
            "worker_cpu_ms_per_call": round(1000 * split["workers_cpu_seconds"] / len(calls), 2),
            "cpu": split,
        }

    def push(self, baseline_ms_per_call: float) -> dict[str, Any]:
        """N streams; calls at the rate, hung up ring_seconds later; latency per (page, call)."""
        args = self.args
        opened = self.open_pages(STREAM, 0, args.clients)
        pages = opened["ok"]
        state = self.probe.state()
        self.fleet.collect()  # the opens' snapshots are not part of the measurement
        calls = self.call_ids("push", args.calls)
        sent = Sent()
        before = self.cpu.sample()
        send_calls(self.sender, call_schedule(calls, args.rate, args.ring_seconds), sent)
        drain(self.fleet, len(calls) * pages, len(calls) * pages)
        split = self.cpu.split(before, self.cpu.sample())
        received = self.fleet.collect()
        latencies, counts = match_latencies(received["rings"], sent.initiated_ns, pages)
        self.curves["push"] = latencies
        self.problems += [f"push: {p}" for p in problems_of(sent, received)]
        deliveries = len(calls) * pages
        frames = sum(received["frames"].values())
        worker_s = split["workers_cpu_seconds"]
        webhook_s = baseline_ms_per_call * len(calls) / 1000
        return {
            "streams": pages,
            "open": opened,
            "streams_per_worker": sorted(state["connections"].values()),
            "calls": len(calls),
            "latency_ms": latency_figures(latencies),
            "delivery": {**counts, "expected": deliveries, "frames": dict(received["frames"])},
            "dropped_streams": received["dropped"],
            "webhooks": sender_summary(sent),
            "cost": {
                "worker_cpu_seconds": round(worker_s, 2),
                "us_per_ringing_delivered": round(1e6 * worker_s / max(deliveries, 1), 1),
                "us_per_frame_delivered": round(1e6 * worker_s / max(frames, 1), 1),
                "us_per_frame_net_of_webhooks": round(
                    1e6 * (worker_s - webhook_s) / max(frames, 1), 1
                ),
                "webhook_cpu_seconds_estimate": round(webhook_s, 2),
                "target_us": TARGET_US_PER_EVENT,
                "load_generator_cpu_seconds": split["load_generator"]["cpu_seconds"],
                "load_generator_us_per_frame": round(
                    1e6 * split["load_generator"]["cpu_seconds"] / max(frames, 1), 1
                ),
            },
            "cpu": split,
        }

    def profile(self, seconds: int) -> dict[str, Any]:
        """py-spy on the worker holding the most streams, while calls keep coming."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            return {"skipped": "py-spy is not installed (pip install py-spy)"}
        held = self.probe.state()["connections"]
        pid = max(held, key=held.get)
        calls = self.call_ids("profile", int(seconds * self.args.rate) + 1)
        with tempfile.NamedTemporaryFile(suffix=".txt", prefix="ring-pyspy-") as out:
            command = [spy, "record", "-p", str(pid), "-d", str(seconds), "-f", "raw"]
            process = subprocess.Popen(
                [*command, "-o", out.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            try:
                time.sleep(1)  # py-spy attaches
                sent = Sent()
                send_calls(self.sender, call_schedule(calls, self.args.rate, 0.5), sent)
                output = process.communicate(timeout=seconds + 60)[0].decode(errors="replace")
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            time.sleep(2)  # the last frames arrive; they are not part of any figure
            self.fleet.collect()
            text = Path(out.name).read_text(errors="replace")
        if not text.strip():
            return {"skipped": f"py-spy recorded nothing: {output.strip()[-300:]}"}
        return {"worker_pid": pid, "streams": held[pid], "seconds": seconds, **top_frames(text)}

    def release(self, what: str) -> float | None:
        """Wait for the workers to let go of the connections pages closed; how long it took."""
        waited = self.probe.wait_released(timeout=45)
        if waited is None:
            state = self.probe.state()
            self.problems.append(
                f"{what}: 45 s after the pages closed, workers still held "
                f"{sum(state['connections'].values())} connections "
                f"({sum(state['close_wait'].values())} in CLOSE_WAIT)"
            )
        return waited

    def polling(self) -> dict[str, Any]:
        """N pages polling the pending list; latency to each page's first listing of a call."""
        args = self.args
        opened = self.open_pages(POLL, 0, args.clients)
        pages = opened["ok"]
        interval = args.poll_interval
        self.fleet.ask("poll_start", interval, time.monotonic_ns(), args.clients)
        time.sleep(interval)  # every page is on its schedule before anything is measured
        self.fleet.collect()
        # What polling costs when nothing rings: the floor of the seed's design.
        before = self.cpu.sample()
        time.sleep(2 * interval)
        idle = self.cpu.split(before, self.cpu.sample())
        idle_polls = self.fleet.collect()["poll_stats"].get("requests", 0)
        calls = self.call_ids("poll", args.calls)
        sent = Sent()
        before = self.cpu.sample()
        send_calls(self.sender, call_schedule(calls, args.rate, args.ring_seconds), sent)
        time.sleep(interval)
        split = self.cpu.split(before, self.cpu.sample())
        self.fleet.ask("poll_stop", timeout=60)
        received = self.fleet.collect()
        self.fleet.ask("close", POLL)
        latencies, counts = match_latencies(received["first_seen"], sent.initiated_ns, pages)
        self.curves["polling"] = latencies
        self.problems += [f"polling: {p}" for p in problems_of(sent, received)]
        poll_ms = sorted(received["poll_ms"])
        bad = {k: v for k, v in received["poll_statuses"].items() if k != 200}
        if bad:
            self.problems.append(f"polling: poll answers other than 200: {bad}")
        worker_s = split["workers_cpu_seconds"]
        polls = received["poll_stats"].get("requests", 0)
        return {
            "pages": pages,
            "open": opened,
            "interval_seconds": interval,
            "calls": len(calls),
            "latency_ms": latency_figures(latencies),
            "delivery": {**counts, "expected": len(calls) * pages},
            "polls": {
                **received["poll_stats"],
                "statuses": {str(k): v for k, v in received["poll_statuses"].items()},
                "response_ms": latency_figures([int(ms * 1e6) for ms in poll_ms]),
            },
            "webhooks": sender_summary(sent),
            "cost": {
                "worker_cpu_seconds": round(worker_s, 2),
                "worker_cpu_seconds_per_second": round(worker_s / split["wall_seconds"], 2),
                "us_per_call_per_page": round(1e6 * worker_s / max(len(calls) * pages, 1), 1),
                "worker_cpu_ms_per_poll": round(1000 * worker_s / max(polls, 1), 3),
                "worker_cpu_ms_per_poll_nothing_ringing": round(
                    1000 * idle["workers_cpu_seconds"] / max(idle_polls, 1), 3
                ),
                "worker_cpu_seconds_per_second_nothing_ringing": round(
                    idle["workers_cpu_seconds"] / idle["wall_seconds"], 2
                ),
            },
            "cpu": split,
        }

    def memory(self) -> dict[str, Any]:
        """Worker memory per open stream, at each of --memory-streams.

        (memory with N streams open - memory with the baseline's few) / (N - the few), taken
        before any other phase has opened streams, so that memory freed by earlier streams and
        kept by the allocator does not hide what new ones cost. USS (the workers' private pages)
        is the figure; PSS and RSS are alongside. Socket buffers are kernel memory, in none.

        The pages share their agent's session, as tabs of one browser do: with a session each,
        10,000 streams ask PostgreSQL about 5,000 sessions a second (the stream guard's check),
        which on a small machine queues checks and fails opens, and the queue's memory would be
        counted as the streams'. A session of its own costs a page one cache entry more.
        """
        warm = MEMORY_WARM_STREAMS_PER_WORKER * self.args.workers
        opened = baseline = self.open_pages(STREAM, 0, warm, shared_sessions=True)["ok"]
        base = self.probe.memory(opened)
        steps, start = [], warm
        for target in self.args.memory_steps:
            opening = self.open_pages(STREAM, start, target, shared_sessions=True)
            start, opened = target, opened + opening["ok"]
            memory = self.probe.memory(opened)
            added = max(opened - baseline, 1)
            per_stream = {
                kind: round((memory[kind] - base[kind]) / added, 2)
                for kind in ("uss", "pss", "rss")
            }
            steps.append(
                {
                    "streams": opened,
                    "open": opening,
                    "workers_kib": memory,
                    "kib_per_stream": per_stream,
                }
            )
            print(
                f"  {opened:>6} streams: {per_stream['uss']} KiB per stream (USS; PSS "
                f"{per_stream['pss']}, RSS {per_stream['rss']}), per worker "
                f"{memory['streams_per_worker']}"
            )
            if opened < target:
                self.problems.append(f"memory: {opened} of {target} streams opened")
                break
        self.fleet.ask("close", STREAM)
        self.fleet.collect()
        return {"baseline_streams": baseline, "baseline_workers_kib": base, "steps": steps}

    def capacity(self) -> dict[str, Any]:
        """Open more streams step by step; ring latency and memory at each."""
        args = self.args
        base = self.probe.state()
        base_rss = sum(base["rss_kib"].values())
        steps, opened_total, limit = [], 0, None
        for target in args.steps:
            if target > len(self.tokens):
                break
            opened = self.open_pages(STREAM, opened_total, target)
            opened_total += opened["ok"]
            if opened_total < target:
                limit = {
                    "wanted": target,
                    "reached": opened_total,
                    "errors": opened["errors"],
                    "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
                }
            state = self.probe.state()
            rss = sum(state["rss_kib"].values())
            self.fleet.collect()
            step = self.capacity_step(opened_total)
            step.update(
                streams=opened_total,
                open=opened,
                workers_rss_mib=round(rss / 1024, 1),
                rss_kib_per_stream=round((rss - base_rss) / max(opened_total, 1), 1),
                streams_per_worker=sorted(state["connections"].values()),
            )
            steps.append(step)
            p99 = step["latency_ms"].get("p99")
            print(
                f"  {opened_total:>6} streams: p50 {step['latency_ms'].get('p50')} ms  "
                f"p99 {p99} ms  missing {step['delivery']['missing']}  "
                f"{step['cost']['us_per_delivery']} us/delivery  "
                f"rss {step['rss_kib_per_stream']} KiB/stream"
            )
            if limit is not None:
                break
        under = [s["streams"] for s in steps if s["latency_ms"].get("p99", 1e9) < 100]
        slope = None
        if len(steps) >= 2:
            first, last = steps[0], steps[-1]
            slope = round(
                1024
                * (last["workers_rss_mib"] - first["workers_rss_mib"])
                / max(last["streams"] - first["streams"], 1),
                1,
            )
        self.fleet.ask("close", STREAM)
        return {
            "calls_per_step": args.capacity_calls,
            "rate": args.capacity_rate,
            "baseline_workers_rss_mib": round(base_rss / 1024, 1),
            "steps": steps,
            "largest_with_p99_under_100ms": max(under) if under else None,
            "largest_reached": opened_total,
            "limit": limit,
            "rss_kib_per_stream_between_first_and_last_step": slope,
        }

    def capacity_step(self, pages: int) -> dict[str, Any]:
        """Calls to every open stream at the capacity rate; hangups after, unmeasured."""
        calls = self.call_ids(f"cap{pages}", self.args.capacity_calls)
        sent = Sent()
        before = self.cpu.sample()
        send_calls(self.sender, call_schedule(calls, self.args.capacity_rate, None), sent)
        drain(self.fleet, len(calls) * pages, 0)
        split = self.cpu.split(before, self.cpu.sample())
        received = self.fleet.collect()
        latencies, counts = match_latencies(received["rings"], sent.initiated_ns, pages)
        self.curves[f"{pages} streams"] = latencies
        self.problems += [f"capacity {pages}: {p}" for p in problems_of(sent, received)]
        # The callers give up: their call.ended frames go out before the next step opens more.
        hangups = Sent(started=sent.started)
        schedule = [(i / (2 * self.args.capacity_rate), "hangup", c) for i, c in enumerate(calls)]
        send_calls(self.sender, schedule, hangups)
        drain(self.fleet, 0, len(calls) * pages)
        self.fleet.collect()
        worker_s = split["workers_cpu_seconds"]
        return {
            "calls": len(calls),
            "latency_ms": latency_figures(latencies),
            "delivery": {**counts, "expected": len(calls) * pages},
            "dropped_streams": received["dropped"],
            "webhooks": sender_summary(sent),
            "cost": {
                "worker_cpu_seconds": round(worker_s, 2),
                "us_per_delivery": round(1e6 * worker_s / max(len(calls) * pages, 1), 1),
                "load_generator_cpu_seconds": split["load_generator"]["cpu_seconds"],
            },
            "cpu": split,
        }


def top_frames(raw: str, limit: int = 15) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks as the top functions by own and by inclusive samples."""
    own, inclusive, stacks, total = Counter(), Counter(), Counter(), 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [short_frame(f) for f in stack.split(";")]
        total += int(count)
        own[short_frame(stack.split(";")[-1], line=True)] += int(count)
        stacks[" <- ".join(reversed(frames[-6:]))] += int(count)
        for name in set(frames):
            inclusive[name] += int(count)

    def table(counter: Counter) -> list[list]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(limit)]

    return {
        "samples": total,
        "top_own_percent": table(own),
        "top_inclusive_percent": table(inclusive),
        "top_stacks_percent": table(stacks)[:8],
    }


def short_frame(frame: str, line: bool = False) -> str:
    """'func (path/to/file.py:12)' as 'func (file.py)' (':12' kept if asked), paths shortened."""
    match = re.match(r"^(.*) \((.*?)(:\d+)?\)$", frame)
    if not match:
        return frame
    path = match.group(2)
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match.group(1)} ({path}{(match.group(3) or '') if line else ''})"


# --- Setup ----------------------------------------------------------------------------------------


def floor_reader(address: tuple[str, int], pages: int, frames: int, control) -> None:
    """send_floor's pages: asleep in epoll until a frame comes, as the bench's pages are."""
    socks = [socket.create_connection(address) for _ in range(pages)]
    poller, by_fd = select.epoll(), {}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    control.send("ready")
    received, start = 0, time.process_time()
    while received < frames * FLOOR_FRAME_BYTES:
        for fd, _ in poller.poll(5.0):
            received += len(by_fd[fd].recv(65536))
    control.send((time.process_time() - start) / frames)
    for sock in socks:
        sock.close()


def send_floor(pages: int = 1000, rounds: int = 100) -> dict[str, Any]:
    """This machine's floor for pushing one event to `pages` pages by one send() each.

    Plain sockets, no gevent or gunicorn: the sender's and the reading process's CPU per
    frame of a typical call.ringing size. Loopback makes the sender pay for the receiving side
    of TCP, and waking the sleeping reader, too.
    """
    context = multiprocessing.get_context("fork")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(pages)
        parent, child = context.Pipe()
        reader = context.Process(
            target=floor_reader, args=(listener.getsockname(), pages, pages * rounds, child)
        )
        reader.start()
        conns: list[socket.socket] = []
        try:
            conns += [listener.accept()[0] for _ in range(pages)]
            if not parent.poll(30):
                raise RuntimeError("the calibration reader did not start")
            parent.recv()
            frame = b"x" * FLOOR_FRAME_BYTES
            start = time.process_time()
            for _ in range(rounds):
                for conn in conns:
                    conn.send(frame)
                time.sleep(0.02)  # the reader catches up and sleeps again, as pages do
            sender = (time.process_time() - start) / (pages * rounds)
            reader_per_frame = parent.recv() if parent.poll(30) else None
        finally:
            reader.join(10)
            if reader.is_alive():
                reader.kill()
                reader.join()
            for conn in conns:
                conn.close()
    return {
        "pages": pages,
        "frame_bytes": FLOOR_FRAME_BYTES,
        "sender_us_per_send": round(1e6 * sender, 1),
        "reader_us_per_frame": round(1e6 * reader_per_frame, 1) if reader_per_frame else None,
    }


def raise_fd_limit() -> tuple[int, int]:
    """As many open files as we may have (children, gunicorn included, inherit the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, soft), max(wanted, hard)))
            break
        except (ValueError, OSError):
            continue  # raising the hard limit needs CAP_SYS_RESOURCE
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def make_tokens(env: dict[str, str], count: int) -> tuple[list[str], list[str]]:
    """Agents in the throwaway database (AGENTS, or enough for STREAMS_PER_AGENT pages each),
    and two bearer tokens per page, agents taken round-robin: one of a session of its own (a
    page per agent, each checked against PostgreSQL), and one of its agent's single session
    (many tabs of one browser: the worker's session cache answers their checks)."""
    from telnyx_flask import create_app
    from telnyx_flask.auth import issue_token
    from telnyx_flask.users import Agent, create_user

    app = create_app(env)
    try:
        with app.app_context():
            agents = []
            for i in range(max(AGENTS, math.ceil(count / STREAMS_PER_AGENT))):
                email, name = f"agent{i}@ring-bench.example", f"Agent {i}"
                agent_id = create_user(email, name, secrets.token_urlsafe(16), None)
                agents.append(Agent(agent_id, email, name, None))
            own = [issue_token(agents[i % len(agents)]) for i in range(count)]
            shared = [issue_token(agent) for agent in agents]
            return own, [shared[i % len(agents)] for i in range(count)]
    finally:
        app.extensions["database"].close()
        app.extensions["live"].client.close()


def pages_needed(args: argparse.Namespace) -> int:
    """The most pages any phase opens at once."""
    return max([args.clients, *args.steps, *args.memory_steps])


def bench_env(args, database_url: str, prefix: str, public_key: str, port: int) -> dict:
    """webhook_throughput's production-like environment, set up for many streams."""
    env = gunicorn_env(args, database_url, prefix, public_key, port)
    env.update(
        SECRET_KEY=secrets.token_urlsafe(32),
        # Nobody answers: no sweep must reject the calls while they ring.
        BACKGROUND_TASKS="false",
        RING_TIMEOUT_SECONDS="600",
        RECORD_CALLS="false",
        # gevent's per-worker connection cap: streams all land on some worker, maybe unevenly.
        WORKER_CONNECTIONS=str(max(20_000, 2 * pages_needed(args))),
        # Many pages share an agent (make_tokens): let each hold its share of them.
        SSE_MAX_STREAMS_PER_AGENT=str(2 * STREAMS_PER_AGENT),
    )
    return env


def run(args: argparse.Namespace, run_id: str, client: redis.Redis, log_file) -> dict[str, Any]:
    """Set everything up, run the phases, and tear it all down."""
    fd_limit = raise_fd_limit()
    database_name = f"telnyx_flask_ring_{run_id}"
    prefix = f"telnyx-flask-ring:{run_id}:"
    signing_key = SigningKey.generate()
    public_key = base64.b64encode(bytes(signing_key.verify_key)).decode()
    port = free_port()
    print("calibrating: CPU of one loopback send() per page, without gunicorn")
    results: dict[str, Any] = {"send_floor": send_floor()}
    # Forked first, before this process holds any connection or thread.
    fleet = Fleet(args.processes, port)
    try:
        with throwaway_database(args.database_admin_url, database_name) as database_url:
            env = bench_env(args, database_url, prefix, public_key, port)
            tokens, shared_session_tokens = make_tokens(env, pages_needed(args))
            with running_gunicorn(env, log_file) as gunicorn:
                wait_ready(gunicorn, port)
                print(f"gunicorn ready on 127.0.0.1:{port}; database {database_name}")
                master = gunicorn.pid
                bench = Bench(
                    args,
                    run_id,
                    fleet,
                    WebhookSender(port, bytes(signing_key)),
                    CpuWindows(master, fleet.pids),
                    ServerProbe(master, port),
                    tokens,
                    shared_session_tokens,
                )
                print(f"warm-up: {args.warmup_calls} calls, nobody listening")
                results["warmup"] = bench.warmup()
                bench.probe.set_baseline()
                if args.memory_steps:
                    print(f"memory: worker memory per stream at {args.memory_steps} open streams")
                    results["memory"] = bench.memory()
                    results["memory"]["closed_streams_released_after_s"] = bench.release("memory")
                per_call = results["warmup"]["worker_cpu_ms_per_call"]
                print(f"push: {args.clients} streams, {args.calls} calls at {args.rate}/s")
                results["push"] = bench.push(per_call)
                if args.profile_seconds:
                    print(f"profile: py-spy {args.profile_seconds} s on the busiest worker")
                    results["profile"] = bench.profile(args.profile_seconds)
                fleet.ask("close", STREAM)
                results["push"]["closed_streams_released_after_s"] = bench.release("push")
                print(f"polling: {args.clients} pages every {args.poll_interval} s")
                results["polling"] = bench.polling()
                results["polling"]["closed_connections_released_after_s"] = bench.release("polling")
                if args.steps:
                    print(f"capacity: steps {args.steps}, {args.capacity_calls} calls each")
                    results["capacity"] = bench.capacity()
                    results["capacity"]["closed_streams_released_after_s"] = bench.release(
                        "capacity"
                    )
                ringing = client.zcard(RedisKeys(prefix).ringing)
                if ringing:
                    bench.problems.append(f"{ringing} calls still ringing in Redis at the end")
                # A deploy stops gunicorn with pages connected: how long does that take?
                open_at_stop = bench.open_pages(STREAM, 0, min(100, args.clients))["ok"]
                stop_start = time.monotonic()
                exit_status = stop_gunicorn(gunicorn)
                results["shutdown"] = {
                    "streams_open": open_at_stop,
                    "seconds": round(time.monotonic() - stop_start, 1),
                    "exit_status": exit_status,
                    "graceful_timeout_seconds": 20,
                }
                fleet.ask("close", STREAM)
            results["webhook_events_stored"] = query_one(
                database_url, "SELECT count(*) FROM webhook_events"
            )
    finally:
        fleet.stop()
        removed = delete_redis_keys(client, prefix)
        print(f"cleaned up: dropped database {database_name}, deleted {removed} redis keys")

    log_file.flush()
    lines, notable = notable_log_lines(Path(log_file.name))
    push, polling = results["push"]["latency_ms"], results["polling"]["latency_ms"]
    ratio = {}
    if push and polling:
        ratio = {q: round(polling[q] / max(push[q], 1e-3), 1) for q in ("p50", "p99")}
    return {
        "benchmark": "ring_latency",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": NPROC,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgresql": query_one(args.database_admin_url, "SHOW server_version"),
            "redis": client.info("server")["redis_version"],
            "fd_limit": fd_limit,
            "ephemeral_ports": Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split(),
        },
        "parameters": {
            "clients": args.clients,
            "calls": args.calls,
            "rate": args.rate,
            "ring_seconds": args.ring_seconds,
            "poll_interval": args.poll_interval,
            "workers": args.workers,
            "worker_class": "gevent",
            "capacity_steps": args.steps,
            "capacity_calls": args.capacity_calls,
            "capacity_rate": args.capacity_rate,
            "memory_streams": args.memory_steps,
            "load_generator_processes": args.processes,
            "quick": args.quick,
            "sse_heartbeat_seconds": 15,
        },
        "summary": summary(results),
        **results,
        "ratio_polling_over_push": ratio,
        "problems": bench.problems,
        "gunicorn_log": {"lines": lines, "notable": notable},
        "curves": {name: quantile_curve(values) for name, values in bench.curves.items()},
        "output": str(args.output),
        "_raw_curves": bench.curves,
    }


# --- Report ---------------------------------------------------------------------------------------


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures: ring latency and worker CPU per delivery in the push phase, and
    worker memory (USS) per open stream at each memory step."""
    push = results["push"]
    memory = results.get("memory", {}).get("steps", [])
    return {
        "push_streams": push["streams"],
        "ring_latency_p50_ms": push["latency_ms"].get("p50"),
        "ring_latency_p99_ms": push["latency_ms"].get("p99"),
        "worker_cpu_us_per_ringing_delivered": push["cost"]["us_per_ringing_delivered"],
        "worker_cpu_us_per_frame_delivered": push["cost"]["us_per_frame_delivered"],
        "memory_kib_per_stream": {str(s["streams"]): s["kib_per_stream"]["uss"] for s in memory},
    }


def plot(report: dict[str, Any], path: Path) -> str:
    """CDFs of ring latency (push, polling, capacity steps) and p99 by open streams; or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped: matplotlib is not installed (pip install matplotlib)"
    curves = report["_raw_curves"]
    capacity = report.get("capacity", {}).get("steps", [])
    columns = 2 if capacity else 1
    figure, axes = plt.subplots(1, columns, figsize=(7 * columns, 5), squeeze=False)
    left = axes[0][0]
    for name, values in curves.items():
        if not values:
            continue
        ms = [v / 1e6 for v in values]
        fraction = [(i + 1) / len(ms) for i in range(len(ms))]
        # Thin the points: a CDF of 200,000 points draws no better than one of 2,000.
        step = max(1, len(ms) // 2000)
        style = {"push": "C0", "polling": "C3"}.get(name)
        params = report["parameters"]
        if name == "push":
            label = f"push, {report['push']['streams']} streams, {params['rate']:g} calls/s"
        elif name == "polling":
            label = f"polling every {params['poll_interval']:g} s, {params['rate']:g} calls/s"
        else:
            label = f"{name}, {params['capacity_rate']:g} calls/s"
        left.plot(
            [*ms[::step], ms[-1]],
            [*fraction[::step], 1.0],
            label=label,
            color=style,
            linewidth=2.2 if style else 1.0,
            alpha=1.0 if style else 0.7,
        )
    left.set_xscale("log")
    left.set_xlabel("ring latency, ms (webhook sent -> page has call.ringing)")
    left.set_ylabel("fraction of (page, call) pairs")
    left.axvline(100, color="grey", linestyle=":", linewidth=1)
    left.grid(True, which="both", alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    left.set_title("Ring latency: push vs polling")
    if capacity:
        right = axes[0][1]
        streams = [s["streams"] for s in capacity]
        for q, color in (("p50", "C0"), ("p99", "C1"), ("max", "C2")):
            right.plot(
                streams, [s["latency_ms"].get(q) for s in capacity], "o-", label=q, color=color
            )
        right.axhline(100, color="grey", linestyle=":", linewidth=1, label="100 ms")
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel("open streams")
        right.set_ylabel("ring latency, ms")
        right.grid(True, which="both", alpha=0.3)
        right.legend(fontsize=8)
        right.set_title(f"Capacity: {report['parameters']['capacity_rate']:g} calls/s, no hangups")
    figure.suptitle(
        f"telnyx-flask ring latency, {report['parameters']['workers']} gevent workers, "
        f"{report['machine']['nproc']} cores",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"written to {path}"


def cpu_line(name: str, split: dict[str, Any]) -> str:
    """One phase's CPU split on one line."""
    parts = [
        f"{group} {split[group]['cpu_seconds']:.1f}s/{split[group]['percent_of_cores']:.0f}%"
        for group in (*GROUPS, "other")
    ]
    return f"    {name:<10} ({split['wall_seconds']:.0f} s) " + "  ".join(parts)


def webhook_line(webhooks: dict[str, Any]) -> str:
    """How the webhooks of a phase were answered."""
    times = webhooks["response_ms"]
    return (
        f"webhooks answered p50 {times['p50']} ms p99 {times['p99']} ms, statuses "
        f"{webhooks['statuses']}, retried {webhooks['retried_on_a_closed_keep_alive_connection']}"
    )


def print_report(report: dict[str, Any]) -> None:
    """The human-readable summary."""
    p, push, polling = report["parameters"], report["push"], report["polling"]
    print()
    head = report["summary"]
    memory = ", ".join(f"{kib} KiB at {n}" for n, kib in head["memory_kib_per_stream"].items())
    print(
        f"summary: {head['push_streams']} streams: ring latency p50 {head['ring_latency_p50_ms']} "
        f"ms p99 {head['ring_latency_p99_ms']} ms; workers "
        f"{head['worker_cpu_us_per_ringing_delivered']} us CPU per call.ringing delivered "
        f"({head['worker_cpu_us_per_frame_delivered']} us per frame, from /proc); memory per "
        f"open stream (USS) {memory or 'not measured'}"
    )
    print(
        f"ring latency: {p['workers']} gevent workers, {report['machine']['nproc']} cores, "
        f"{p['calls']} calls at {p['rate']:g}/s, callers hang up after {p['ring_seconds']:g} s"
    )
    lat, d = push["latency_ms"], push["delivery"]
    print(
        f"  push     {push['streams']} streams (opened in {push['open']['seconds']:.1f} s, "
        f"per worker {push['streams_per_worker']})"
    )
    if lat:
        print(
            f"           p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms"
            f"  (p90 {lat['p90']:.1f}, mean {lat['mean']:.1f})"
        )
    print(
        f"           missing {d['missing']} of {d['expected']}  duplicates {d['duplicates']}  "
        f"dropped streams {push['dropped_streams']}  frames {d['frames']}"
    )
    print(f"           {webhook_line(push['webhooks'])}")
    lat, d = polling["latency_ms"], polling["delivery"]
    print(f"  polling  {polling['pages']} pages every {polling['interval_seconds']:g} s")
    if lat:
        print(
            f"           p50 {lat['p50']:.1f} ms  p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms"
            f"  (p90 {lat['p90']:.1f}, mean {lat['mean']:.1f})"
        )
    polls = polling["polls"]
    print(
        f"           missing {d['missing']} of {d['expected']}  polls {polls.get('requests', 0)}  "
        f"poll answer p50 {polls['response_ms'].get('p50')} ms p99 "
        f"{polls['response_ms'].get('p99')} ms  statuses {polls['statuses']}"
    )
    print(f"           {webhook_line(polling['webhooks'])}")
    ratio = report["ratio_polling_over_push"]
    if ratio:
        print(f"  polling / push   p50 x{ratio['p50']}   p99 x{ratio['p99']}")
    cost = push["cost"]
    print(
        f"  cost     workers {cost['worker_cpu_seconds']:.2f} s CPU in the push phase = "
        f"{cost['us_per_ringing_delivered']:.1f} us per call.ringing delivered "
        f"(target < {cost['target_us']:.0f}); {cost['us_per_frame_delivered']:.1f} us per frame "
        f"(ringing + ended), {cost['us_per_frame_net_of_webhooks']:.1f} net of the webhooks"
    )
    print(
        f"           load generator {cost['load_generator_cpu_seconds']:.2f} s CPU "
        f"({cost['load_generator_us_per_frame']:.1f} us per frame received); polling: workers "
        f"{polling['cost']['worker_cpu_seconds_per_second']:.2f} CPU-s/s, "
        f"{polling['cost']['worker_cpu_ms_per_poll']:.2f} ms per poll "
        f"({polling['cost']['worker_cpu_ms_per_poll_nothing_ringing']:.2f} ms with nothing "
        f"ringing)"
    )
    floor = report["send_floor"]
    print(
        f"           machine floor: one loopback send() of {floor['frame_bytes']} B to each of "
        f"{floor['pages']} sleeping readers costs the sender {floor['sender_us_per_send']} us, "
        f"the reader {floor['reader_us_per_frame']} us"
    )
    if "memory" in report:
        mem = report["memory"]
        base = mem["baseline_workers_kib"]
        print(
            f"  memory   workers' USS {base['uss'] / 1024:.1f} MiB with "
            f"{mem['baseline_streams']} streams open; per stream opened after those:"
        )
        for step in mem["steps"]:
            per, kib = step["kib_per_stream"], step["workers_kib"]
            print(
                f"    {step['streams']:>6} streams  USS {per['uss']} KiB  PSS {per['pss']} KiB  "
                f"RSS {per['rss']} KiB per stream (USS {kib['uss'] / 1024:.1f} MiB, per worker "
                f"{kib['streams_per_worker']}, opened {step['open']['per_second']}/s)"
            )
    if "capacity" in report:
        cap = report["capacity"]
        print(f"  capacity ({cap['calls_per_step']} calls per step at {cap['rate']:g}/s):")
        for step in cap["steps"]:
            lat = step["latency_ms"]
            print(
                f"    {step['streams']:>6} streams  p50 {lat.get('p50')} ms  p99 {lat.get('p99')}"
                f" ms  max {lat.get('max')} ms  missing {step['delivery']['missing']}  "
                f"{step['cost']['us_per_delivery']} us/delivery  "
                f"opened {step['open']['per_second']}/s  per worker {step['streams_per_worker']}"
            )
        print(
            f"    largest with p99 < 100 ms: {cap['largest_with_p99_under_100ms']}; "
            f"largest reached: {cap['largest_reached']}"
            + (f" (limit: {cap['limit']})" if cap["limit"] else "")
        )
        last = cap["steps"][-1] if cap["steps"] else {}
        print(
            f"    worker RSS {cap['baseline_workers_rss_mib']} MiB idle -> "
            f"{last.get('workers_rss_mib')} MiB: {last.get('rss_kib_per_stream')} KiB per stream"
            f" ({cap['rss_kib_per_stream_between_first_and_last_step']} KiB between steps)"
        )
    print(f"  CPU by phase (seconds / % of {report['machine']['nproc']} cores):")
    phases = [("warm-up", report["warmup"]), ("push", push), ("polling", polling)]
    phases += [(f"cap {s['streams']}", s) for s in report.get("capacity", {}).get("steps", [])]
    for name, phase in phases:
        print(cpu_line(name, phase["cpu"]))
    print(f"    push, other by process (s): {push['cpu']['other']['top_processes_cpu_seconds']}")
    if "profile" in report:
        prof = report["profile"]
        if "skipped" in prof:
            print(f"  profile: {prof['skipped']}")
        else:
            print(
                f"  py-spy, worker {prof['worker_pid']} ({prof['streams']} sockets), "
                f"{prof['samples']} samples; top own time:"
            )
            for name, percent in prof["top_own_percent"][:10]:
                print(f"    {percent:5.1f} %  {name}")
            print("    top stacks (leaf first):")
            for name, percent in prof["top_stacks_percent"][:5]:
                print(f"    {percent:5.1f} %  {name}")
    stop = report["shutdown"]
    print(
        f"  closed streams released by the workers after {push['closed_streams_released_after_s']}"
        f" s (push); gunicorn stopped in {stop['seconds']} s with {stop['streams_open']} streams "
        f"open (graceful_timeout {stop['graceful_timeout_seconds']} s)"
    )
    for problem in report["problems"]:
        print(f"  problem: {problem}")
    if report["gunicorn_log"]["notable"]:
        print(f"  gunicorn log, not routine INFO ({report['gunicorn_log']['lines']} lines):")
        for line in report["gunicorn_log"]["notable"][-10:]:
            print(f"    {line}")
    print(f"  plot: {report['plot']}")
    print(f"  written to {report['output']}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark once, print the summary, write the JSON report and the plot."""
    args = parse_args(argv)
    report = run_with_cleanup(args, run, "ring-gunicorn-")
    if report is None:
        return 130
    report["plot"] = plot(report, args.output.with_suffix(".png"))
    del report["_raw_curves"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
