"""Log lines: one JSON object per line (LOG_FORMAT=json) or readable text, each carrying the
request id of the request it belongs to and the call_control_id of the call it is about.

Request ids come from X-Request-ID when the caller (nginx, a load balancer) sends a sane one,
else are made here, and go back in the response's X-Request-ID. Nothing here logs bodies,
headers, tokens or passwords: only method, path (without its query), status and timing.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context, request

from . import metrics

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Extra fields a log call may pass (extra={...}); the formatter shows whichever are present.
FIELDS = (
    "request_id",
    "call_control_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "remote_addr",
)
QUIET_PATHS = ("/healthz", "/readyz", "/metrics")
# Telnyx's webhooks come several per call, each counted in telnyx_flask_webhooks_total: the
# access line of one that succeeded is DEBUG; a refused or failed one stays INFO.
QUIET_WHEN_OK = ("/api/telnyx/webhook",)

access_log = logging.getLogger("telnyx_flask.access")


class RequestContext(logging.Filter):
    """Adds the request id, and the call_control_id in the URL, to records made in a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            if getattr(record, "request_id", None) is None:
                record.request_id = g.get("request_id")
            if getattr(record, "call_control_id", None) is None:
                view_args = request.view_args or {}
                record.call_control_id = view_args.get("call_control_id") or g.get(
                    "call_control_id"
                )
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines, with the request id and call at the end when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [
            f"{name}={getattr(record, name)}"
            for name in ("request_id", "call_control_id")
            if getattr(record, name, None) is not None
        ]
        return f"{line} [{' '.join(tags)}]" if tags else line


def configure(level: str, fmt: str) -> None:
    """Send the service's logs to stderr unless the host process has set logging up already."""
    package_logger = logging.getLogger("telnyx_flask")
    package_logger.setLevel(level)
    if logging.getLogger().handlers or package_logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestContext())
    package_logger.addHandler(handler)


def init_app(app: Flask) -> None:
    """Request ids on every request, and one access line and one count (by route) per request."""

    @app.before_request
    def start_request() -> None:
        offered = request.headers.get("X-Request-ID", "")
        g.request_id = offered if REQUEST_ID.match(offered) else uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def finish_request(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id is None:  # a request that failed before before_request ran
            return response
        response.headers["X-Request-ID"] = request_id
        seconds = time.perf_counter() - g.request_started
        rule = request.url_rule
        metrics.http_request(
            rule.rule if rule is not None else None, request.method, response.status_code, seconds
        )
        duration_ms = round(seconds * 1000, 1)
        quiet = request.path in QUIET_PATHS or (
            request.path in QUIET_WHEN_OK and response.status_code < 400
        )
        level = logging.DEBUG if quiet else logging.INFO
        access_log.log(
            level,
            "%s %s %s %.1fms",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "remote_addr": request.remote_addr,
            },
        )
        return response
