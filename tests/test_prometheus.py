"""A real Prometheus scraping the service: the series it sees, the alerts that fire, and the
Grafana dashboard's expressions evaluated against it.

Debian's prometheus scrapes gunicorn (two gevent workers, the Telnyx simulator, a Redis of the
module's own) every second and evaluates prometheus/alerts.yml, copied with every `for:` cut to
5 s. One scenario drives the service: an answered call, an abandoned one, three that ring out
(missed), forty refused webhooks, a Redis FLUSHDB (the live state is rebuilt from PostgreSQL)
and the simulated Telnyx API answering 503 until the circuit breaker opens. The tests then ask
Prometheus's HTTP API what it saw.

`SCREENSHOT_DIR=$PWD pytest -m prometheus tests/test_prometheus.py` also saves the dashboard,
drawn from this Prometheus's data, as docs/screenshots/dashboard.png.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import psycopg2
import pytest
import redis
import requests
from playwright.sync_api import sync_playwright
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from telnyx_flask import create_app
from telnyx_flask.auth import issue_token
from telnyx_flask.embedded import start_redis
from telnyx_flask.users import Agent, create_user

from .browser import CHROMIUM, CHROMIUM_ARGS, chromium_missing_message, save_screenshot
from .helpers import TABLES, app_settings, close_app
from .prometheus_server import ALERTS_FILE, ROOT, Prometheus, shortened_rules
from .servers import running_stack
from .sse_client import SseClient

pytestmark = pytest.mark.prometheus

DASHBOARD = ROOT / "prometheus" / "grafana-dashboard.json"
ANSWER_ROUTE = "/api/telnyx/calls/<path:call_control_id>/answer"
END_ROUTE = "/api/telnyx/calls/<path:call_control_id>/end"
WEBHOOK_ROUTE = "/api/telnyx/webhook"
CIRCUIT_ALERT = "TelnyxFlaskTelnyxCircuitOpen"
REBUILT_ALERT = "TelnyxFlaskLiveStateRebuilt"
RING_TIMEOUT_SECONDS = 5
REFUSED_WEBHOOKS = 40
MISSED_CALLS = (1, 3)  # calls rung out in each round
# Grafana's variables, as the tests evaluate the dashboard: instant queries over a minute; the
# screenshot's range queries over 10 s, so that a scenario of a minute shows its shape.
CHECK_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
PICTURE_VARIABLES = {"$__rate_interval": "10s", "$__interval": "1s", "$__range": "1h"}


@pytest.fixture(scope="module")
def own_redis():
    """A Redis server for this module alone, so that FLUSHDB touches nobody else's data."""
    server = start_redis()
    yield server
    server.stop()


def empty_tables(database_url: str) -> None:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("; ".join(f"DELETE FROM {table}" for table in TABLES))
    conn.close()


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory) -> Path:
    """The workers' prometheus-client files, where the test can read each worker's counts."""
    return tmp_path_factory.mktemp("metrics")


@pytest.fixture(scope="module")
def stack(database_url, redis_prefix, own_redis, metrics_dir):
    empty_tables(database_url)
    overrides = {
        "REDIS_URL": own_redis.url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "RING_TIMEOUT_SECONDS": str(RING_TIMEOUT_SECONDS),
        "TELNYX_BREAKER_FAILURES": "5",
        # Long enough that the breaker stays open while the alert goes pending, then firing.
        "TELNYX_BREAKER_COOLDOWN_SECONDS": "120",
        "OUTBOX_BACKOFF_SECONDS": "0.2",
        "OUTBOX_MAX_BACKOFF_SECONDS": "1",
        "SSE_HEARTBEAT_SECONDS": "1",
    }
    with running_stack(database_url, redis_prefix, workers=2, **overrides) as stack:
        yield stack
    empty_tables(database_url)


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "alerts.yml"
    alerts = shortened_rules(ALERTS_FILE, rules, hold="5s")
    assert {CIRCUIT_ALERT, REBUILT_ALERT} <= set(alerts), f"{ALERTS_FILE} has only {alerts}"
    server = Prometheus(stack[1].url.removeprefix("http://"), rule_files=[rules])
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise
    yield server
    output = server.stop()
    assert "level=error" not in output, output


