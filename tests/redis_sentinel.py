"""A real Redis primary, its replica and three sentinels on loopback for the failover drill:
`redis-server` and `redis-server --sentinel` from the PATH (Debian's redis-server package has
both), nothing kept on disk, torn down with everything it made."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from telnyx_flask.embedded import free_port

from .tcp_proxy import TcpProxy

MASTER_NAME = "telnyx-flask"
SENTINELS = 3
# How long the sentinels wait before they call a silent primary down, and a failover's limit.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelUnavailable(RuntimeError):
    """redis-server is not on the PATH."""


class SentinelFailed(RuntimeError):
    """The set did not come up; the message carries the logs."""


class LocalRedisSentinel:
    """A primary, one replica, and three sentinels (quorum 2) watching them."""

    def __init__(self) -> None:
        self.server = shutil.which("redis-server")
        if self.server is None:
            raise SentinelUnavailable("redis-server is not on the PATH")
        self.workdir = Path(tempfile.mkdtemp(prefix="telnyx-flask-sentinel-"))
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.processes: dict[str, subprocess.Popen] = {}
        self.link = TcpProxy(("127.0.0.1", self.primary_port))

    @property
    def sentinels(self) -> str:
        """What REDIS_SENTINELS says."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self, timeout: float = 30.0) -> LocalRedisSentinel:
        """Start the primary, the replica (in sync) and the sentinels (each seeing the others)."""
        try:
            self.processes["primary"] = self._redis("primary", self.primary_port)
            # The replica follows the primary through a proxy, so a test can cut the link.
            self.processes["replica"] = self._redis(
                "replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.link.port)
            )
            self._wait(self._replica_in_sync, timeout, "the replica to sync")
            for index, port in enumerate(self.sentinel_ports):
                self.processes[f"sentinel{index}"] = self._sentinel(index, port)
            self._wait(self._sentinels_see_everyone, timeout, "the sentinels to find each other")
        except BaseException:
            self.stop()
            raise
        return self

    def _redis(self, name: str, port: int, *extra: str) -> subprocess.Popen:
        directory = self.workdir / name
        directory.mkdir(exist_ok=True)
        return subprocess.Popen(
            [
                self.server,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
                "--logfile", str(directory / "redis.log"),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def _sentinel(self, index: int, port: int) -> subprocess.Popen:
        directory = self.workdir / f"sentinel{index}"
        directory.mkdir()
        config = directory / "sentinel.conf"  # a sentinel rewrites its own file
        config.write_text(
            f"bind 127.0.0.1\nport {port}\ndir {directory}\nlogfile {directory / 'redis.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        return subprocess.Popen(
            [self.server, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2)

    def _replica_in_sync(self) -> bool:
        with self.client(self.replica_port) as replica:
            info = replica.info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_see_everyone(self) -> bool:
        for port in self.sentinel_ports:
            with self.client(port) as sentinel:
                master = sentinel.sentinel_master(MASTER_NAME)
            if master["num-other-sentinels"] < SENTINELS - 1 or master["num-slaves"] < 1:
                return False
        return True

    def primary_address(self) -> tuple[str, int]:
        """Where the sentinels say the primary is now."""
        with self.client(self.sentinel_ports[0]) as sentinel:
            host, port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
        return host, int(port)

    def kill_primary(self) -> None:
        """SIGKILL the process that is the primary now."""
        _, port = self.primary_address()
        name = "primary" if port == self.primary_port else "replica"
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def cut_replication(self) -> None:
        """Cut the replica off the primary: what the primary writes from now on, the replica
        never gets (as when a primary dies with writes it had not passed on yet)."""
        self.link.cut()

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError, KeyError):
                pass  # not listening yet, or not configured yet
            if time.monotonic() > deadline:
                raise SentinelFailed(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.05)  # polling the processes' own state: there is nothing to wait on

    def logs(self) -> str:
        """The end of every process's log, for a failure's message."""
        tails = []
        for log in sorted(self.workdir.glob("*/redis.log")):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            tails.append(f"--- {log.parent.name}\n" + "\n".join(lines))
        return "\n".join(tails)

    def stop(self) -> None:
        """Stop every process and delete their directories."""
        self.link.close()
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = {}
        shutil.rmtree(self.workdir, ignore_errors=True)
