"""Liveness and readiness endpoints for load balancers and orchestrators."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from .db import get_db
from .live import REDIS_ERRORS, get_live

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and serving requests."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready when PostgreSQL and Redis both answer; 503 naming the one that does not."""
    checks = {"postgresql": "ok", "redis": "ok"}
    try:
        with get_db().connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    except Exception as exc:  # any failure means not ready; the reason is logged
        log.warning("readiness: postgresql failed: %s", exc)
        checks["postgresql"] = "unavailable"
    try:
        get_live().ping()
    except REDIS_ERRORS as exc:
        log.warning("readiness: redis failed: %s", exc)
        checks["redis"] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), (
        200 if ready else 503
    )