@pytest.fixture(scope="module")
def agent_headers(database_url, redis_prefix, own_redis, stack) -> dict[str, str]:
    """A signed-in agent for the whole module (the `agent` fixture lives for one test)."""
    settings = app_settings(database_url, redis_prefix, stack[0].api_base)
    settings["REDIS_URL"] = own_redis.url
    app = create_app(settings)
    try:
        with app.app_context():
            email, name, sip = "dana@example.test", "Dana", "agentdana"
            user_id = create_user(email, name, "correct horse battery", sip)
            token = issue_token(Agent(user_id, email, name, sip))
    finally:
        close_app(app)
    return {"Authorization": f"Bearer {token}"}


def press(server, call: str, headers: dict[str, str], action: str = "answer") -> int:
    return pressed(server, call, headers, action).status_code


def pressed(server, call: str, headers: dict[str, str], action: str = "answer"):
    url = f"{server.url}/api/telnyx/calls/{call}/{action}"
    return requests.post(url, headers=headers, timeout=30)


def delivered_webhooks(sim) -> int:
    """Webhook deliveries the service answered (any status), per the simulator's log."""
    sim.wait_delivered()
    log = sim.http.get(f"{sim.url}/sim/deliveries", timeout=10).json()["data"]
    return sum(1 for entry in log if entry["status"] is not None)


def ended_by_outcome(prom: Prometheus) -> dict[str, float]:
    values = prom.values("sum by (outcome) (telnyx_flask_calls_ended_total)")
    return {dict(labels)["outcome"]: value for labels, value in values.items()}


def per_worker(metrics_dir: Path, name: str) -> dict[int, float]:
    """Each worker's own count of a counter, from its prometheus-client file."""
    counts: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == name:
                counts[pid] = counts.get(pid, 0.0) + value
    return counts


