"""Real servers for tests: the app under gunicorn with gevent workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).parent.parent


def free_port() -> int:
    """A loopback port nobody is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """`gunicorn --config gunicorn.conf.py wsgi:app` with the given settings, as a subprocess."""

    def __init__(self, settings: dict[str, str], workers: int = 2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TELNYX_", "DB_", "REDIS_", "DATABASE_URL", "APP_ENV"))
        }
        env.update({key: value for key, value in settings.items() if isinstance(value, str)})
        env.update(PORT=str(self.port), WEB_CONCURRENCY=str(workers), DOTENV_PATH="/nonexistent")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once /readyz answers 200 (the workers have booted and reach both stores)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.process.stdout.read()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.1)  # waiting for a port to open; there is nothing to block on
        raise RuntimeError("gunicorn did not become ready")

    def stop(self) -> str:
        """SIGTERM, wait, and return what gunicorn printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.stdout.read()

    def __enter__(self) -> Gunicorn:
        self.wait_ready()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
