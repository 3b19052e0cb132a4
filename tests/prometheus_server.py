"""A real Prometheus (Debian's `prometheus` package) scraping a test's gunicorn.

Started on a free loopback port with its storage in a temporary folder, scraping the service's
/metrics and evaluating the alerting rules every second; the rules are a copy of
prometheus/alerts.yml with every `for:` shortened, since a test cannot wait minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from telnyx_flask.embedded import free_port

from .servers import wait_http_ready

ROOT = Path(__file__).parent.parent
ALERTS_FILE = ROOT / "prometheus" / "alerts.yml"
PROMETHEUS = (
    os.environ.get("PROMETHEUS_PATH") or shutil.which("prometheus") or "/usr/bin/prometheus"
)


def prometheus_missing_message() -> str:
    return (
        f"Prometheus is not at {PROMETHEUS}: install Debian's prometheus package "
        "(apt-get install prometheus) or set PROMETHEUS_PATH; .ci/run installs it"
    )


def shortened_rules(source: Path, target: Path, hold: str) -> list[str]:
    """Copy alerting rules with every `for:` (and `keep_firing_for:`) set to `hold`; the names
    of the alerts copied."""
    assert source.exists(), f"{source} is missing: the alerting rules the test loads"
    rules = yaml.safe_load(source.read_text())
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = hold
            if "alert" in rule:
                names.append(rule["alert"])
    target.write_text(yaml.safe_dump(rules, sort_keys=False))
    return names


class PrometheusError(AssertionError):
    """Prometheus answered a query with an error."""


class Prometheus:
    """`prometheus` scraping `target` (host:port) every `interval`, with the rules in
    `rule_files`; stop() ends it and removes its storage."""

    def __init__(
        self,
        target: str,
        rule_files: list[Path] | None = None,
        interval: str = "1s",
        job: str = "telnyx-flask",
    ):
        assert os.path.exists(PROMETHEUS), prometheus_missing_message()
        self.folder = Path(tempfile.mkdtemp(prefix="telnyx-flask-prometheus-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.job = job
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [str(path) for path in rule_files or []],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        self.config_file = self.folder / "prometheus.yml"
        self.config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop())
        self.http = requests.Session()
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Console templates are not used; Debian's defaults point under /etc.
                f"--web.console.templates={self.folder}",
                f"--web.console.libraries={self.folder}",
            ],
            cwd=self.folder,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once /-/ready answers 200 (the storage is open and the rules are loaded)."""
        wait_http_ready(
            "prometheus", self.process, f"{self.url}/-/ready", self.read_output, timeout
        )

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; its `data`, or PrometheusError with Prometheus's message."""
        response = self.http.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result: a list of {"metric": {...}, "value": [t, "v"]} (a scalar
        comes back as one such entry with no labels)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", **params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query's values, keyed by sorted labels."""
        return {
            tuple(sorted(entry["metric"].items())): float(entry["value"][1])
            for entry in self.query(expr)
        }

    def value(self, expr: str) -> float | None:
        """The one value an instant query returns; None when it returns nothing."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} returned {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """A range query's series: [{"metric": {...}, "values": [[t, "v"], ...]}, ...]."""
        data = self.api("query_range", query=expr, start=start, end=end, step=step)
        return data["result"]

    def alerts(self) -> dict[str, str]:
        """Active alerts by name, with their state ("pending" or "firing")."""
        states: dict[str, str] = {}
        for alert in self.api("alerts")["alerts"]:
            name = alert["labels"]["alertname"]
            # Several series of one alert: firing wins over pending.
            if states.get(name) != "firing":
                states[name] = alert["state"]
        return states

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule, with its group, health and last error."""
        return [
            {**rule, "group": group["name"]}
            for group in self.api("rules")["groups"]
            for rule in group["rules"]
        ]

    def wait_until(self, check, timeout: float, what: str):
        """Poll `check()` (a query against Prometheus) until it returns something true."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.25)  # polling Prometheus's API: there is nothing to block on
        raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")

    def wait_scraped(self, samples: int = 2, timeout: float = 30.0) -> None:
        """Block until the target is up and has been scraped `samples` times."""
        expr = f'count_over_time(up{{job="{self.job}"}}[1m])'
        self.wait_until(
            lambda: (
                (self.value(f'up{{job="{self.job}"}}') == 1) and (self.value(expr) or 0) >= samples
            ),
            timeout,
            f"{samples} successful scrapes of the service",
        )

    def read_output(self) -> str:
        self.output.seek(0)
        return self.output.read()

    def stop(self) -> str:
        """SIGTERM, wait, remove the storage; what Prometheus printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        output = self.read_output()
        self.output.close()
        self.http.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        return output

    def __enter__(self) -> Prometheus:
        self.wait_ready()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