@pytest.fixture(scope="module")
def scenario(stack, prometheus, agent_headers, own_redis, metrics_dir):
    """Drive the service through calls, a Redis flush and a Telnyx outage; what was done."""
    sim, server = stack
    prom = prometheus
    started = time.time()
    prom.wait_scraped(samples=3)
    # Before anything happens, neither alert is even pending.
    assert not {CIRCUIT_ALERT, REBUILT_ALERT} & set(prom.alerts())
    rebuilds_at_start = prom.value("sum(telnyx_flask_live_rebuilds_total)")
    done: dict = {"started": started}
    calls: list[str] = []

    page = SseClient(f"{server.url}/api/telnyx/events", agent_headers)
    try:
        assert page.next_event().event == "snapshot"
        prom.wait_until(
            lambda: prom.value("sum(telnyx_flask_sse_streams)") == 1, 10, "one open stream"
        )

        # Two rounds of calls: each answered (ended by the agent), abandoned, and missed (rung
        # until the ring timeout rejects it). A labelled counter's series is born at its first
        # increment, which increase() cannot see, so the first round gives each outcome its
        # series, as a service that has run a while has them; the dashboard shows the second.
        for round_, missed in enumerate(MISSED_CALLS):
            answered = sim.call(from_=f"+1312555{round_}100")
            sim.wait_delivered()
            assert press(server, answered, agent_headers) == 200
            sim.commands("record_start", answered, wait_for=1)
            assert press(server, answered, agent_headers, "end") == 200
            abandoned = sim.call(from_=f"+1312555{round_}200")
            sim.wait_delivered()
            sim.caller_hangs_up(abandoned)
            for n in range(missed):
                sim.call(from_=f"+1312555{round_}30{n}")
            sim.wait_delivered()
            calls += [answered, abandoned]
            total_missed = sum(MISSED_CALLS[: round_ + 1])
            prom.wait_until(
                lambda n=missed: prom.value("max(telnyx_flask_calls_ringing)") == n,
                RING_TIMEOUT_SECONDS,
                f"round {round_ + 1}: {missed} calls ringing",
            )
            # VOICEMAIL is off in the test servers: its series is there, at 0.
            expected = {
                "answered": round_ + 1,
                "abandoned": round_ + 1,
                "missed": total_missed,
                "voicemail": 0,
            }
            prom.wait_until(
                lambda expected=expected: ended_by_outcome(prom) == expected,
                RING_TIMEOUT_SECONDS + 20,
                f"round {round_ + 1}: calls ended {expected}",
            )
            # A few refused webhooks, each on its own connection, so both workers take some.
            for _ in range(REFUSED_WEBHOOKS // len(MISSED_CALLS)):
                requests.post(
                    f"{server.url}{WEBHOOK_ROUTE}",
                    data=b"{}",
                    headers={"Connection": "close", "Content-Type": "application/json"},
                    timeout=10,
                )

        # Redis loses everything; a worker rebuilds the live state from PostgreSQL.
        redis.Redis.from_url(own_redis.url).flushdb()
        done["flushed_at"] = time.time()
        prom.wait_until(
            lambda: prom.value("sum(telnyx_flask_live_rebuilds_total)") > rebuilds_at_start,
            15,
            "the rebuild counted",
        )

        # Telnyx answers every `answer` with 503: the breaker opens after five failures, and
        # then answers the agent itself, at once.
        sim.refuse("answer", 503, times=100)
        doomed = sim.call(from_="+13125550170")
        sim.wait_delivered()
        presses = []
        for _ in range(25):
            presses.append(press(server, doomed, agent_headers))
            ready = requests.get(f"{server.url}/readyz", timeout=5).json()
            if ready["detail"]["telnyx_circuit"] == "open":
                break
        assert ready["detail"]["telnyx_circuit"] == "open", presses
        # Telnyx's failures were answered 502; the open breaker answers 503 without trying.
        assert set(presses) == {502}, presses
        refused = pressed(server, doomed, agent_headers)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "telnyx_unavailable"
        presses.append(refused.status_code)
        done["opened_at"] = time.time()
        done["presses"] = presses
        done["answer_commands"] = len(sim.commands("answer", doomed))
        done["webhooks_sent"] = delivered_webhooks(sim) + REFUSED_WEBHOOKS
        prom.wait_until(
            lambda: prom.value('max(telnyx_flask_telnyx_circuit_state{state="open"})') == 1,
            10,
            "the breaker seen open",
        )
        # The breaker may be seen open while the press that opened it is still being answered:
        # wait for a scrape that has counted every press.
        answer_5xx = f'sum(telnyx_flask_http_requests_total{{route="{ANSWER_ROUTE}",status="5xx"}})'
        prom.wait_until(lambda: prom.value(answer_5xx) == len(presses), 10, "every press counted")
    finally:
        page.close()
    done["calls"] = [*calls, doomed]
    done["rebuilds_at_start"] = rebuilds_at_start
    done["metrics_dir"] = metrics_dir
    return done


def test_prometheus_sees_the_service_across_both_workers(prometheus, scenario, stack):
    prom = prometheus
    sent = scenario["webhooks_sent"]
    # Every webhook the service answered, counted once, whichever worker took it.
    total = prom.wait_until(
        lambda: (value := prom.value("sum(telnyx_flask_webhooks_total)")) == sent and value,
        15,
        f"{sent} webhooks counted",
    )
    by_result = {
        dict(labels)["result"]: value
        for labels, value in prom.values("sum by (result) (telnyx_flask_webhooks_total)").items()
    }
    assert by_result["rejected"] == REFUSED_WEBHOOKS
    # At least each call's call.initiated and call.hangup.
    assert by_result["applied"] >= 2 * (2 * len(MISSED_CALLS) + sum(MISSED_CALLS))
    workers = per_worker(scenario["metrics_dir"], "telnyx_flask_webhooks_total")
    requests_by_worker = per_worker(scenario["metrics_dir"], "telnyx_flask_http_requests_total")
    assert sum(workers.values()) == sent
    # Both workers served requests (and Prometheus's scrapes), and their counts add up.
    assert len([pid for pid, n in requests_by_worker.items() if n > 0]) == 2, requests_by_worker

    # Requests by route template, never by raw path.
    routes = prom.values("sum by (route, status) (telnyx_flask_http_requests_total)")
    route = {(dict(k)["route"], dict(k)["status"]): v for k, v in routes.items()}
    presses = scenario["presses"]
    assert route[(ANSWER_ROUTE, "2xx")] == len(MISSED_CALLS)  # one answered call a round
    assert route[(ANSWER_ROUTE, "5xx")] == len(presses)
    assert route[(END_ROUTE, "2xx")] == len(MISSED_CALLS)
    assert route[(WEBHOOK_ROUTE, "4xx")] == REFUSED_WEBHOOKS
    assert route[(WEBHOOK_ROUTE, "2xx")] + route[(WEBHOOK_ROUTE, "4xx")] == sent
    assert not [r for r, _ in route for call in scenario["calls"] if call in r]
    p99 = prom.value(
        "histogram_quantile(0.99, sum by (le) "
        f'(rate(telnyx_flask_http_request_seconds_bucket{{route="{ANSWER_ROUTE}"}}[5m])))'
    )
    assert p99 is not None and p99 > 0

    # Calls: three rang at once, how long they rang, and how each ended.
    assert prom.value("max_over_time(telnyx_flask_calls_ringing[5m])") == max(MISSED_CALLS)
    longest = prom.value("max_over_time(telnyx_flask_longest_ringing_seconds[5m])")
    assert RING_TIMEOUT_SECONDS - 2 <= longest < RING_TIMEOUT_SECONDS + 10
    ended = ended_by_outcome(prom)
    rounds = len(MISSED_CALLS)
    # VOICEMAIL is off in the test servers: its series is there, at 0.
    assert ended == {
        "answered": rounds,
        "abandoned": rounds,
        "missed": sum(MISSED_CALLS),
        "voicemail": 0,
    }
    # The second round, as increase() sees it (the first one gave each outcome its series).
    ended_lately = {
        dict(labels)["outcome"]: value
        for labels, value in prom.values(
            "sum by (outcome) (increase(telnyx_flask_calls_ended_total[1h]))"
        ).items()
    }
    happened = ("answered", "abandoned", "missed")
    assert all(ended_lately[outcome] >= 1 for outcome in happened), ended_lately
    assert prom.value("sum(telnyx_flask_ring_timeouts_total)") >= sum(MISSED_CALLS)
    assert prom.value("sum(telnyx_flask_ring_to_claim_seconds_count)") >= 1

    # The flush: one more rebuild, seen by Prometheus as an increase.
    assert prom.value("sum(telnyx_flask_live_rebuilds_total)") == scenario["rebuilds_at_start"] + 1
    assert prom.value("sum(increase(telnyx_flask_live_rebuilds_total[5m]))") > 0

    # The stream: one page was open, and the newest entry is recent.
    assert prom.value("max_over_time(telnyx_flask_sse_streams[5m])") == 1
    newest = prom.value("max(telnyx_flask_stream_newest_entry_seconds)")
    assert scenario["started"] < newest <= time.time()
    # The stream readers are caught up: a worker's reader exports how far it has read, and the
    # furthest behind is within a few seconds of the newest entry.
    lag = prom.value(
        "max(telnyx_flask_stream_newest_entry_seconds)"
        " - min(telnyx_flask_stream_reader_position_seconds)"
    )
    assert 0 <= lag < 10, lag

    # The outage: the breaker is open (one state at a time), and it was counted opening.
    states = {
        dict(k)["state"]: v
        for k, v in prom.values("max by (state) (telnyx_flask_telnyx_circuit_state)").items()
    }
    assert states == {"closed": 0, "open": 1, "half_open": 0}
    assert prom.value('sum(telnyx_flask_telnyx_circuit_transitions_total{to="open"})') >= 1
    failures = prom.value(
        'sum(telnyx_flask_telnyx_api_requests_total{action="answer", status="503"})'
    )
    assert failures == scenario["answer_commands"] >= 5
    assert prom.value("max(telnyx_flask_outbox_depth)") is not None
    assert prom.value("max(telnyx_flask_outbox_oldest_due_seconds)") is not None
    assert prom.value('sum(telnyx_flask_outbox_commands_total{outcome="sent"})') >= 1

    print(
        f"\nPrometheus counted {total:.0f} webhooks (= {sent} answered: {by_result}); per "
        f"worker {sorted(workers.values())}, requests per worker "
        f"{sorted(requests_by_worker.values())}; answer p99 {p99 * 1000:.0f} ms; longest ring "
        f"{longest:.1f} s; ended {ended}; answer pressed {len(presses)} times ({presses}: 502 "
        f"while Telnyx failed, 503 from the open breaker), {scenario['answer_commands']} "
        "answer commands sent"
    )


@pytest.fixture(scope="module")
def fired(prometheus, scenario) -> dict:
    """Wait until both alerts fire; the active alerts and when they fired."""
    alerts = prometheus.wait_until(
        lambda: (
            (active := prometheus.alerts()).get(CIRCUIT_ALERT) == "firing"
            and active.get(REBUILT_ALERT) == "firing"
            and active
        ),
        30,
        f"{CIRCUIT_ALERT} and {REBUILT_ALERT} firing",
    )
    return {"alerts": alerts, "at": time.time()}


def test_the_breaker_and_rebuild_alerts_fire(prometheus, scenario, fired):
    at = fired["at"]
    # The rules are held 5 s (for:) here; Prometheus evaluates every second.
    assert at - scenario["opened_at"] >= 5
    # Every rule in alerts.yml loaded and evaluates without an error.
    rules = prometheus.rules()
    assert {rule["group"] for rule in rules} == {"telnyx-flask"}
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken
    print(
        f"\nalerts firing {at - scenario['opened_at']:.1f} s after the breaker opened "
        f"({at - scenario['flushed_at']:.1f} s after the flush): {fired['alerts']}; "
        f"{len(rules)} rules loaded, all healthy"
    )


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict) -> list[dict]:
    """Every panel, those inside rows too, rows left out."""
    found = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable the test does not know: {expr}"
    return expr


