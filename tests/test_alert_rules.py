"""The Prometheus alert rules (prometheus/alerts.yml): promtool accepts them, its unit tests
(prometheus/alerts_test.yml) pass, and every alert says what to check first and links to its
section of docs/operations.md.

promtool comes with Debian's prometheus package (`apt-get install prometheus`; .ci/run installs
it); without it these tests fail rather than skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

# promtool steps through a week of evaluations: with the real-Prometheus tier, not the fast one.
pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "prometheus" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"

ALERTS = {
    "TelnyxFlaskWebhooksFailing",
    "TelnyxFlaskWebhooksRejected",
    "TelnyxFlaskNoWebhooks",
    "TelnyxFlaskOutboxStuck",
    "TelnyxFlaskTelnyxCircuitOpen",
    "TelnyxFlaskLiveStateRebuilt",
    "TelnyxFlaskStreamReaderLag",
    "TelnyxFlaskCallerWaitingTooLong",
    "TelnyxFlaskMissedCallsHigh",
}


def promtool() -> str:
    for candidate in (shutil.which("promtool"), "/usr/bin/promtool"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "promtool not found (looked on PATH and at /usr/bin/promtool): "
        "apt-get install -y prometheus (Debian's package ships it; .ci/run installs it)"
    )


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered -1, -2..."""
    anchors: set[str] = set()
    seen: Counter[str] = Counter()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_code or not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return anchors


def test_promtool_accepts_the_rules():
    result = run_promtool("check", "rules", str(RULES))
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool check rules failed:\n{output}"
    assert f"SUCCESS: {len(ALERTS)} rules found" in output, output


def test_promtool_unit_tests_pass():
    result = run_promtool("test", "rules", str(RULE_TESTS))
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool test rules failed:\n{output}"
    assert "SUCCESS" in output, output
    assert "FAILED" not in output, output


def test_the_alerts_are_the_agreed_ones_in_one_group():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [group["name"] for group in groups] == ["telnyx-flask"]
    names = [rule["alert"] for rule in alert_rules()]
    assert sorted(names) == sorted(ALERTS)  # each once


def test_every_alert_has_a_severity_what_to_check_and_a_runbook_section():
    anchors = github_anchors(OPERATIONS.read_text())
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"page", "ticket"}, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{name}: no summary"
        description = annotations.get("description", "")
        assert "Check first" in description, f"{name}: the description says no first check"
        url = annotations.get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md", f"{name}: runbook_url {url!r}"
        assert anchor in anchors, f"{name}: no heading in docs/operations.md for #{anchor}"


def test_every_alert_is_tested_firing_and_quiet():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == ALERTS, f"no firing case for {sorted(ALERTS - firing)}"
    assert quiet == ALERTS, f"no quiet case for {sorted(ALERTS - quiet)}"
