"""A real three-master Redis Cluster on loopback for tests: redis-server from the PATH, nothing
kept on disk, torn down with everything it made."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from telnyx_flask.embedded import free_port

MASTERS = 3


class RedisClusterUnavailable(RuntimeError):
    """redis-server or redis-cli is not on the PATH."""


class RedisClusterFailed(RuntimeError):
    """The cluster did not come up; the message carries the nodes' logs."""


class LocalRedisCluster:
    """`redis-server --cluster-enabled yes` x3, joined by `redis-cli --cluster create`."""

    def __init__(self, masters: int = MASTERS):
        self.server = shutil.which("redis-server")
        self.cli = shutil.which("redis-cli")
        if self.server is None or self.cli is None:
            raise RedisClusterUnavailable("redis-server and redis-cli are not on the PATH")
        self.workdir = Path(tempfile.mkdtemp(prefix="telnyx-flask-cluster-"))
        self.ports = [free_port() for _ in range(masters)]
        # Named, not the default port + 10000, which may be taken or past 65535.
        self.bus_ports = [free_port() for _ in range(masters)]
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """What REDIS_URL names: any one node of the cluster."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def nodes(self) -> list[redis.Redis]:
        """A plain client per node, for CLUSTER INFO, CLUSTER KEYSLOT and FLUSHALL."""
        return [
            redis.Redis(host="127.0.0.1", port=port, decode_responses=True) for port in self.ports
        ]

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        """Start the nodes, join them into one cluster, and wait until every node says ok."""
        try:
            for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
                self.processes.append(self._start_node(port, bus_port))
            self._wait(lambda node: node.ping(), timeout, "the nodes to answer")
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            created = subprocess.run(
                [self.cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=timeout,
            )  # fmt: skip
            if created.returncode != 0:
                raise RedisClusterFailed(f"redis-cli --cluster create: {created.stdout}")
            self._wait(
                lambda node: node.cluster("info")["cluster_state"] == "ok",
                timeout,
                "cluster_state:ok on every node",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, port: int, bus_port: int) -> subprocess.Popen:
        node_dir = self.workdir / str(port)
        node_dir.mkdir()
        return subprocess.Popen(
            [
                self.server,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus_port),
                "--cluster-config-file", "nodes.conf",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(node_dir),
                "--logfile", str(node_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        clients = self.nodes()
        try:
            while True:
                if any(process.poll() is not None for process in self.processes):
                    raise RedisClusterFailed(f"a node exited while starting\n{self.logs()}")
                try:
                    if all(ready(node) for node in clients):
                        return
                except (redis.ConnectionError, redis.ResponseError, KeyError):
                    pass  # not listening yet, or not joined yet
                if time.monotonic() > deadline:
                    raise RedisClusterFailed(f"timed out waiting for {what}\n{self.logs()}")
                time.sleep(0.05)
        finally:
            for node in clients:
                node.close()

    def logs(self) -> str:
        """The end of every node's log, for a failure's message."""
        tails = []
        for port in self.ports:
            log = self.workdir / str(port) / "redis.log"
            lines = log.read_text().splitlines()[-15:] if log.exists() else []
            tails.append(f"--- node {port}\n" + "\n".join(lines))
        return "\n".join(tails)

    def flush(self) -> None:
        """Empty every node (each master holds only its own slots)."""
        for node in self.nodes():
            with node:
                node.flushall()

    def stop(self) -> None:
        """Stop every node and delete their directories."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        shutil.rmtree(self.workdir, ignore_errors=True)
