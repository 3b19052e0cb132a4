"""`make run`: the whole service on one machine, with embedded defaults for what is not set.

PostgreSQL: DATABASE_URL (or the seed's DB_*) when set, else an embedded server with its data in
var/postgres. Redis: REDIS_URL when set, else a redis-server on a free port (or fakeredis). Then
migrations, a demo agent and a few prospects, the Telnyx simulator unless TELNYX_API_KEY is set,
and gunicorn with two gevent workers. SECRET_KEY, when not set, is made once and kept in
var/secret.key. Ctrl-C stops everything this started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg2
import requests
from werkzeug.security import generate_password_hash

from .config import ConfigError, check_secret_key, database_url_from, load_environment
from .db import one_row
from .embedded import EmbeddedUnavailable, reachable, start_postgres, start_redis
from .migrations import create_database_if_missing, upgrade

DEMO_EMAIL = "demo@example.com"
DEMO_PROSPECTS = (
    ("Dana Whitfield", "+13125550147"),
    ("Marcus Oyelaran", "+13125550148"),
    ("Priya Raman", "+14155550190"),
    ("Tomás Ferreira", "+442079460958"),
    ("Ellen Strand", "+13035550111"),
)
READY_SECONDS = 60
SECRET_KEY_FILE = "secret.key"


class RunError(Exception):
    """Something the person running it must fix; the message says what."""


def say(message: str) -> None:
    print(f"telnyx-flask: {message}", flush=True)


def _uses_own_postgres(env: dict[str, str]) -> bool:
    return any(env.get(name, "").strip() for name in ("DATABASE_URL", "DB_HOST", "DB_NAME"))


def _postgres(env: dict[str, str], var: Path, stack: ExitStack) -> str:
    if _uses_own_postgres(env):
        url = database_url_from(env)
        say("PostgreSQL: the configured server (DATABASE_URL / DB_*)")
    else:
        server = start_postgres(var / "postgres")
        stack.callback(server.stop)
        url = server.url.replace("/postgres?", "/telnyx_flask?", 1)
        say(f"PostgreSQL: {server.description}")
    try:
        if create_database_if_missing(url):
            say("created the database")
        applied = upgrade(url)
    except psycopg2.Error as exc:
        raise RunError(f"PostgreSQL refused: {str(exc).strip()}") from exc
    if applied:
        say(f"applied migrations {', '.join(applied)}")
    return url


def _redis(env: dict[str, str], stack: ExitStack) -> str:
    if env.get("REDIS_URL", "").strip():
        say("Redis: the configured server (REDIS_URL)")
        return env["REDIS_URL"].strip()
    server = start_redis()
    stack.callback(server.stop)
    say(f"Redis: {server.description}")
    return server.url


def seed_demo(database_url: str) -> None:
    """A demo agent (its password printed once) and a few prospects, in a database without any.

    A database that already has agents or prospects (DATABASE_URL pointing at real data) gets
    nothing added.
    """
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM prospects")
        if one_row(cur)[0] == 0:
            cur.executemany(
                "INSERT INTO prospects (name, phone_number) VALUES (%s, %s)", DEMO_PROSPECTS
            )
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE lower(email) = %s) FROM users", (DEMO_EMAIL,)
        )
        agents, demo = one_row(cur)
    conn.close()
    if demo:
        say(
            f"sign in as {DEMO_EMAIL} (its password was printed when it was created; "
            f"`flask --app telnyx_flask users set-password {DEMO_EMAIL}` sets a new one)"
        )
        return
    if agents:
        say("sign in as one of the database's agents (`flask --app telnyx_flask users list`)")
        return
    password = secrets.token_urlsafe(9)
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            # A supervisor, so that the demo shows the supervisor's view (/supervisor) too.
            "INSERT INTO users (email, name, password_hash, sip_username, role)"
            " VALUES (%s, %s, %s, %s, 'supervisor')",
            (DEMO_EMAIL, "Demo Agent", generate_password_hash(password), "demoagent"),
        )
    conn.close()
    say(
        f"created the demo agent, a supervisor: email {DEMO_EMAIL}  password {password}"
        "  (shown only now; the supervisor's view is /supervisor)"
    )


def kept_secret_key(var: Path) -> str:
    """The SECRET_KEY `make run` signs with: made once, kept in var/ so sign-ins survive restarts.

    A file that is missing, unreadable or holds a weak key gets a new random one (owner-only).
    """
    path = var / SECRET_KEY_FILE
    try:
        return check_secret_key(path.read_text().strip())
    except (OSError, UnicodeDecodeError, ConfigError):
        pass
    key = secrets.token_urlsafe(32)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key


def _simulator(port: int, stack: ExitStack, var: Path) -> dict[str, str]:
    """Start the Telnyx simulator; the settings that point the service at it."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "telnyx_flask.simulator",
            "--port",
            "0",
            "--webhook-url",
            f"http://127.0.0.1:{port}/api/telnyx/webhook",
            "--signing-key-file",
            str(var / "simulator.key"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SIM_")},
        start_new_session=True,  # Ctrl-C comes to this process, which stops the children in order
    )
    stack.callback(stop_process, process)
    assert process.stdout is not None  # stdout=subprocess.PIPE
    line = process.stdout.readline()
    if "Telnyx simulator on " not in line:
        raise RunError(f"the Telnyx simulator did not start: {line.strip() or 'no output'}")
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    url = line.split("Telnyx simulator on ", 1)[1].split()[0]
    say(f"Telnyx simulator on {url} (no TELNYX_API_KEY: calls are simulated)")
    return {
        "TELNYX_API_BASE": fields["TELNYX_API_BASE"],
        "TELNYX_PUBLIC_KEY": fields["TELNYX_PUBLIC_KEY"],
        "TELNYX_API_KEY": "simulator",
        "TELNYX_SIMULATOR_URL": url,
    }


