"""Webhook throughput: signed Telnyx webhooks against real gunicorn, PostgreSQL and Redis.

`make bench` runs this. It compares group-commit batch windows (WEBHOOK_BATCH_WINDOW_MS, #13)
side by side: in each of several rounds every window gets its own measurement, the order
alternating between rounds (0,2 then 2,0 ...) so that a noisy machine treats them alike. A
measurement creates a throwaway database and Redis prefix, starts gunicorn as production would
with that window, sends N calls (a call.initiated then its call.hangup each) over keep-alive
connections, and records requests/s, latency percentiles, errors, where the CPU went, and checks
that every acknowledged webhook is in PostgreSQL. The report gives each window's medians over
the rounds and its ratios to the first window, measured round by round. It measures; it asserts
nothing about speed, but exits 1 if a row an acknowledged webhook implies is missing.

    .venv/bin/python bench/webhook_throughput.py [--quick] [--batch-windows 0,2] [--rounds 3] ...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import json
import math
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import psycopg2
import redis
from nacl.signing import SigningKey

from telnyx_flask.devserver import stop_process
from telnyx_flask.embedded import free_port
from telnyx_flask.redis_store import RedisKeys
from telnyx_flask.signature import TOLERANCE_SECONDS, sign

# The repository root, for the tests' throwaway database helper (bench/ is run as scripts).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import throwaway_database

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "telnyx"
INITIATED_TEMPLATE = FIXTURES / "11_missed.call.initiated.json"
HANGUP_TEMPLATE = FIXTURES / "12_missed.call.hangup.json"
WEBHOOK_PATH = "/api/telnyx/webhook"
DEFAULT_OUTPUT = ROOT / "docs" / "bench" / "webhook-throughput.json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NPROC = len(os.sched_getaffinity(0))
# A signing pass stops taking new calls this long after its requests were signed, leaving the
# calls in flight ample time to arrive inside the server's 300 s window.
PASS_SECONDS = TOLERANCE_SECONDS - 60
# Telnyx gives up on a webhook long before this; it only keeps a hung server from hanging us.
REQUEST_TIMEOUT_SECONDS = 30
GROUPS = ("gunicorn", "postgres", "redis", "load_generator")
# The CPU rows of the side-by-side table: GROUPS, then everyone else, then the whole machine.
CPU_ROWS = (*GROUPS, "other", "machine_busy")
# Settings the app or gunicorn.conf.py read: the bench sets the ones it needs and drops the rest,
# so a developer's shell cannot silently change what is measured.
APP_ENV_NAMES = {
    "APP_ENV",
    "SECRET_KEY",
    "DATABASE_URL",
    "RECORD_CALLS",
    "WEB_CONCURRENCY",
    "WORKER_CONNECTIONS",
    "PORT",
    "API_PORT",
    "HOST",
    "LOG_LEVEL",
}
APP_ENV_PREFIXES = ("TELNYX_", "DB_", "REDIS_", "GUNICORN_", "RING_TIMEOUT_", "WEBHOOK_")


def batch_windows(text: str) -> list[str]:
    """--batch-windows: distinct non-negative numbers of milliseconds, kept as written."""
    values = [value.strip() for value in text.split(",") if value.strip()]
    try:
        numbers = [float(value) for value in values]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds in {text!r}") from None
    if not numbers or len(set(numbers)) < len(numbers):
        raise argparse.ArgumentTypeError("expected distinct values, e.g. 0,2")
    if not all(0 <= number < math.inf for number in numbers):
        raise argparse.ArgumentTypeError("expected finite values of 0 or more, e.g. 0,2")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-windows",
        type=batch_windows,
        default="0,2",
        help="WEBHOOK_BATCH_WINDOW_MS values compared (0 = off); ratios are to the first",
    )
    parser.add_argument(
        "--batch-max-events", type=int, default=64, help="WEBHOOK_BATCH_MAX_EVENTS for all"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of one measurement per window each"
    )
    parser.add_argument(
        "--calls", type=int, default=15_000, help="calls per measurement (2 webhooks each)"
    )
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive conns")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn WEB_CONCURRENCY")
    parser.add_argument("--db-pool-size", type=int, default=10, help="DB_POOL_SIZE per worker")
    parser.add_argument("--warmup", type=int, default=500, help="untimed requests sent first")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1,000 calls, 200 warm-up a measurement"
    )
    parser.add_argument(
        "--database-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.warmup = 1000, 200
    if min(args.calls, args.connections, args.rounds, args.batch_max_events) < 1:
        parser.error("--calls, --connections, --rounds and --batch-max-events must be positive")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


# --- Throwaway stores -------------------------------------------------------------------------


def delete_redis_keys(client: redis.Redis, prefix: str) -> int:
    """Delete every key under the prefix; return how many there were."""
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    return len(keys)


def query_one(url: str, sql: str, params: tuple = ()) -> Any:
    """The first column of the first row of a query."""
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]
    finally:
        conn.close()


# --- gunicorn ---------------------------------------------------------------------------------


def gunicorn_env(
    args: argparse.Namespace, database_url: str, redis_prefix: str, public_key: str, port: int
) -> dict:
    """The environment production would give gunicorn, pointed at the throwaway stores."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in APP_ENV_NAMES and not key.startswith(APP_ENV_PREFIXES)
    }
    env.update(
        APP_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(32),  # production refuses a weak key
        TELNYX_API_KEY="bench",
        # Nothing listens on port 9; RECORD_CALLS=false means nothing should try to.
        TELNYX_API_BASE="http://127.0.0.1:9/v2",
        RECORD_CALLS="false",
        TELNYX_PUBLIC_KEY=public_key,
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        REDIS_PREFIX=redis_prefix,
        WEB_CONCURRENCY=str(args.workers),
        PORT=str(port),
        DB_POOL_SIZE=str(args.db_pool_size),
        # A pass's calls are stamped when it is signed, up to PASS_SECONDS before they are
        # sent; the longest ring timeout keeps the sweep (which still runs) from rejecting calls
        # that, had Telnyx sent them, would only have just started ringing.
        RING_TIMEOUT_SECONDS="600",
        DOTENV_PATH="/nonexistent",
    )
    return env


