"""Webhook throughput: signed Telnyx webhooks against real gunicorn, PostgreSQL and Redis.

`make bench` runs this. One run creates a throwaway database and Redis prefix, starts gunicorn
as production would, sends N calls (a call.initiated then its call.hangup each) over keep-alive
connections, and prints requests/s, latency percentiles, errors, where the CPU went, and row
counts proving every acknowledged webhook is durable. It measures; it asserts nothing about speed.

    .venv/bin/python bench/webhook_throughput.py [--quick] [--calls N] [--connections C] ...
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
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
# A round stops taking new calls this long after its requests were signed, leaving the calls in
# flight ample time to arrive inside the server's 300 s window.
ROUND_SECONDS = TOLERANCE_SECONDS - 60
# Telnyx gives up on a webhook long before this; it only keeps a hung server from hanging us.
REQUEST_TIMEOUT_SECONDS = 30
GROUPS = ("gunicorn", "postgres", "redis", "load_generator")
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
APP_ENV_PREFIXES = ("TELNYX_", "DB_", "REDIS_", "GUNICORN_", "RING_TIMEOUT_")

Pair = tuple[bytes, bytes]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=15_000, help="calls (2 webhooks each)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive conns")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn WEB_CONCURRENCY")
    parser.add_argument("--db-pool-size", type=int, default=10, help="DB_POOL_SIZE per worker")
    parser.add_argument("--warmup", type=int, default=500, help="untimed requests sent first")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 calls, 100 warm-up")
    parser.add_argument(
        "--database-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.warmup = 500, 100
    if args.calls < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--calls and --connections must be positive, --warmup not negative")
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
        # A round's calls are stamped when it is signed, up to ROUND_SECONDS before they are
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


def notable_log_lines(log_path: Path, limit: int = 40) -> tuple[int, list[str]]:
    """The log's line count and its last lines that are not routine INFO lines."""
    lines = log_path.read_text(errors="replace").splitlines()
    notable = [line for line in lines if " INFO " not in line and "[INFO]" not in line]
    return len(lines), notable[-limit:]


# --- Webhooks ---------------------------------------------------------------------------------


def load_templates() -> tuple[dict, dict]:
    """The missed call's call.initiated and call.hangup fixtures, as dicts."""
    return json.loads(INITIATED_TEMPLATE.read_text()), json.loads(HANGUP_TEMPLATE.read_text())


def iso(moment: datetime) -> str:
    """A UTC timestamp as Telnyx writes it."""
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def call_bodies(
    templates: tuple[dict, dict], run_id: str, index: int, shift: timedelta
) -> tuple[bytes, bytes]:
    """One call's bodies: ids unique to the call, the fixture's timeline moved by `shift`."""
    ids = {
        "call_control_id": f"v3:bench-{run_id}-{index}",
        "call_leg_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/{index}/leg")),
        "call_session_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/{index}/session")),
    }
    bodies = []
    for template in templates:
        event = copy.deepcopy(template)
        data, payload = event["data"], event["data"]["payload"]
        # Stable per call and event, so a call re-signed for a later round keeps its ids.
        data["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_id}/{index}/{data['event_type']}"))
        payload.update(ids)
        for fields, name in ((data, "occurred_at"), (payload, "start_time"), (payload, "end_time")):
            if fields.get(name):
                fields[name] = iso(datetime.fromisoformat(fields[name]) + shift)
        bodies.append(json.dumps(event).encode())
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


def sign_calls(seed: bytes, host: str, run_id: str, calls: list[int]) -> list[Pair]:
    """Complete requests for each call, stamped and signed now, ready to write to a socket.

    The fixture's timeline is moved so that the caller hangs up now: Telnyx's timestamps are
    as fresh as its signatures, and the ring-timeout sweep acts on how long a call has rung.
    """
    templates = load_templates()
    now = time.time()
    hangup_end = datetime.fromisoformat(templates[1]["data"]["payload"]["end_time"])
    shift = datetime.fromtimestamp(now, UTC) - hangup_end
    timestamp = int(now)
    pairs = []
    for index in calls:
        initiated, hangup = call_bodies(templates, run_id, index, shift)
        pairs.append(
            (
                http_request(host, initiated, sign(seed, initiated, timestamp)),
                http_request(host, hangup, sign(seed, hangup, timestamp)),
            )
        )
    return pairs


# --- Load generator ---------------------------------------------------------------------------