def stop_process(process: subprocess.Popen, timeout: float = 25) -> int:
    """SIGTERM (a graceful stop), wait for it, kill it if it does not stop; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _wait_ready(url: str, process: subprocess.Popen, stopping: threading.Event) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline and not stopping.is_set():
        if process.poll() is not None:
            raise RunError("gunicorn exited at start: see its messages above")
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        stopping.wait(0.2)  # the port opens when a worker has booted; nothing to block on
    if not stopping.is_set():
        raise RunError(f"the service did not become ready within {READY_SECONDS} s")


def run() -> None:
    """Start everything, wait for Ctrl-C (or a child exiting), stop everything."""
    os.environ.setdefault("APP_ENV", "development")
    env = load_environment()
    try:
        port = int(env.get("PORT") or env.get("API_PORT") or 3000)
    except ValueError:
        raise RunError("PORT must be a number") from None
    if reachable("127.0.0.1", port):
        raise RunError(
            f"port {port} is in use: stop what listens there, or run PORT=<port> make run"
        )
    var = Path(env.get("VAR_DIR") or "var").resolve()
    var.mkdir(parents=True, exist_ok=True)

    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    with ExitStack() as stack:
        service_env = {
            **env,
            "APP_ENV": env.get("APP_ENV", "development"),
            "SECRET_KEY": env.get("SECRET_KEY", "").strip() or kept_secret_key(var),
            "PORT": str(port),
            "WEB_CONCURRENCY": env.get("WEB_CONCURRENCY", "2"),
            "DATABASE_URL": _postgres(env, var, stack),
            "REDIS_URL": _redis(env, stack),
        }
        seed_demo(service_env["DATABASE_URL"])
        if env.get("TELNYX_API_KEY", "").strip():
            say(
                "TELNYX_API_KEY is set: talking to real Telnyx. Set your Call Control "
                "application's webhook URL to https://<public host>/api/telnyx/webhook "
                f"(this machine serves it on port {port}; see docs/telnyx-setup.md)"
            )
        else:
            service_env.update(_simulator(port, stack, var))
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
            cwd=Path.cwd(),  # the checkout: gunicorn.conf.py and wsgi.py
            env={**service_env, "DOTENV_PATH": "/nonexistent", "GUNICORN_GRACEFUL_TIMEOUT": "3"},
            start_new_session=True,
        )
        stack.callback(stop_process, gunicorn)
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, gunicorn, stopping)
        if not stopping.is_set():
            say(f"ready: open {url}/ in your browser (Ctrl-C stops everything)")
        while not stopping.is_set() and gunicorn.poll() is None:
            stopping.wait(0.2)  # Ctrl-C sets it; a gunicorn that dies is noticed here
        if not stopping.is_set():
            raise RunError(f"gunicorn exited with status {gunicorn.returncode}")
        say("stopping")
    say("stopped")


def main() -> int:
    try:
        run()
    except (RunError, EmbeddedUnavailable, ConfigError) as error:
        say(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
