"""High availability drill: two hosts behind one address, one of them SIGKILLed.

Two gunicorn "hosts" (each a master and two gevent workers on a port of its own) share one
PostgreSQL database, one Redis prefix and one SECRET_KEY, behind a round-robin TCP balancer
(tests/tcp_balancer.py): the Telnyx simulator sends its webhooks there, and the agents' pages and
presses go through it. Each host reaches Telnyx through an egress of its own (a one-backend
balancer that notes the commands it carries), so the drill knows which host is sending what.

Calls ring; pages of two agents are open on both hosts; four agents race to answer one call,
their presses spread over both hosts. The answered call owes record_start, which Telnyx holds
and then refuses: the host sending it is SIGKILLed (master and workers) in mid-request. Then the
pages that were on it reconnect through the balancer with Last-Event-ID and miss nothing (every
entry of the event stream reaches every page once and in order, those announced while they were
away included), a second race on the survivor has one winner, and record_start reaches Telnyx
exactly once, from the survivor, once the dead host's lease has run out. The recovery times are
measured, printed and bounded.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from telnyx_flask.event_stream import parse_stream_id

from .helpers import app_settings, wait_until
from .servers import SIM_PUBLIC_KEY, SIM_SEED, Gunicorn, Simulator
from .sse_client import Frame, SseClient
from .tcp_balancer import TcpBalancer

pytestmark = pytest.mark.ha

RECOVERY_LIMIT_SECONDS = 30
OUTBOX_LEASE_SECONDS = 3
CLOCKS = {
    # Owed commands are retried quickly, and a dead sender's lease runs out in seconds.
    "OUTBOX_BACKOFF_SECONDS": "0.2",
    "OUTBOX_MAX_BACKOFF_SECONDS": "1",
    "OUTBOX_LEASE_SECONDS": str(OUTBOX_LEASE_SECONDS),
    # The calls ring for the whole drill: no ring timeout rejects them meanwhile.
    "RING_TIMEOUT_SECONDS": "300",
}
# The request line of a Call Control command, as it passes through a host's egress.
COMMAND = re.compile(rb"POST /v2/calls/([^/ ]+)/actions/([a-z_]+) ")
SESSION_REVOKED = "session.revoked"  # on the stream for the workers, never sent to a page


class Host:
    """One gunicorn "host" (master and two workers) and its own way out to Telnyx."""

    def __init__(self, name: str, settings: dict[str, str], simulator_port: int):
        self.name = name
        self.commands: list[tuple[str, str]] = []  # (call_control_id, action) sent to Telnyx
        self.egress = TcpBalancer([simulator_port], tap=self._carried)
        self.server = Gunicorn({**settings, "TELNYX_API_BASE": f"{self.egress.url}/v2"})
        self.port = self.server.port

    def _carried(self, backend: int, chunk: bytes) -> None:
        self.commands += [(c.decode(), a.decode()) for c, a in COMMAND.findall(chunk)]

    def sent(self, call: str, action: str) -> int:
        """How many `action` requests for `call` this host has sent to Telnyx."""
        return self.commands.count((call, action))

    def kill(self) -> list[int]:
        """SIGKILL the master, then every worker it had: nothing of this host goes on."""
        master = self.server.process
        victims = [master.pid, *self.server.worker_pids()]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        master.wait(timeout=10)
        return victims


def running(pid: int) -> bool:
    """True while any thread of the process is alive, not a zombie (Linux /proc): a killed
    process's files, its listening socket among them, close only when its last thread exits."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
        except OSError:
            continue
    return False


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


