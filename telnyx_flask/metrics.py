"""Prometheus metrics, correct across gunicorn workers (prometheus-client's multiprocess mode).

gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker imports this module, so each
worker writes its values to files there and GET /metrics adds them up. Without it (one process,
tests) the default in-process registry is used.
"""

from __future__ import annotations

import os
import re

from flask import Blueprint, Response
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

bp = Blueprint("metrics", __name__)

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")

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
SSE_STREAMS = Gauge(
    "telnyx_flask_sse_streams",
    "Event streams open now",
    multiprocess_mode="livesum",
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
    "Calls rejected because nobody took them within RING_TIMEOUT_SECONDS",
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


def webhook_handled(event_type: str | None, result: str, seconds: float) -> None:
    """Count one webhook; event types that don't look like Telnyx's are counted as 'other'."""
    if event_type is None:
        label = "unknown"
    else:
        label = event_type if EVENT_TYPE.match(event_type) else "other"
    WEBHOOKS.labels(label, result).inc()
    WEBHOOK_SECONDS.observe(seconds)


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@bp.get("/metrics")
def metrics() -> Response:
    """Every metric in Prometheus's text format, summed over this host's workers."""
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