@contextlib.contextmanager
def running_gunicorn(env: dict[str, str], log_file) -> Iterator[subprocess.Popen]:
    """gunicorn as `make run` starts it, stopped on exit; its own session keeps Ctrl-C ours."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "--config", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop_gunicorn(process)


def wait_ready(process: subprocess.Popen, port: int, timeout: float = 30.0) -> None:
    """Return once GET /readyz answers 200; raise if gunicorn exits or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)  # the port opens when a worker has booted; there is nothing to block on
    raise RuntimeError(f"gunicorn was not ready after {timeout:.0f} s")


def stop_gunicorn(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (graceful shutdown), wait for it to exit, and kill it if it does not."""
    return stop_process(process, timeout)


def notable_log_lines(log_path: Path, limit: int = 40, start: int = 0) -> tuple[int, list[str]]:
    """The log's line count and its last lines that are not routine INFO lines, from byte start."""
    with log_path.open("rb") as log:
        log.seek(start)
        lines = log.read().decode(errors="replace").splitlines()
    notable = [line for line in lines if " INFO " not in line and "[INFO]" not in line]
    return len(lines), notable[-limit:]


# --- Webhooks ---------------------------------------------------------------------------------


def load_templates() -> tuple[dict, dict]:
    """The missed call's call.initiated and call.hangup fixtures, as dicts."""
    return json.loads(INITIATED_TEMPLATE.read_text()), json.loads(HANGUP_TEMPLATE.read_text())


def iso(moment: datetime) -> str:
    """A UTC timestamp as Telnyx writes it."""
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Webhook:
    """What the durability check needs to know of one webhook sent."""

    event_id: str
    event_type: str
    call_control_id: str


# A webhook and its complete signed request; a call is its call.initiated then its call.hangup.
Signed = tuple[Webhook, bytes]
SignedCall = tuple[Signed, Signed]


def call_bodies(
    templates: tuple[dict, dict], run_id: str, index: int, shift: timedelta
) -> tuple[tuple[Webhook, bytes], tuple[Webhook, bytes]]:
    """One call's webhooks and bodies: ids unique to the call, the timeline moved by `shift`."""
    ids = {
        "call_control_id": f"v3:bench-{run_id}-{index}",
        "call_leg_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/{index}/leg")),
        "call_session_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/{index}/session")),
    }
    bodies = []
    for template in templates:
        event = copy.deepcopy(template)
        data, payload = event["data"], event["data"]["payload"]
        # Stable per call and event, so a call re-signed for a later pass keeps its ids.
        data["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/{index}/{data['event_type']}"))
        payload.update(ids)
        for fields, name in ((data, "occurred_at"), (payload, "start_time"), (payload, "end_time")):
            if fields.get(name):
                fields[name] = iso(datetime.fromisoformat(fields[name]) + shift)
        webhook = Webhook(data["id"], data["event_type"], ids["call_control_id"])
        bodies.append((webhook, json.dumps(event).encode()))
    return bodies[0], bodies[1]