class Page:
    """An agent's page: its event stream through the balancer, every event it got kept."""

    def __init__(self, balancer: TcpBalancer, agent):
        self.balancer = balancer
        self.agent = agent
        self.client = self._open(None)
        self.snapshot = self.client.next_event()
        assert self.snapshot.event == "snapshot"
        self.last_id = self.snapshot.id
        self.events: list[Frame] = []
        self.reconnections = 0

    def _open(self, last_event_id: str | None) -> SseClient:
        headers = {"Authorization": self.agent.headers["Authorization"]}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        client = SseClient(f"{self.balancer.url}/api/telnyx/events", headers)
        assert client.status == 200, client.status
        self.host = self.balancer.backend_of(client.sock)
        return client

    def read(self, until, within: float, what: str) -> Frame:
        """Events, each kept, until one for which `until` holds."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            self.client.sock.settimeout(left)
            try:
                frame = self.client.next_event(within=left)
            except TimeoutError:
                break
            self.events.append(frame)
            self.last_id = frame.id or self.last_id
            if until(frame):
                return frame
        raise AssertionError(f"{self.agent.name}'s page: not within {within} s: {what}")

    def read_until_cut(self, within: float) -> None:
        """Keep what still arrives until the connection is cut (its host died)."""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            self.client.sock.settimeout(left)
            try:
                frame = self.client.next_frame()
            except TimeoutError:
                break
            except OSError:
                return  # closed or reset: the host is gone
            if frame.event:
                self.events.append(frame)
                self.last_id = frame.id or self.last_id
        raise AssertionError(f"{self.agent.name}'s page was not cut within {within} s")

    def reconnect(self) -> None:
        """Open the stream again, as the browser does, with the last id it saw."""
        self.client.close()
        self.client = self._open(self.last_id)
        self.reconnections += 1

    def close(self) -> None:
        self.client.close()


def rings(call: str):
    return lambda frame: frame.event == "call.ringing" and frame.json["call_control_id"] == call


def reached(stream_id: str):
    return lambda frame: (parse_stream_id(frame.id) or (0, 0)) >= parse_stream_id(stream_id)


def press_together(balancer: TcpBalancer, call: str, agents: list) -> list[tuple[int, int]]:
    """Every agent presses Answer at once, each on a new connection through the balancer:
    (status, backend port) for each press."""
    start = threading.Barrier(len(agents))

    def press(agent) -> tuple[int, int]:
        conn = http.client.HTTPConnection("127.0.0.1", balancer.port, timeout=30)
        try:
            conn.connect()
            client_address = conn.sock.getsockname()[:2]
            start.wait(timeout=10)
            conn.request("POST", f"/api/telnyx/calls/{call}/answer", headers=agent.headers)
            response = conn.getresponse()
            response.read()
            return response.status, balancer.routes[client_address]
        finally:
            conn.close()

    with ThreadPoolExecutor(len(agents)) as pool:
        return list(pool.map(press, agents))


@pytest.fixture
def two_hosts(database_url, redis_prefix, clean_storage):
    """The simulator, hosts A and B (same database, Redis prefix and secret key) and the
    balancer in front of them, which the simulator sends its webhooks to."""
    simulator = Simulator(base64.b64encode(SIM_SEED).decode())
    hosts: list[Host] = []
    balancer = None
    try:
        settings = app_settings(database_url, redis_prefix, simulator.api_base)
        settings.update(
            TELNYX_PUBLIC_KEY=SIM_PUBLIC_KEY,
            TELNYX_SIMULATOR_URL=simulator.url,
            RECORDING_HOSTS=simulator.url,
            BACKGROUND_TASKS="true",
            **CLOCKS,
        )
        simulator_port = urlsplit(simulator.url).port
        hosts = [Host(name, settings, simulator_port) for name in ("A", "B")]
        for host in hosts:
            host.server.wait_ready()
        balancer = TcpBalancer([host.port for host in hosts])
        simulator.webhooks_to(f"{balancer.url}/api/telnyx/webhook")
        yield simulator, balancer, hosts
    finally:
        if balancer is not None:
            balancer.close()
        for host in hosts:
            host.server.stop()
            host.egress.close()
        simulator.stop()


def test_a_host_killed_under_ringing_calls_and_open_pages_loses_nothing(
    two_hosts, make_agent, redis_client, redis_prefix, db_rows
):
    sim, balancer, hosts = two_hosts
    agents = [make_agent(name) for name in ("Alice", "Bob", "Carol", "Dave")]
    ringing = [sim.call(), sim.call()]
    raced = sim.call()
    sim.wait_delivered()

    # Pages of Alice and Bob, each agent with a page on each host.
    pages: list[Page] = []
    try:
        for agent in agents[:2]:
            on = set()
            while on != {host.port for host in hosts}:
                assert len([p for p in pages if p.agent is agent]) < 6, "the balancer is stuck"
                pages.append(Page(balancer, agent))
                on.add(pages[-1].host)
        for page in pages:
            listed = {call["call_control_id"] for call in page.snapshot.json["calls"]}
            assert listed == {*ringing, raced}

        # Telnyx will hold up the answered call's record_start, then refuse it.
        sim.delay("record_start", 2)
        sim.refuse("record_start", 503)

        # Four agents race for one call, their presses spread over both hosts: one wins.
        presses = press_together(balancer, raced, agents)
        assert sorted(status for status, _ in presses) == [200, 409, 409, 409], presses
        assert {backend for _, backend in presses} == {host.port for host in hosts}

        # call.answered left record_start owed; a worker is sending it and Telnyx holds it.
        [held] = sim.delayed(wait_for=1, timeout=RECOVERY_LIMIT_SECONDS)
        assert (held["action"], held["call_control_id"]) == ("record_start", raced)
        [victim] = [host for host in hosts if host.sent(raced, "record_start")]
        [survivor] = [host for host in hosts if host is not victim]
        on_victim = [page for page in pages if page.host == victim.port]

        # The host sending it dies whole, in mid-request, while calls ring and pages are open.
        killed_wall = time.time()
        killed_at = time.monotonic()
        processes = victim.kill()
        wait_until(lambda: not any(map(running, processes)), 10, "every process of the host gone")
        assert refuses_connections(victim.port)

        # Its pages are cut; the survivor's stay open.
        for page in on_victim:
            page.read_until_cut(within=10)
        # A call rings while those pages are away: the survivor announces it.
        away = sim.call()
        for page in pages:
            if page.host == survivor.port:
                page.read(rings(away), RECOVERY_LIMIT_SECONDS, "the call ringing while away")
        # The cut pages reconnect through the balancer with their Last-Event-ID, land on the
        # survivor, and are replayed what they missed.
        for page in on_victim:
            page.reconnect()
            assert page.host == survivor.port
            page.read(rings(away), RECOVERY_LIMIT_SECONDS, "the missed call, replayed")
        resumed_after = time.monotonic() - killed_at

        # A call rung now reaches every page, live.
        later = sim.call()
        for page in pages:
            page.read(rings(later), RECOVERY_LIMIT_SECONDS, "the new call ringing")

        # The answer race still has one winner, now all on the survivor.
        presses = press_together(balancer, later, agents)
        assert sorted(status for status, _ in presses) == [200, 409, 409, 409], presses
        assert {backend for _, backend in presses} == {survivor.port}

        # The owed record_start went out, once, from the survivor once the dead host's lease ran
        # out: the dead host's attempt was refused, so only the survivor's took effect.
        commands = sim.commands("record_start", raced, wait_for=2, timeout=RECOVERY_LIMIT_SECONDS)
        assert sorted(c["status"] for c in commands) == [200, 503], commands
        assert len({c["body"]["command_id"] for c in commands}) == 1
        [accepted] = [c for c in commands if c["status"] == 200]
        assert not accepted["duplicate"]
        received = datetime.strptime(accepted["received_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        owed_after = received.replace(tzinfo=UTC).timestamp() - killed_wall
        assert (victim.sent(raced, "record_start"), survivor.sent(raced, "record_start")) == (1, 1)
        # The survivor records it as sent once Telnyx's answer reaches it: two attempts in all.
        outbox_row = wait_until(
            lambda: db_rows(
                "SELECT outcome, attempts FROM telnyx_outbox"
                " WHERE call_control_id = %s AND action = 'record_start' AND done_at IS NOT NULL",
                (raced,),
            ),
            RECOVERY_LIMIT_SECONDS,
            "record_start recorded as done",
        )
        assert outbox_row == [{"outcome": "sent", "attempts": 2}]

        # Nothing missing anywhere: each page got every entry of the event stream after its
        # snapshot, in order and once, across the reconnection (replay and live seam included).
        sim.wait_delivered()
        key = f"{redis_prefix}events"
        [(newest, _)] = redis_client.xrevrange(key, count=1)
        for page in pages:
            if page.last_id != newest:
                page.read(reached(newest), RECOVERY_LIMIT_SECONDS, f"entry {newest}")
            expected = [
                entry_id
                for entry_id, fields in redis_client.xrange(
                    key, min=f"({page.snapshot.id}", max=newest
                )
                if fields["event"] != SESSION_REVOKED
            ]
            assert [frame.id for frame in page.events] == expected, page.agent.name
            assert not {f.event for f in page.events} & {"reset", "snapshot"}
    finally:
        for page in pages:
            page.close()

    print(
        f"\nhost {victim.name} SIGKILLed (master and 2 workers) sending record_start, with "
        f"{len(on_victim)} of {len(pages)} pages on it: every page reconnected and resumed after "
        f"{resumed_after:.1f} s; the owed record_start reached Telnyx from host {survivor.name} "
        f"after {owed_after:.1f} s (lease {OUTBOX_LEASE_SECONDS} s)"
    )
    assert resumed_after < RECOVERY_LIMIT_SECONDS
    assert owed_after < RECOVERY_LIMIT_SECONDS
