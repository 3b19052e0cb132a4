"""Prometheus metrics, correct across gunicorn workers (prometheus-client's multiprocess mode).

gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker imports this module, so each
worker writes its values to files there and GET /metrics adds them up. Without it (one process,
tests) the default in-process registry is used.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")

HTTP_REQUESTS = Counter(
    "telnyx_flask_http_requests_total",
    "HTTP requests by route template (not the raw path, so ids do not multiply the series), "
    "method and status class (2xx, 4xx, 5xx...)",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "telnyx_flask_http_request_seconds",
    "Time from a request to its response's headers, by route template and method (an event "
    "stream counts until its first byte, not for its whole life)",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOKS = Counter(
    "telnyx_flask_webhooks_total",
    "Webhooks by event type and result: applied, duplicate, ignored, rejected (4xx), "
    "failed (storage unavailable: 503, Telnyx retries)",
    ["event_type", "result"],
)
WEBHOOK_SECONDS = Histogram(
    "telnyx_flask_webhook_seconds",
    "Time to handle a webhook, from the request to the answer",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_BATCH_SIZE = Histogram(
    "telnyx_flask_webhook_batch_size",
    "Webhooks applied together by one group commit (WEBHOOK_BATCH_WINDOW_MS); 1 when alone",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SSE_STREAMS = Gauge(
    "telnyx_flask_sse_streams",
    "Event streams open now",
    multiprocess_mode="livesum",
)
# Labelled so that a worker whose reader never started (no page opened there) reports nothing,
# rather than a 0 that would read as the whole stream's length of lag.
STREAM_READER_POSITION = Gauge(
    "telnyx_flask_stream_reader_position_seconds",
    "Time (Unix seconds, from the entry's stream id) of the newest event-stream entry the "
    "furthest-behind worker's reader has taken; compare telnyx_flask_stream_newest_entry_seconds",
    ["stream"],
    multiprocess_mode="livemin",
)
RING_TO_CLAIM_SECONDS = Histogram(
    "telnyx_flask_ring_to_claim_seconds",
    "From a call starting to ring at the service to an agent answering or declining it",
    buckets=(0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 120),
)
CLAIM_CONFLICTS = Counter(
    "telnyx_flask_claim_conflicts_total",
    "Answers and declines refused because someone else had taken the call (409)",
)
RING_TIMEOUTS = Counter(
    "telnyx_flask_ring_timeouts_total",
    "Calls the ring timeout took because nobody took them within RING_TIMEOUT_SECONDS (or at"
    " once while nobody was available), for voicemail or the reject",
)
TELNYX_REQUESTS = Counter(
    "telnyx_flask_telnyx_api_requests_total",
    "Requests to the Telnyx API by action and HTTP status ('none': no answer)",
    ["action", "status"],
)
STORAGE_ERRORS = Counter(
    "telnyx_flask_storage_errors_total",
    "Requests answered 503 because PostgreSQL or Redis was unavailable",
    ["store"],
)
TELNYX_BREAKER_TRANSITIONS = Counter(
    "telnyx_flask_telnyx_circuit_transitions_total",
    "Times the circuit breaker around the Telnyx API opened or closed (counted once, by the "
    "worker that moved it)",
    ["to"],
)
LIVE_REBUILDS = Counter(
    "telnyx_flask_live_rebuilds_total",
    "Times the live state was rebuilt from PostgreSQL because Redis had lost it (a restart "
    "without persistence, a failover, FLUSHDB, eviction), counted once by the worker that did it",
)
LIVE_REBUILT_CALLS = Counter(
    "telnyx_flask_live_rebuilt_calls_total",
    "Calls not yet over that a rebuild restored to Redis",
)
CALLS_ENDED = Counter(
    "telnyx_flask_calls_ended_total",
    "Calls that ended, by outcome (answered, missed, abandoned, voicemail), counted once each "
    "when the "
    "end is announced",
    ["outcome"],
)
# Each outcome's series exists from the start, at 0: a counter that first appears at 1 hides
# that first call from increase() and rate().
for _outcome in ("answered", "missed", "abandoned", "voicemail"):
    CALLS_ENDED.labels(_outcome)
OUTBOX_COMMANDS = Counter(
    "telnyx_flask_outbox_commands_total",
    "Owed Telnyx commands finished or retried, by action and outcome: sent, moot (the call "
    "was over), refused (a 4xx for good), retry",
    ["action", "outcome"],
)

# Scrape-time gauges: facts shared by every worker (read from PostgreSQL or Redis when scraped,
# so they are counted once, not once per worker). Each source yields (name, help, labels, value).
GaugeSource = Callable[[], Iterator[tuple[str, str, dict[str, str], float]]]


def add_scrape_gauges(app: Flask, source: GaugeSource) -> None:
    """Register a source of gauges read at each scrape."""
    app.extensions.setdefault("scrape_gauges", []).append(source)


class _ScrapeGauges(Collector):
    def __init__(self, sources: list[GaugeSource]):
        self.sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for source in self.sources:
            try:
                readings = list(source())
            except Exception as exc:  # a store that is down must not break the whole scrape
                log.warning("metrics: a gauge source failed: %s", exc)
                continue
            for name, help_text, labels, value in readings:
                family = families.get(name)
                if family is None:
                    family = families[name] = GaugeMetricFamily(
                        name, help_text, labels=list(labels)
                    )
                family.add_metric(list(labels.values()), value)
        yield from families.values()


def webhook_handled(event_type: str | None, result: str, seconds: float) -> None:
    """Count one webhook; event types that don't look like Telnyx's are counted as 'other'."""
    if event_type is None:
        label = "unknown"
    else:
        label = event_type if EVENT_TYPE.match(event_type) else "other"
    WEBHOOKS.labels(label, result).inc()
    WEBHOOK_SECONDS.observe(seconds)


def http_request(route: str | None, method: str, status: int, seconds: float) -> None:
    """Count one request under its route template ('unmatched' when no route took it)."""
    label = route or "unmatched"
    HTTP_REQUESTS.labels(label, method, f"{status // 100}xx").inc()
    HTTP_SECONDS.labels(label, method).observe(seconds)


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@bp.get("/metrics")
def metrics() -> Response:
    """Every metric in Prometheus's text format, summed over this host's workers."""
    shared = CollectorRegistry()
    shared.register(_ScrapeGauges(current_app.extensions.get("scrape_gauges", [])))
    body = generate_latest(_registry()) + generate_latest(shared)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)