@dataclass
class LoadStats:
    """What the load generator saw: latencies of answered requests, statuses, failures."""

    latencies_ns: list[int] = field(default_factory=list)
    # When each answered request finished, on a clock that runs only during the timed rounds.
    finished_ns: list[int] = field(default_factory=list)
    origin_ns: int = 0
    statuses: Counter = field(default_factory=Counter)
    results: Counter = field(default_factory=Counter)
    exceptions: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    wall_ns: int = 0
    rounds: int = 0

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
    port: int, work: Iterator[Pair], stats: LoadStats, stop_at: float
) -> None:
    """Send calls from the shared iterator back to back, each call's hangup after its initiated."""
    reader = writer = None
    try:
        while time.monotonic() < stop_at and (pair := next(work, None)) is not None:
            for request in pair:
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
    port: int, pairs: list[Pair], connections: int, stats: LoadStats, stop_at: float = math.inf
) -> int:
    """Drive pairs through `connections` connections until done or stop_at; return calls sent."""
    work = iter(pairs)  # shared: each connection takes the next call when it is free
    await asyncio.gather(
        *(drive_connection(port, work, stats, stop_at) for _ in range(connections))
    )
    return len(pairs) - sum(1 for _ in work)


def timed_load(
    port: int, seed: bytes, run_id: str, calls: list[int], connections: int, sample
) -> tuple[LoadStats, list[tuple[dict, dict]]]:
    """The timed part, in as many rounds as the signature window needs; signing is untimed.

    Each round sends requests signed just before it and stops taking new calls before those
    signatures would go stale; returns the stats and a (before, after) CPU sample per round.
    """
    stats, windows, pending = LoadStats(), [], calls
    while pending:
        signing_start = time.monotonic()
        pairs = sign_calls(seed, f"127.0.0.1:{port}", run_id, pending)
        print(
            f"  round {stats.rounds + 1}: signed {2 * len(pairs)} webhooks "
            f"in {time.monotonic() - signing_start:.1f} s"
        )
        stop_at = time.monotonic() + ROUND_SECONDS
        before = sample()
        start = time.perf_counter_ns()
        stats.origin_ns = start - stats.wall_ns
        sent = asyncio.run(run_load(port, pairs, connections, stats, stop_at))
        stats.wall_ns += time.perf_counter_ns() - start
        windows.append((before, sample()))
        stats.rounds += 1
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
        "rounds": stats.rounds,
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


def verify(database_url: str, client: redis.Redis, prefix: str, sent_calls: int) -> dict:
    """Rows and live state after the run, next to what every acknowledged webhook implies."""
    counts = {
        "webhook_events": "SELECT count(*) FROM webhook_events",
        "call_logs": "SELECT count(*) FROM call_logs",
        "call_logs_abandoned": "SELECT count(*) FROM call_logs WHERE outcome = 'abandoned'",
        "inbound_calls_ended": "SELECT count(*) FROM inbound_calls WHERE status = 'ended'",
    }
    found = {name: query_one(database_url, sql) for name, sql in counts.items()}
    found["redis_ringing"] = client.zcard(RedisKeys(prefix).ringing)
    expected = {
        "webhook_events": 2 * sent_calls,
        "call_logs": sent_calls,
        "call_logs_abandoned": sent_calls,
        "inbound_calls_ended": sent_calls,
        "redis_ringing": 0,
    }
    return {
        name: {
            "found": found[name],
            "expected": expected[name],
            "ok": found[name] == expected[name],
        }
        for name in expected
    }


