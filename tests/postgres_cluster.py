"""A throwaway PostgreSQL cluster a test may restart, and PgBouncer in front of it.

`LocalPostgres` is initdb into a temporary folder and pg_ctl on a free loopback port (as the
`postgres` OS user when the tests run as root: initdb and postgres refuse root), with the
service's role and database migrated through the direct URL. Its default time zone is not UTC,
so a test sees whether the service sets UTC itself. `LocalPgBouncer` runs pgbouncer in
transaction mode before it. Both are torn down with everything they made. Missing binaries are
an error, not a skip: CI installs them (.ci/run).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2

from telnyx_flask.embedded import free_port
from telnyx_flask.migrations import upgrade

ROLE = "telnyx"
DATABASE = "telnyx"
# Not UTC, so that a connection left on the server's default shows it.
SERVER_TIME_ZONE = "Pacific/Auckland"


class MissingBinary(RuntimeError):
    """A PostgreSQL or PgBouncer program is not installed."""


def postgres_bin_dir() -> Path:
    """The folder of initdb and pg_ctl: PG_BINDIR, Debian's newest, pg_config's, or the PATH."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(result.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        if (
            candidate
            and (Path(candidate) / "initdb").exists()
            and (Path(candidate) / "pg_ctl").exists()
        ):
            return Path(candidate)
    raise MissingBinary(
        "initdb and pg_ctl not found (looked in PG_BINDIR, /usr/lib/postgresql/*/bin, pg_config "
        "--bindir, the PATH): install PostgreSQL's server package"
    )


def pgbouncer_binary() -> str:
    """pgbouncer from the PATH, or Debian's /usr/sbin/pgbouncer (not on a user's PATH)."""
    for candidate in (
        shutil.which("pgbouncer"),
        "/usr/sbin/pgbouncer",
        "/usr/local/sbin/pgbouncer",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise MissingBinary("pgbouncer not found: apt-get install -y pgbouncer (.ci/run does)")


def _as_root() -> bool:
    return os.geteuid() == 0


def _own(path: Path) -> None:
    """Hand a folder to the postgres OS user when running as root."""
    if _as_root():
        shutil.chown(path, "postgres", "postgres")


def _run(command: list[str], timeout: float = 60) -> str:
    """Run a PostgreSQL program (as postgres when root); its output, or an error carrying it."""
    if _as_root():
        command = ["runuser", "-u", "postgres", "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}): {result.stdout}{result.stderr}"
        )
    return result.stdout


def _wait_connectable(url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not accept connections: {exc}") from exc
        time.sleep(0.05)  # waiting for a port to open; there is nothing to block on


class LocalPostgres:
    """A cluster of its own: started, restarted and stopped with pg_ctl."""

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.workdir = Path(tempfile.mkdtemp(prefix="telnyx-flask-pg-"))
        _own(self.workdir)
        self.data = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self.port = free_port()
        self.started = False

    def url(self, user: str = ROLE, database: str = DATABASE) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def admin_url(self) -> str:
        return self.url("postgres", "postgres")

    def start(self) -> LocalPostgres:
        """initdb, configure, start; create the service's role and database; migrate it."""
        try:
            _run(
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--no-sync"]
            )  # fmt: skip
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.workdir}'\n"
                    f"timezone = '{SERVER_TIME_ZONE}'\nmax_connections = 100\n"
                    "shared_buffers = 32MB\n"
                )
            self.pg_ctl("start")
            self.started = True
            admin = psycopg2.connect(self.admin_url, connect_timeout=5)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f"CREATE ROLE {ROLE} LOGIN")
                cur.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
            admin.close()
            # Migrations take a session-level advisory lock: always the direct URL.
            upgrade(self.url())
        except BaseException:
            self.stop()
            raise
        return self

    def pg_ctl(self, action: str, *args: str) -> None:
        """pg_ctl start/stop/restart, waiting until it is done (-w)."""
        _run(
            [str(self.bin / "pg_ctl"), action, "-w", "-t", "60", "-D", str(self.data),
             "-l", str(self.log), *args]
        )  # fmt: skip

    def restart(self) -> None:
        """Fast restart: every session is ended, then the server accepts connections again."""
        self.pg_ctl("restart", "-m", "fast")

    def execute(self, sql: str, params: tuple = (), url: str | None = None) -> list[tuple]:
        """Run one statement as the superuser on the service's database; its rows, if any."""
        conn = psycopg2.connect(url or self.url("postgres"), connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        if self.started:
            with contextlib.suppress(RuntimeError):  # already stopped: nothing left to do
                self.pg_ctl("stop", "-m", "immediate")
            self.started = False
        shutil.rmtree(self.workdir, ignore_errors=True)


class LocalPgBouncer:
    """pgbouncer in transaction mode before a LocalPostgres, with its own ini and userlist."""

    def __init__(self, postgres: LocalPostgres, pool_size: int = 3) -> None:
        self.binary = pgbouncer_binary()
        self.postgres = postgres
        self.pool_size = pool_size
        self.workdir = Path(tempfile.mkdtemp(prefix="telnyx-flask-pgbouncer-"))
        _own(self.workdir)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, user: str = ROLE, database: str = DATABASE) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> LocalPgBouncer:
        ini = self.workdir / "pgbouncer.ini"
        userlist = self.workdir / "userlist.txt"
        userlist.write_text(f'"{ROLE}" ""\n"postgres" ""\n')
        # No ignore_startup_parameters: a client that sends `options` is refused, not silently
        # stripped of its settings.
        ini.write_text(
            "[databases]\n"
            f"{DATABASE} = host=127.0.0.1 port={self.postgres.port} dbname={DATABASE}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {userlist}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\nmax_client_conn = 500\n"
            f"logfile = {self.workdir / 'pgbouncer.log'}\n"
            "server_login_retry = 1\nquery_wait_timeout = 10\n"
        )
        for path in (ini, userlist):
            _own(path)
        command = [self.binary, str(ini)]
        if _as_root():
            command = [self.binary, "-u", "postgres", str(ini)]  # pgbouncer refuses root
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir
        )
        try:
            _wait_connectable(self.url(), 15, f"pgbouncer on port {self.port} ({self.log_text()})")
        except BaseException:
            self.stop()
            raise
        return self

    def log_text(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