METRIC_NAME = re.compile(r"\b(telnyx_flask_[a-z0-9_]+)\b")


def test_every_dashboard_expression_runs_and_names_exported_metrics(prometheus, scenario, stack):
    board = dashboard()
    assert board["schemaVersion"] >= 39 and board["uid"] == "telnyx-flask"
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    datasource = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}

    response = requests.get(f"{stack[1].url}/metrics", timeout=10)
    exported = {
        sample.name
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    in_prometheus = {
        entry["metric"]["__name__"]
        for entry in prometheus.query('group by (__name__) ({__name__=~"telnyx_flask_.+"})')
    }
    checked, names = 0, set()
    for panel in panels(board):
        assert panel["datasource"] == datasource, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = substitute(target["expr"], CHECK_VARIABLES)
            result = prometheus.query(expr)  # PrometheusError if it does not parse or run
            assert result, f"{panel['title']}: {expr} returned nothing"
            referenced = set(METRIC_NAME.findall(expr))
            assert referenced, f"{panel['title']}: {expr} names no metric"
            assert referenced <= exported, f"{panel['title']}: not on /metrics: {referenced}"
            assert referenced <= in_prometheus, f"{panel['title']}: {referenced - in_prometheus}"
            names |= referenced
            checked += 1
    print(
        f"\n{checked} expressions in {len(panels(board))} panels ran against Prometheus; "
        f"{len(names)} metric names, all exported"
    )


# The dashboard drawn by a page from Prometheus's query_range answers: the panels at their
# gridPos (24 columns, 30 px rows), lines or stacked bars, and state-timeline bands.
PAGE = r"""<!doctype html><html><head><meta charset="utf-8"><style>
body { margin: 0; background: #111217; color: #ccccdc; font: 12px Inter, Helvetica, Arial; }
header { padding: 10px 16px; font-size: 16px; }
header small { color: #8e8e9e; font-size: 12px; margin-left: 12px; }
#grid { position: relative; margin: 0 8px; }
.panel { position: absolute; box-sizing: border-box; background: #181b1f;
  border: 1px solid #2c3235; border-radius: 3px; padding: 6px 8px; overflow: hidden;
  display: flex; flex-direction: column; }
.row { position: absolute; font-size: 14px; font-weight: 500; padding-top: 6px; }
.title { font-weight: 500; margin-bottom: 2px; color: #d8d9da; }
.plot { flex: 1; min-height: 0; }
.legend { font-size: 11px; line-height: 15px; }
.legend span { margin-right: 10px; white-space: nowrap; display: inline-block; }
.legend i { display: inline-block; width: 12px; height: 3px; margin: 0 4px 3px 0; }
svg text { fill: #8e8e9e; font-size: 10px; }
</style></head><body><header>telnyx-flask<small id="range"></small></header>
<div id="grid"></div><script>
const {board, data, start, end} = JSON.parse(document.getElementById("data").textContent);
const COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2",
  "#b877d9", "#705da0", "#37872d", "#fade2a", "#ff9830", "#c4162a"];
const NAMED = {green: "#73bf69", red: "#f2495c", orange: "#ff9830"};
const grid = document.getElementById("grid");
const W = (window.innerWidth - 16) / 24, H = 30;
const clock = t => new Date(t * 1000).toISOString().slice(11, 19);
document.getElementById("range").textContent =
  `${clock(start)} - ${clock(end)} UTC, every panel's query run by the test's Prometheus`;
const escape = text => text.replace(/[&<>"]/g, c => `&#${c.charCodeAt(0)};`);
const fmt = (v, unit) => {
  if (unit === "s") {
    return v >= 1 || v === 0 ? `${+v.toFixed(1)} s` : `${+(v * 1000).toFixed(0)} ms`;
  }
  if (unit === "reqps" || unit === "ops") return `${+v.toFixed(2)}/s`;
  return `${+v.toFixed(2)}`;
};
const legend = (format, labels) =>
  format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name) => labels[name] ?? "");
const drawn = {};

function seriesOf(panel) {
  const defaults = panel.fieldConfig.defaults, overrides = panel.fieldConfig.overrides || [];
  const series = [];
  panel.targets.forEach((target, t) => {
    for (const s of data[panel.id][t]) {
      const name = legend(target.legendFormat || "", s.metric) || target.expr;
      let color = COLORS[series.length % COLORS.length], unit = defaults.unit, right = false;
      for (const o of overrides) {
        if (o.matcher.options !== name) continue;
        for (const p of o.properties) {
          if (p.id === "color") color = NAMED[p.value.fixedColor] || p.value.fixedColor;
          if (p.id === "unit") unit = p.value;
          if (p.id === "custom.axisPlacement") right = p.value === "right";
        }
      }
      const points = s.values.map(([t, v]) => [t, Number(v)]).filter(([, v]) => isFinite(v));
      series.push({name, color, unit, right, points});
    }
  });
  return series;
}

function timeAxis(x, h) {
  let svg = "";
  for (let k = 0; k <= 4; k++) {
    const t = start + (end - start) * k / 4;
    svg += `<text x="${x(t) - 22}" y="${h - 4}">${clock(t)}</text>`;
  }
  return svg;
}

function timeline(panel, series, x, w, h) {
  const mapping = panel.fieldConfig.defaults.mappings[0].options;
  let svg = "";
  for (const s of series) {
    let band = null;
    const close = until => {
      if (!band) return;
      const m = mapping[String(band.v)] || {color: "#555", text: String(band.v)};
      const width = Math.max(1, x(until) - x(band.t));
      svg += `<rect x="${x(band.t)}" y="4" width="${width}" height="${h - 24}"
        fill="${NAMED[m.color] || m.color}"></rect>`;
      if (width > 40) {
        svg += `<text x="${x(band.t) + 6}" y="${(h - 16) / 2}"
          style="fill:#111;font-size:13px;font-weight:600">${m.text}</text>`;
      }
    };
    s.points.forEach(([t, v], i) => {
      const gap = i > 0 && t - s.points[i - 1][0] > 2;
      if (band && (band.v !== v || gap)) { close(gap ? s.points[i - 1][0] + 1 : t); band = null; }
      if (!band) band = {t, v};
    });
    if (s.points.length) close(s.points[s.points.length - 1][0] + 1);
  }
  return svg + timeAxis(x, h);
}

function chart(panel, series, x, w, h) {
  const bars = (panel.fieldConfig.defaults.custom || {}).drawStyle === "bars";
  const axes = [false, true].map(side => {
    const own = series.filter(s => s.right === side), stacked = {};
    for (const s of own) for (const [t, v] of s.points) stacked[t] = (stacked[t] || 0) + v;
    const top = Math.max(0, ...(bars ? Object.values(stacked)
      : own.flatMap(s => s.points.map(p => p[1]))));
    return {top: top > 0 ? top * 1.1 : 1, unit: own.length ? own[0].unit : null};
  });
  const y = (v, right) => 6 + (h - 26) * (1 - v / axes[right ? 1 : 0].top);
  let svg = "";
  for (let k = 0; k <= 4; k++) {
    const yy = 6 + (h - 26) * k / 4;
    svg += `<line x1="48" x2="${w - 48}" y1="${yy}" y2="${yy}" stroke="#2c3235"></line>`;
    axes.forEach((a, side) => {
      if (a.unit === null) return;
      const label = fmt(a.top * (1 - k / 4), a.unit);
      svg += `<text x="${side ? w - 44 : 0}" y="${yy + 3}">${label}</text>`;
    });
  }
  if (bars) {
    const base = {};
    for (const s of series) {
      s.points.forEach(([t, v], i) => {
        const b = base[t] || 0, next = i + 1 < s.points.length ? s.points[i + 1][0] : t + 1;
        svg += `<rect x="${x(t)}" width="${Math.max(1, x(next) - x(t) - 1)}" y="${y(b + v)}"
          height="${y(b) - y(b + v)}" fill="${s.color}" opacity="0.85"></rect>`;
        base[t] = b + v;
      });
    }
  } else {
    for (const s of series) {
      let d = "", prev = null;
      for (const [t, v] of s.points) {
        const move = prev === null || t - prev > 2 ? "M" : "L";
        d += `${move}${x(t).toFixed(1)},${y(v, s.right).toFixed(1)} `;
        prev = t;
      }
      svg += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"></path>`;
    }
  }
  return svg + timeAxis(x, h);
}

for (const panel of board.panels) {
  const g = panel.gridPos, box = document.createElement("div");
  Object.assign(box.style, {left: `${g.x * W}px`, top: `${g.y * H}px`,
    width: `${g.w * W - 6}px`, height: `${g.h * H - 6}px`});
  grid.appendChild(box);
  if (panel.type === "row") { box.className = "row"; box.textContent = panel.title; continue; }
  box.className = "panel";
  const series = seriesOf(panel);
  drawn[panel.title] = series.filter(s => s.points.length).length;
  const items = panel.type === "state-timeline" ? [] : series.map(s =>
    `<span><i style="background:${s.color}"></i>${escape(s.name)}</span>`);
  box.innerHTML = `<div class="title">${escape(panel.title)}</div><div class="plot"></div>
    <div class="legend">${items.join("")}</div>`;
  const plot = box.querySelector(".plot"), w = plot.clientWidth, h = plot.clientHeight;
  const x = t => 48 + (t - start) / (end - start) * (w - 96);
  const svg = panel.type === "state-timeline" ? timeline(panel, series, x, w, h)
    : chart(panel, series, x, w, h);
  plot.innerHTML = `<svg width="${w}" height="${h}" shape-rendering="crispEdges">${svg}</svg>`;
}
grid.style.height = `${Math.max(...board.panels.map(p => (p.gridPos.y + p.gridPos.h) * H))}px`;
document.body.dataset.drawn = JSON.stringify(drawn);
</script></body></html>"""


def test_the_dashboard_draws_from_prometheus(prometheus, scenario, fired):
    """Every panel's expressions over the scenario (query_range), drawn by a page in Chromium;
    saved as docs/screenshots/dashboard.png when SCREENSHOT_DIR is set."""
    assert os.path.exists(CHROMIUM), chromium_missing_message()
    board = dashboard()
    # From just before the scenario to the alerts firing, and a little after.
    start, end = scenario["started"] - 2, time.time() + 1
    data = {
        panel["id"]: [
            prometheus.query_range(
                substitute(target["expr"], PICTURE_VARIABLES), start, end, step=1
            )
            for target in panel["targets"]
        ]
        for panel in panels(board)
    }
    payload = json.dumps({"board": board, "data": data, "start": start, "end": end})
    html = PAGE.replace(
        '<div id="grid"></div>',
        '<div id="grid"></div><script type="application/json" id="data">'
        + payload.replace("</", "<\\/")
        + "</script>",
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.set_content(html)
            page.wait_for_function("document.body.dataset.drawn !== undefined")
            drawn = json.loads(page.evaluate("document.body.dataset.drawn"))
            assert not errors, errors
            empty = {title for title, count in drawn.items() if count == 0}
            assert not empty, f"panels with no data: {empty}"
            saved = save_screenshot_full(page, "docs/screenshots/dashboard.png")
        finally:
            browser.close()
    print(f"\n{len(drawn)} panels drawn, series per panel {drawn}; saved: {saved}")


def save_screenshot_full(page, name: str) -> Path | None:
    """save_screenshot, of the whole page."""
    page.set_viewport_size({"width": 1600, "height": page.evaluate("document.body.scrollHeight")})
    return save_screenshot(page, name)