def print_report(report: dict[str, Any]) -> None:
    """The human-readable summary."""
    p, r, cpu = report["parameters"], report["results"], report["cpu"]
    print()
    print(
        f"webhook throughput: {p['calls']} calls = {p['webhooks']} webhooks, "
        f"{p['connections']} connections, {p['workers']} gunicorn workers, "
        f"DB_POOL_SIZE={p['db_pool_size']}, {report['machine']['nproc']} cores"
    )
    print(f"  requests      {r['requests']} in {r['wall_seconds']:.2f} s")
    print(
        f"  throughput    {r['requests_per_second']:.0f} webhooks/s "
        f"({r['calls_per_second']:.0f} calls/s)"
    )
    by_tenth = " ".join(f"{rate:.0f}" for rate in r["requests_per_second_by_tenth"])
    print(f"  by tenth      {by_tenth} (requests/s over each tenth of the run)")
    if r["latency_ms"]:
        lat = r["latency_ms"]
        print(
            f"  latency ms    p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
            f"max {lat['max']:.2f}  (mean {lat['mean']:.2f})"
        )
    print(f"  errors        {r['errors'] or 'none'}")
    print(f"  results       {r['results']}")
    for sample in r["error_samples"][:5]:
        print(f"    e.g. {sample}")
    print(f"  CPU over the timed part (% of {report['machine']['nproc']} cores):")
    for group in (*GROUPS, "other", "machine_busy"):
        seconds, percent = cpu[group]["cpu_seconds"], cpu[group]["percent_of_cores"]
        print(f"    {group:<15} {seconds:7.2f} s  {percent:5.1f} %")
    print(f"    gunicorn workers (s): {cpu['gunicorn']['workers_cpu_seconds']}")
    print(f"    other, by process (s): {cpu['other']['top_processes_cpu_seconds']}")
    v = report["verification"]
    print(f"  postgresql sessions opened during the timed part: {v['postgresql_sessions']}")
    print("  durable after the run (found / expected, warm-up included):")
    for name, check in v["counts"].items():
        mark = "ok" if check["ok"] else "MISMATCH"
        print(f"    {name:<20} {check['found']:>7} / {check['expected']:<7} {mark}")
    log = report["gunicorn_log"]
    if log["notable"]:
        print(
            f"  gunicorn log: {log['lines']} lines; not routine INFO (last {len(log['notable'])}):"
        )
        for line in log["notable"][-15:]:
            print(f"    {line}")
    for note in report["notes"]:
        print(f"  note: {note}")
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


def run(args: argparse.Namespace, run_id: str, client: redis.Redis, log_file) -> dict[str, Any]:
    """Set everything up, warm up, run the timed part, verify, and tear it all down."""
    database_name = f"telnyx_flask_bench_{run_id}"
    redis_prefix = f"telnyx-flask-bench:{run_id}:"
    warmup_calls = args.warmup // 2
    signing_key = SigningKey.generate()
    public_key = base64.b64encode(bytes(signing_key.verify_key)).decode()
    port = free_port()
    host = f"127.0.0.1:{port}"

    seed = bytes(signing_key)

    try:
        with throwaway_database(args.database_admin_url, database_name) as database_url:
            env = gunicorn_env(args, database_url, redis_prefix, public_key, port)
            with running_gunicorn(env, log_file) as gunicorn:
                wait_ready(gunicorn, port)
                print(f"gunicorn ready on {host}; database {database_name}; prefix {redis_prefix}")
                print(f"warm-up: {2 * warmup_calls} requests")
                warm_stats = LoadStats()
                warmup = sign_calls(seed, host, run_id, list(range(warmup_calls)))
                asyncio.run(run_load(port, warmup, args.connections, warm_stats))
                sessions_before = database_sessions(database_url, database_name)
                print(f"timed part: {2 * args.calls} requests, {args.connections} connections")
                timed = list(range(warmup_calls, warmup_calls + args.calls))
                stats, windows = timed_load(
                    port, seed, run_id, timed, args.connections, lambda: cpu_sample(gunicorn.pid)
                )
                sessions = database_sessions(database_url, database_name) - sessions_before
                counts = verify(database_url, client, redis_prefix, warmup_calls + args.calls)
            master_pid, exit_status = gunicorn.pid, gunicorn.returncode
    finally:
        removed = delete_redis_keys(client, redis_prefix)
        print(f"cleaned up: dropped database {database_name}, deleted {removed} redis keys")

    notes = []
    if warm_stats.errors:
        notes.append(f"warm-up errors: {warm_stats.errors}")
    if stats.rounds > 1:
        notes.append(f"re-signed between {stats.rounds} rounds to stay in the signature window")
    log_file.flush()
    lines, notable = notable_log_lines(Path(log_file.name))
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
            "calls": args.calls,
            "webhooks": 2 * args.calls,
            "connections": args.connections,
            "workers": args.workers,
            "db_pool_size": args.db_pool_size,
            "warmup_requests": 2 * warmup_calls,
            "quick": args.quick,
            "worker_class": "gevent",
            "log_level": "INFO",
            "ring_timeout_seconds": 600,
        },
        "results": summarize(stats, args.calls),
        "cpu": cpu_split(windows, stats.wall_ns / 1e9, master_pid),
        "verification": {"counts": counts, "postgresql_sessions": sessions},
        "gunicorn_log": {"lines": lines, "notable": notable, "exit_status": exit_status},
        "notes": notes,
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
    """Run the benchmark once, print the summary and write the JSON report."""
    args = parse_args(argv)
    report = run_with_cleanup(args, run, "bench-gunicorn-")
    if report is None:
        return 130
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
