"""Real servers for tests: the app under gunicorn with gevent workers."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests
from nacl.signing import SigningKey

from telnyx_flask.embedded import free_port

from .helpers import app_settings

ROOT = Path(__file__).parent.parent


def wait_http_ready(
    name: str,
    process: subprocess.Popen,
    url: str,
    read_output: Callable[[], str],
    timeout: float = 30.0,
) -> None:
    """Return once GET `url` answers 200; RuntimeError with what process `name` printed if it
    exits first or does not get there within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {read_output()}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.1)  # waiting for a port to open; there is nothing to block on
    raise RuntimeError(f"{name} did not become ready at {url}: {read_output()}")


class Gunicorn:
    """`gunicorn --config gunicorn.conf.py wsgi:app` with the given settings, as a subprocess."""

    def __init__(
        self,
        settings: dict[str, str],
        workers: int = 2,
        port: int | None = None,
        *,
        dotenv_path: str = "/nonexistent",
    ):
        self.settings = settings
        self.dotenv_path = dotenv_path
        self.workers = workers
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TELNYX_", "DB_", "REDIS_", "DATABASE_URL", "APP_ENV"))
        }
        env.update({key: value for key, value in settings.items() if isinstance(value, str)})
        env.update(PORT=str(self.port), WEB_CONCURRENCY=str(workers), DOTENV_PATH=dotenv_path)
        # A file, not a pipe: nobody reads a pipe until stop(), and a full one would block the
        # workers' log writes (every request logs a line).
        self.output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed with the object)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once /readyz answers 200 (the workers have booted and reach both stores)."""
        wait_http_ready("gunicorn", self.process, f"{self.url}/readyz", self.read_output, timeout)

    def stop(self) -> str:
        """SIGTERM, wait, and return what gunicorn printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.read_output()

    def read_output(self) -> str:
        """What gunicorn and the app printed so far."""
        self.output.seek(0)
        return self.output.read()

    def restarted(self) -> Gunicorn:
        """A new gunicorn with the same settings on the same port (call stop() first)."""
        server = Gunicorn(
            self.settings, workers=self.workers, port=self.port, dotenv_path=self.dotenv_path
        )
        server.wait_ready()
        return server

    def __enter__(self) -> Gunicorn:
        self.wait_ready()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def worker_pids(self) -> list[int]:
        """The worker processes (the master's children), from /proc (Linux)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    pids.append(int(entry.name))
        return pids


class Simulator:
    """`python -m telnyx_flask.simulator` on a free port, signing with `seed`."""

    def __init__(self, seed_b64: str):
        env = {key: value for key, value in os.environ.items() if not key.startswith("SIM_")}
        env["SIM_SIGNING_SEED"] = seed_b64
        self.process = subprocess.Popen(
            [sys.executable, "-m", "telnyx_flask.simulator", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        # The first line names its address: "Telnyx simulator on http://127.0.0.1:PORT ...".
        line = self.process.stdout.readline()
        if "Telnyx simulator on " not in line:
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line.split("Telnyx simulator on ", 1)[1].split()[0]
        self.api_base = f"{self.url}/v2"
        self.http = requests.Session()

    def webhooks_to(self, url: str) -> None:
        """Send webhooks to this URL from now on."""
        self.http.post(f"{self.url}/sim/delivery", json={"webhook_url": url}, timeout=5)

    def reset(self) -> None:
        """Forget every call, command and delivery setting."""
        self.http.post(f"{self.url}/sim/reset", timeout=5).raise_for_status()

    def call(self, from_: str = "+13125550147", to: str = "+14155550123", **extra) -> str:
        """Start an inbound call; return the caller leg's call_control_id."""
        response = self.http.post(
            f"{self.url}/sim/calls", json={"from": from_, "to": to, **extra}, timeout=5
        )
        response.raise_for_status()
        return response.json()["call_control_id"]

    def caller_hangs_up(self, call_control_id: str, deliver: bool = True) -> None:
        """The caller puts the phone down; with deliver=False no webhook ever tells of it."""
        self.http.post(
            f"{self.url}/sim/calls/{call_control_id}/hangup",
            json={"deliver": deliver},
            timeout=5,
        ).raise_for_status()

    def refuse(
        self,
        action: str,
        status: int,
        detail: str = "refused by the simulator",
        *,
        code: str | None = None,
        times: int = 1,
    ) -> None:
        """Telnyx answers the next `times` `action` commands (or "status" lookups) with this."""
        body = {"action": action, "status": status, "detail": detail, "times": times}
        if code is not None:
            body["code"] = code
        self.http.post(f"{self.url}/sim/refusals", json=body, timeout=5).raise_for_status()

    def delay(self, action: str, seconds: float, times: int = 1) -> None:
        """Telnyx takes `seconds` over each of the next `times` `action` commands (or "status")."""
        self.http.post(
            f"{self.url}/sim/delays",
            json={"action": action, "seconds": seconds, "times": times},
            timeout=5,
        ).raise_for_status()

    def delayed(self, wait_for: int | None = None, timeout: float = 20) -> list[dict]:
        """Requests held back by delay(); with wait_for, block until that many have been."""
        params = {} if wait_for is None else {"wait_for": wait_for, "timeout": timeout}
        response = self.http.get(f"{self.url}/sim/delays", params=params, timeout=timeout + 5)
        assert response.status_code == 200, response.text
        return response.json()["delayed"]

    def call_status(self, call_control_id: str) -> dict:
        """GET /v2/calls/<id> as the service sends it: {"data": {...}} or {"errors": [...]}."""
        response = self.http.get(
            f"{self.api_base}/calls/{call_control_id}",
            headers={"Authorization": "Bearer KEY_TEST"},
            timeout=5,
        )
        return response.json()

    def wait_delivered(self, timeout: float = 20) -> None:
        """Block until every webhook queued so far has been delivered."""
        response = self.http.get(
            f"{self.url}/sim/deliveries", params={"wait_idle": timeout}, timeout=timeout + 5
        )
        assert response.status_code == 200, response.text

    def commands(
        self,
        action: str | None = None,
        call_control_id: str | None = None,
        wait_for: int | None = None,
        timeout: float = 20,
    ) -> list[dict]:
        """Commands the simulator received; with wait_for, block until that many arrived."""
        params = {"action": action or "", "call_control_id": call_control_id or ""}
        if wait_for is not None:
            params.update(wait_for=wait_for, timeout=timeout)
        response = self.http.get(f"{self.url}/sim/commands", params=params, timeout=timeout + 5)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


