"""Liveness and readiness endpoints for load balancers and orchestrators."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from .db import get_db
from .errors import StorageUnavailable
from .lifecycle import get_draining
from .live_calls import get_live
from .live_rebuild import ensure_live_state
from .redis_store import REDIS_ERRORS
from .telnyx_api import get_telnyx

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and serving requests."""
    return jsonify({"status": "ok"})


# Only this policy never drops a live key: every call hash has a TTL, so volatile-* can too.
SAFE_EVICTION_POLICY = "noeviction"


@bp.get("/readyz")
def readyz():
    """Ready when PostgreSQL and Redis both answer; 503 naming the one that does not, or
    saying "draining" while this worker stops.

    A Redis that lost its data is rebuilt from PostgreSQL here first, so a worker that says
    ready serves the calls PostgreSQL knows. `detail` reports what does not decide readiness:
    the Telnyx circuit breaker (Telnyx being down must not take the service out of the load
    balancer: webhooks must still be taken) and Redis's eviction policy.
    """
    checks = {"postgresql": "ok", "redis": "ok"}
    detail: dict[str, object] = {}
    try:
        with get_db().connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    except Exception as exc:  # any failure means not ready; the reason is logged
        log.warning("readiness: postgresql failed: %s", exc)
        checks["postgresql"] = "unavailable"
    live = get_live()
    try:
        live.ping()
        detail["redis_eviction_policy"] = policy = live.eviction_policy()
        if policy not in (None, SAFE_EVICTION_POLICY):
            detail["warning"] = (
                f"Redis maxmemory-policy is {policy}: it can evict live calls; "
                f"set {SAFE_EVICTION_POLICY}"
            )
    except REDIS_ERRORS as exc:
        log.warning("readiness: redis failed: %s", exc)
        checks["redis"] = "unavailable"
    if checks["redis"] == "ok" and checks["postgresql"] == "ok":
        try:
            ensure_live_state(get_db(), live)
        except StorageUnavailable as exc:
            log.warning("readiness: could not rebuild live state: %s", exc)
            checks[exc.dependency] = "unavailable"
    telnyx = get_telnyx()
    if telnyx is not None and telnyx.breaker is not None and checks["redis"] == "ok":
        detail["telnyx_circuit"] = telnyx.breaker.state()
    ready = all(value == "ok" for value in checks.values())
    status = "ready" if ready else "unavailable"
    if get_draining().is_draining:
        # Stopping: the load balancer must send nothing new here, whatever the stores say.
        ready, status = False, "draining"
    body = {"status": status, "checks": checks, "detail": detail}
    return jsonify(body), 200 if ready else 503