def http_request(host: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 keep-alive POST of the body to the webhook endpoint."""
    head = [
        f"POST {WEBHOOK_PATH} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
        "",
        "",
    ]
    return "\r\n".join(head).encode() + body


def sign_calls(seed: bytes, host: str, run_id: str, calls: list[int]) -> list[SignedCall]:
    """Complete requests for each call, stamped and signed now, ready to write to a socket.

    The fixture's timeline is moved so that the caller hangs up now: Telnyx's timestamps are
    as fresh as its signatures, and the ring-timeout sweep acts on how long a call has rung.
    """
    templates = load_templates()
    now = time.time()
    hangup_end = datetime.fromisoformat(templates[1]["data"]["payload"]["end_time"])
    shift = datetime.fromtimestamp(now, UTC) - hangup_end
    timestamp = int(now)

    def signed(webhook: Webhook, body: bytes) -> Signed:
        return webhook, http_request(host, body, sign(seed, body, timestamp))

    signed_calls = []
    for index in calls:
        initiated, hangup = call_bodies(templates, run_id, index, shift)
        signed_calls.append((signed(*initiated), signed(*hangup)))
    return signed_calls


# --- Load generator ---------------------------------------------------------------------------


@dataclass
class LoadStats:
    """What the load generator saw: latencies of answered requests, statuses, failures."""

    latencies_ns: list[int] = field(default_factory=list)
    # When each answered request finished, on a clock that runs only during the timed passes.
    finished_ns: list[int] = field(default_factory=list)
    origin_ns: int = 0
    statuses: Counter = field(default_factory=Counter)
    results: Counter = field(default_factory=Counter)
    exceptions: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    # The webhooks answered 2xx: each must be in PostgreSQL afterwards.
    acknowledged: list[Webhook] = field(default_factory=list)
    wall_ns: int = 0
    # How many times the requests were signed (see timed_load).
    signing_passes: int = 0

    @property
    def errors(self) -> dict[str, int]:
        """Non-200 statuses and exceptions, by name."""
        counts = {str(status): n for status, n in self.statuses.items() if status != 200}
        return {**counts, **self.exceptions}

    def sample_error(self, text: str) -> None:
        """Keep the first few error descriptions for the report."""
        if len(self.error_samples) < 10:
            self.error_samples.append(text)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the connection stays open; needs Content-Length framing."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, keep_alive = None, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    if length is None:
        raise ValueError(f"response {status} has no Content-Length")
    return status, await reader.readexactly(length), keep_alive


async def drive_connection(
    port: int, work: Iterator[SignedCall], stats: LoadStats, stop_at: float
) -> None:
    """Send calls from the shared iterator back to back, each call's hangup after its initiated."""
    reader = writer = None
    try:
        while time.monotonic() < stop_at and (call := next(work, None)) is not None:
            for webhook, request in call:
                start = time.perf_counter_ns()
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(request)
                    async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                        await writer.drain()
                        status, body, keep_alive = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    stats.exceptions[type(exc).__name__] += 1
                    stats.sample_error(f"{type(exc).__name__}: {exc}")
                    await close(writer)
                    reader = writer = None
                    continue
                end = time.perf_counter_ns()
                stats.latencies_ns.append(end - start)
                stats.finished_ns.append(end - stats.origin_ns)
                stats.statuses[status] += 1
                if 200 <= status < 300:
                    stats.acknowledged.append(webhook)
                if status == 200:
                    stats.results[json.loads(body).get("result")] += 1
                else:
                    stats.sample_error(f"{status}: {body[:300].decode(errors='replace')}")
                if not keep_alive:
                    await close(writer)
                    reader = writer = None
    finally:
        await close(writer)


async def close(writer: asyncio.StreamWriter | None) -> None:
    """Close a connection and wait until it is, so gunicorn's graceful stop need not wait for it."""
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_load(
    port: int,
    calls: list[SignedCall],
    connections: int,
    stats: LoadStats,
    stop_at: float = math.inf,
) -> int:
    """Drive calls through `connections` connections until done or stop_at; return calls sent."""
    work = iter(calls)  # shared: each connection takes the next call when it is free
    await asyncio.gather(
        *(drive_connection(port, work, stats, stop_at) for _ in range(connections))
    )
    return len(calls) - sum(1 for _ in work)


def timed_load(
    port: int, seed: bytes, run_id: str, calls: list[int], connections: int, sample
) -> tuple[LoadStats, list[tuple[dict, dict]]]:
    """The timed part, in as many passes as the signature window needs; signing is untimed.

    Each pass sends requests signed just before it and stops taking new calls before those
    signatures would go stale; returns the stats and a (before, after) CPU sample per pass.
    """
    stats, windows, pending = LoadStats(), [], calls
    while pending:
        signed_calls = sign_calls(seed, f"127.0.0.1:{port}", run_id, pending)
        stop_at = time.monotonic() + PASS_SECONDS
        before = sample()
        start = time.perf_counter_ns()
        stats.origin_ns = start - stats.wall_ns
        sent = asyncio.run(run_load(port, signed_calls, connections, stats, stop_at))
        stats.wall_ns += time.perf_counter_ns() - start
        windows.append((before, sample()))
        stats.signing_passes += 1
        pending = pending[sent:]
    return stats, windows


def percentile(sorted_values: list[int], percent: float) -> int:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# --- CPU accounting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """One process's CPU ticks: its own, and those of children it has reaped."""

    pid: int
    ppid: int
    comm: str
    own: int
    reaped: int


def read_proc_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat, or None if the process has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses; it ends at the last ')'.
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    own = int(fields[11]) + int(fields[12])  # utime + stime
    reaped = int(fields[13]) + int(fields[14])  # cutime + cstime
    return ProcStat(pid, int(fields[1]), comm, own, reaped)


def machine_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def cpu_sample(gunicorn_pid: int) -> dict[str, Any]:
    """Ticks per process for each group (gunicorn tree, postgres, redis, this process)."""
    procs = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (proc := read_proc_stat(int(entry.name))) is not None:
            procs[proc.pid] = proc
    tree = {gunicorn_pid}
    # Parents always have lower pids unless pids wrapped; loop until no new descendant appears.
    while True:
        grown = tree | {p.pid for p in procs.values() if p.ppid in tree}
        if grown == tree:
            break
        tree = grown
    # Own plus reaped ticks: a process that exits mid-run (a postgres backend, say) still counts,
    # through its parent's cutime, and only for the time it ran after the first sample.
    groups = {
        "gunicorn": {pid: procs[pid].own + procs[pid].reaped for pid in tree if pid in procs},
        "postgres": {p.pid: p.own + p.reaped for p in procs.values() if p.comm == "postgres"},
        "redis": {p.pid: p.own + p.reaped for p in procs.values() if p.comm == "redis-server"},
        # Own ticks only: gunicorn is our child, but it is reaped after the last sample.
        "load_generator": {os.getpid(): procs[os.getpid()].own},
    }
    ours = set().union(*groups.values())
    others = {p.pid: (p.comm, p.own + p.reaped) for p in procs.values() if p.pid not in ours}
    return {"groups": groups, "others": others, "machine": machine_ticks()}


def cpu_split(windows: list[tuple[dict, dict]], wall_s: float, master: int) -> dict[str, Any]:
    """CPU seconds and share of all cores per group, summed over the timed windows."""
    capacity = wall_s * NPROC

    def entry(ticks: int) -> dict[str, Any]:
        seconds = ticks / CLOCK_TICKS
        return {
            "cpu_seconds": round(seconds, 2),
            "percent_of_cores": round(100 * seconds / capacity, 1),
        }

    ticks, per_worker, others, busy = Counter(), Counter(), Counter(), 0
    for before, after in windows:
        for pid, (comm, now) in after["others"].items():
            others[comm] += now - before["others"].get(pid, (comm, 0))[1]
        for group, now in after["groups"].items():
            ticks[group] += sum(now.values()) - sum(before["groups"][group].values())
        for pid, now in after["groups"]["gunicorn"].items():
            if pid != master:
                per_worker[pid] += now - before["groups"]["gunicorn"].get(pid, 0)
        busy += after["machine"][0] - before["machine"][0]
    split = {group: entry(ticks[group]) for group in GROUPS}
    split["gunicorn"]["workers_cpu_seconds"] = [
        round(per_worker[pid] / CLOCK_TICKS, 2) for pid in sorted(per_worker)
    ]
    split["machine_busy"] = entry(busy)
    # Everything else on the machine: the kernel's own threads, and anyone else's work.
    split["other"] = entry(busy - sum(ticks.values()))
    # Who that was, roughly: a parent's ticks include its children that exited in the window.
    split["other"]["top_processes_cpu_seconds"] = {
        comm: round(n / CLOCK_TICKS, 2) for comm, n in others.most_common(5) if n > 0
    }
    return split


# --- Report -----------------------------------------------------------------------------------


def summarize(stats: LoadStats, calls: int) -> dict[str, Any]:
    """Throughput, latency percentiles and errors of the timed part."""
    wall_s = stats.wall_ns / 1e9
    latencies = sorted(stats.latencies_ns)
    requests = sum(stats.statuses.values()) + sum(stats.exceptions.values())
    summary = {
        "requests": requests,
        "ok": stats.statuses.get(200, 0),
        "wall_seconds": round(wall_s, 3),
        "requests_per_second": round(requests / wall_s, 1),
        "signing_passes": stats.signing_passes,
        "calls_per_second": round(calls / wall_s, 1),
        "latency_ms": {},
        "errors": stats.errors,
        "results": dict(stats.results),
        "error_samples": stats.error_samples,
    }
    # Throughput per tenth of the timed part: a steady run is flat, a degrading one is not.
    tenths = Counter(min(9, 10 * t // stats.wall_ns) for t in stats.finished_ns)
    summary["requests_per_second_by_tenth"] = [
        round(tenths[i] / (wall_s / 10), 1) for i in range(10)
    ]
    if latencies:
        summary["latency_ms"] = {
            "p50": round(percentile(latencies, 50) / 1e6, 2),
            "p90": round(percentile(latencies, 90) / 1e6, 2),
            "p99": round(percentile(latencies, 99) / 1e6, 2),
            "max": round(latencies[-1] / 1e6, 2),
            "mean": round(sum(latencies) / len(latencies) / 1e6, 2),
        }
    return summary


def verify(
    database_url: str, client: redis.Redis, prefix: str, acknowledged: list[Webhook]
) -> dict[str, Any]:
    """What every acknowledged webhook implies, against the rows and live state found after it.

    An acknowledged webhook must have its webhook_events row and its call's inbound_calls row; an
    acknowledged hangup, an ended call and its call log; `missing_rows` counts those not found.
    Totals above the acknowledged (a webhook applied but its answer lost) are mismatches only.
    """
    events = [webhook.event_id for webhook in acknowledged]
    calls = {webhook.call_control_id for webhook in acknowledged}
    ended = {w.call_control_id for w in acknowledged if w.event_type == "call.hangup"}
    among_acknowledged = {
        "webhook_events": ("SELECT count(*) FROM webhook_events WHERE event_id = ANY(%s)", events),
        "inbound_calls": (
            "SELECT count(*) FROM inbound_calls WHERE call_control_id = ANY(%s)",
            sorted(calls),
        ),
        "inbound_calls_ended": (
            "SELECT count(*) FROM inbound_calls WHERE call_control_id = ANY(%s)"
            " AND status = 'ended'",
            sorted(ended),
        ),
        "call_logs_abandoned": (
            "SELECT count(*) FROM call_logs WHERE call_sid = ANY(%s) AND outcome = 'abandoned'",
            sorted(ended),
        ),
    }
    found = {
        name: query_one(database_url, sql, (ids,))
        for name, (sql, ids) in among_acknowledged.items()
    }
    expected = {name: len(ids) for name, (_, ids) in among_acknowledged.items()}
    found["webhook_events_total"] = query_one(database_url, "SELECT count(*) FROM webhook_events")
    expected["webhook_events_total"] = len(events)
    found["redis_ringing"] = client.zcard(RedisKeys(prefix).ringing)
    expected["redis_ringing"] = len(calls - ended)
    counts = {
        name: {
            "found": found[name],
            "expected": expected[name],
            "ok": found[name] == expected[name],
        }
        for name in expected
    }
    missing = sum(max(0, expected[name] - found[name]) for name in among_acknowledged)
    return {"counts": counts, "missing_rows": missing}


def median(values: Iterable[float | None], digits: int = 2) -> float | None:
    """The median of the values there are, rounded; None if there are none."""
    present = [value for value in values if value is not None]
    return round(statistics.median(present), digits) if present else None


def webhooks_per_second(run: dict[str, Any]) -> float:
    """A measurement's throughput."""
    return run["results"]["requests_per_second"]


def p99(run: dict[str, Any]) -> float | None:
    """A measurement's p99 latency in ms, None if no request was answered."""
    return run["results"]["latency_ms"].get("p99")


def window_summary(
    window: str, runs: list[dict[str, Any]], baseline: list[dict[str, Any]]
) -> dict[str, Any]:
    """One batch window over the rounds: medians, errors, and ratios to the baseline window.

    A ratio is the median of the per-round ratios, each between two measurements taken one
    after the other, so that what the machine was doing at the time weighs on both alike.
    """

    def ratio(figure: Callable[[dict[str, Any]], float | None]) -> float | None:
        pairs = [(figure(run), figure(base)) for run, base in zip(runs, baseline, strict=True)]
        return median((a / b for a, b in pairs if a is not None and b), digits=3)

    errors: Counter = Counter()
    for run in runs:
        errors.update(run["results"]["errors"])
        errors["missing_rows_in_postgresql"] += run["verification"]["missing_rows"]
    return {
        "batch_window_ms": window,
        "batching": "off" if float(window) == 0 else "on",
        "webhooks_per_second": median((webhooks_per_second(run) for run in runs), digits=1),
        "latency_ms": {
            name: median(run["results"]["latency_ms"].get(name) for run in runs)
            for name in ("p50", "p99")
        },
        "errors": {name: n for name, n in errors.items() if n},
        "cpu_ms_per_webhook": {
            group: median(
                1000 * run["cpu"][group]["cpu_seconds"] / run["results"]["requests"] for run in runs
            )
            for group in CPU_ROWS
        },
        "cpu_percent_of_cores": {
            group: median((run["cpu"][group]["percent_of_cores"] for run in runs), digits=1)
            for group in CPU_ROWS
        },
        "ratio_to_first_window": {
            "webhooks_per_second": ratio(webhooks_per_second),
            "p99": ratio(p99),
        },
        "webhooks_per_second_by_round": [webhooks_per_second(run) for run in runs],
        "p99_ms_by_round": [p99(run) for run in runs],
        "runs": runs,
    }


CPU_LABELS = {
    "gunicorn": "gunicorn workers",
    "postgres": "PostgreSQL",
    "redis": "Redis",
    "load_generator": "load generator",
    "other": "other processes",
    "machine_busy": "whole machine",
}


def print_report(report: dict[str, Any]) -> None:
    """The human-readable summary: the windows side by side, then what went wrong, if anything."""
    p, windows, nproc = report["parameters"], report["windows"], report["machine"]["nproc"]
    first = windows[0]["batch_window_ms"]

    def row(label: str, values: Iterable[str]) -> None:
        print(f"  {label:<32}" + "".join(f"{value:>16}" for value in values))

    def figures(values: Iterable[float | None], spec: str) -> list[str]:
        return ["-" if value is None else format(value, spec) for value in values]

    print()
    print(
        f"webhook throughput: {p['rounds']} rounds x {p['calls']} calls = {p['webhooks']} "
        f"webhooks per measurement, {p['connections']} connections, {p['workers']} gunicorn "
        f"workers, DB_POOL_SIZE={p['db_pool_size']}, WEBHOOK_BATCH_MAX_EVENTS="
        f"{p['batch_max_events']}, {nproc} cores"
    )
    print(f"  order of the measurements, round by round: {' | '.join(map(','.join, p['order']))}")
    print()
    row("WEBHOOK_BATCH_WINDOW_MS", (f"{w['batch_window_ms']} ({w['batching']})" for w in windows))
    row("webhooks/s, median", figures((w["webhooks_per_second"] for w in windows), ".0f"))
    ratios = [w["ratio_to_first_window"] for w in windows]
    row(
        f"  ratio to {first}, median of rounds",
        figures((r["webhooks_per_second"] for r in ratios), ".3f"),
    )
    row(
        "  by round", (" ".join(figures(w["webhooks_per_second_by_round"], ".0f")) for w in windows)
    )
    row("latency p50 ms, median", figures((w["latency_ms"]["p50"] for w in windows), ".1f"))
    row("latency p99 ms, median", figures((w["latency_ms"]["p99"] for w in windows), ".1f"))
    row(f"  ratio to {first}, median of rounds", figures((r["p99"] for r in ratios), ".3f"))
    row("  by round", (" ".join(figures(w["p99_ms_by_round"], ".0f")) for w in windows))
    row("errors (all rounds)", (str(sum(w["errors"].values())) for w in windows))
    row("CPU ms per webhook, median", ("" for _ in windows))
    for group in CPU_ROWS:
        values = (w["cpu_ms_per_webhook"][group] for w in windows)
        row(f"  {CPU_LABELS[group]}", figures(values, ".3f"))
    row(f"CPU % of {nproc} cores, median", ("" for _ in windows))
    for group in CPU_ROWS:
        values = (w["cpu_percent_of_cores"][group] for w in windows)
        row(f"  {CPU_LABELS[group]}", figures(values, ".1f"))
    print()

    runs = [run for window in windows for run in window["runs"]]
    events = [run["verification"]["counts"]["webhook_events"] for run in runs]
    missing = sum(run["verification"]["missing_rows"] for run in runs)
    print(
        f"  durable: {sum(check['found'] for check in events)} of "
        f"{sum(check['expected'] for check in events)} acknowledged webhooks (warm-ups included) "
        f"in webhook_events; rows they imply missing (events, calls, call logs): {missing}"
    )
    for run in sorted(runs, key=lambda run: (run["round"], run["position"])):
        where = f"round {run['round']}, window {run['batch_window_ms']}"
        for name, check in run["verification"]["counts"].items():
            if not check["ok"]:
                print(f"    {where}: {name} {check['found']} / {check['expected']} MISMATCH")
        if run["results"]["errors"]:
            print(f"    {where}: errors {run['results']['errors']}")
            for sample in run["results"]["error_samples"][:3]:
                print(f"      e.g. {sample}")
        if notable := run["gunicorn_log"]["notable"]:
            print(f"    {where}: gunicorn log, not routine INFO (last {min(5, len(notable))}):")
            for line in notable[-5:]:
                print(f"      {line}")
        for note in run["notes"]:
            print(f"    {where}: note: {note}")
    print(f"  written to {report['output']}")


# --- Main -------------------------------------------------------------------------------------


def interrupt_on_sigterm(signum, frame) -> None:
    """Handle SIGTERM as Ctrl-C: asyncio cancels the load cleanly, then the cleanup runs."""
    signal.raise_signal(signal.SIGINT)


def database_sessions(database_url: str, name: str) -> int:
    """Connections ever opened to the database (pg_stat_database.sessions)."""
    return query_one(
        database_url, "SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)
    )


def measure(
    args: argparse.Namespace,
    window: str,
    measurement_id: str,
    signing_key: SigningKey,
    client: redis.Redis,
    log_file: IO[bytes],
) -> dict[str, Any]:
    """One measurement: fresh stores, gunicorn with this batch window, warm-up, timed, verified."""
    database_name = f"telnyx_flask_bench_{measurement_id}"
    redis_prefix = f"telnyx-flask-bench:{measurement_id}:"
    warmup_calls = args.warmup // 2
    public_key = base64.b64encode(bytes(signing_key.verify_key)).decode()
    seed = bytes(signing_key)
    port = free_port()
    host = f"127.0.0.1:{port}"
    # gunicorn appends to the log the measurements share; this one's lines start here.
    log_start = os.fstat(log_file.fileno()).st_size

    try:
        with throwaway_database(args.database_admin_url, database_name) as database_url:
            env = gunicorn_env(args, database_url, redis_prefix, public_key, port)
            env.update(
                WEBHOOK_BATCH_WINDOW_MS=window,
                WEBHOOK_BATCH_MAX_EVENTS=str(args.batch_max_events),
            )
            with running_gunicorn(env, log_file) as gunicorn:
                wait_ready(gunicorn, port)
                warm_stats = LoadStats()
                warmup = sign_calls(seed, host, measurement_id, list(range(warmup_calls)))
                asyncio.run(run_load(port, warmup, args.connections, warm_stats))
                sessions_before = database_sessions(database_url, database_name)
                timed = list(range(warmup_calls, warmup_calls + args.calls))
                stats, samples = timed_load(
                    port,
                    seed,
                    measurement_id,
                    timed,
                    args.connections,
                    lambda: cpu_sample(gunicorn.pid),
                )
                sessions = database_sessions(database_url, database_name) - sessions_before
                # While gunicorn still runs: an acknowledged webhook must already be committed.
                durable = verify(
                    database_url,
                    client,
                    redis_prefix,
                    warm_stats.acknowledged + stats.acknowledged,
                )
            master_pid, exit_status = gunicorn.pid, gunicorn.returncode
    finally:
        delete_redis_keys(client, redis_prefix)

    notes = []
    if warm_stats.errors:
        notes.append(f"warm-up errors: {warm_stats.errors}")
    if stats.signing_passes > 1:
        notes.append(f"signed in {stats.signing_passes} passes to stay in the signature window")
    lines, notable = notable_log_lines(Path(log_file.name), start=log_start)
    return {
        "batch_window_ms": window,
        "results": summarize(stats, args.calls),
        "cpu": cpu_split(samples, stats.wall_ns / 1e9, master_pid),
        "verification": {**durable, "postgresql_sessions": sessions},
        "gunicorn_log": {"lines": lines, "notable": notable, "exit_status": exit_status},
        "notes": notes,
    }


def run(
    args: argparse.Namespace, run_id: str, client: redis.Redis, log_file: IO[bytes]
) -> dict[str, Any]:
    """Measure every batch window once a round, reversing their order every other round."""
    signing_key = SigningKey.generate()
    order = [
        args.batch_windows if index % 2 == 0 else args.batch_windows[::-1]
        for index in range(args.rounds)
    ]
    runs: dict[str, list[dict[str, Any]]] = {window: [] for window in args.batch_windows}
    print(
        f"{args.rounds} rounds x {len(args.batch_windows)} batch windows, {2 * args.calls} timed "
        f"webhooks each ({2 * (args.warmup // 2)} warm-up), {args.connections} connections"
    )
    for round_index, windows in enumerate(order):
        for position, window in enumerate(windows):
            start = time.monotonic()
            measurement_id = f"{run_id}_{round_index + 1}_{position + 1}"
            measurement = measure(args, window, measurement_id, signing_key, client, log_file)
            runs[window].append({"round": round_index + 1, "position": position + 1, **measurement})
            results, missing = measurement["results"], measurement["verification"]["missing_rows"]
            print(
                f"  round {round_index + 1}/{args.rounds}, WEBHOOK_BATCH_WINDOW_MS={window}: "
                f"{results['requests_per_second']:.0f} webhooks/s, "
                f"p50 {results['latency_ms'].get('p50', '-')} ms, "
                f"p99 {results['latency_ms'].get('p99', '-')} ms, "
                f"errors {results['errors'] or 'none'}, missing rows {missing} "
                f"({time.monotonic() - start:.0f} s)"
            )
    return {
        "benchmark": "webhook_throughput",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": NPROC,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgresql": query_one(args.database_admin_url, "SHOW server_version"),
            "redis": client.info("server")["redis_version"],
        },
        "parameters": {
            "batch_windows_ms": args.batch_windows,
            "batch_max_events": args.batch_max_events,
            "rounds": args.rounds,
            "order": order,
            "calls": args.calls,
            "webhooks": 2 * args.calls,
            "connections": args.connections,
            "workers": args.workers,
            "db_pool_size": args.db_pool_size,
            "warmup_requests": 2 * (args.warmup // 2),
            "quick": args.quick,
            "worker_class": "gevent",
            "log_level": "INFO",
            "ring_timeout_seconds": 600,
        },
        "windows": [
            window_summary(window, runs[window], runs[args.batch_windows[0]])
            for window in args.batch_windows
        ],
        "output": str(args.output),
    }


def run_with_cleanup(
    args: argparse.Namespace, run_once: Any, log_prefix: str
) -> dict[str, Any] | None:
    """Run a benchmark once with Ctrl-C and SIGTERM cleaning up; None if interrupted."""
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show up under make and in pipes
    # Even when started in the background (SIGINT ignored), SIGINT and SIGTERM must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    client = redis.Redis.from_url(args.redis_url)
    with tempfile.NamedTemporaryFile("w+b", prefix=log_prefix, suffix=".log") as log_file:
        try:
            return run_once(args, uuid.uuid4().hex[:10], client, log_file)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return None
        except Exception:
            log_file.flush()
            lines, notable = notable_log_lines(Path(log_file.name))
            print(f"gunicorn log ({lines} lines), last notable lines:", file=sys.stderr)
            print("\n".join(notable), file=sys.stderr)
            raise
        finally:
            client.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the summary and write the JSON report; 1 if rows are missing."""
    args = parse_args(argv)
    report = run_with_cleanup(args, run, "bench-gunicorn-")
    if report is None:
        return 130
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    windows = report["windows"]
    missing = sum(window["errors"].get("missing_rows_in_postgresql", 0) for window in windows)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