SIM_SEED = bytes([42]) * 32
SIM_PUBLIC_KEY = base64.b64encode(bytes(SigningKey(SIM_SEED).verify_key)).decode()


def start_stack(
    database_url: str, redis_prefix: str, workers: int, **overrides: str
) -> tuple[Simulator, Gunicorn]:
    """The simulator, and gunicorn configured to use it as Telnyx (and offer its test calls)."""
    simulator = Simulator(base64.b64encode(SIM_SEED).decode())
    settings = app_settings(database_url, redis_prefix, simulator.api_base)
    settings.update(
        TELNYX_PUBLIC_KEY=SIM_PUBLIC_KEY,
        TELNYX_SIMULATOR_URL=simulator.url,
        # The simulator serves the recordings; in production only listed hosts are fetched.
        RECORDING_HOSTS=simulator.url,
        BACKGROUND_TASKS="true",
        **overrides,
    )
    port = free_port()
    simulator.webhooks_to(f"http://127.0.0.1:{port}/api/telnyx/webhook")
    try:
        server = Gunicorn(settings, workers=workers, port=port)
        server.wait_ready()
    except Exception:
        simulator.stop()
        raise
    return simulator, server


@contextlib.contextmanager
def running_stack(
    database_url: str, redis_prefix: str, workers: int, **overrides: str
) -> Iterator[tuple[Simulator, Gunicorn]]:
    """start_stack for a module's tests, stopped after them."""
    simulator, server = start_stack(database_url, redis_prefix, workers, **overrides)
    try:
        yield simulator, server
    finally:
        server.stop()
        simulator.stop()


def ready_simulator(stack: tuple[Simulator, Gunicorn]) -> Simulator:
    """The stack's simulator with nothing left from earlier tests, sending to the stack."""
    simulator, server = stack
    simulator.reset()
    simulator.webhooks_to(f"{server.url}/api/telnyx/webhook")
    return simulator
