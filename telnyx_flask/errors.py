"""Domain exceptions and the one place that turns them into JSON error responses."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from . import metrics

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def details(self) -> dict[str, Any]:
        """Extra fields for the error object (who took a call, Telnyx's code...)."""
        return {}

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After...)."""
        return {}


class BadWebhook(ApiError):
    """The webhook body is not something Telnyx sends."""

    status = 400
    code = "malformed_webhook"


class BadSignature(ApiError):
    """The webhook's signature is missing, wrong or stale."""

    status = 401
    code = "invalid_signature"


class PayloadTooLarge(ApiError):
    """The request body is over the limit."""

    status = 413
    code = "payload_too_large"


class CallNotFound(ApiError):
    """No such call (unknown, or it has ended): for agents' actions and the history alike."""

    status = 404
    code = "call_not_found"


class StorageUnavailable(ApiError):
    """PostgreSQL or Redis could not be reached; the client should retry."""

    status = 503
    code = "storage_unavailable"

    def __init__(self, dependency: str, detail: str = ""):
        super().__init__(f"{dependency} is unavailable")
        self.dependency = dependency
        self.detail = detail

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> tuple[Response, int]:
    """The JSON error body every /api endpoint uses."""
    return jsonify({"error": {"code": code, "message": message, **(details or {})}}), status


def init_app(app: Flask) -> None:
    """Answer every error under /api (and the ops endpoints) with JSON, never HTML."""

    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError):
        if isinstance(error, StorageUnavailable):
            metrics.STORAGE_ERRORS.labels(error.dependency).inc()
            log.warning(
                "%s %s: %s unavailable: %s",
                request.method,
                request.path,
                error.dependency,
                error.detail,
            )
        response, status = error_response(error.status, error.code, error.message, error.details())
        response.headers.update(error.headers())
        return response, status

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        response, status = error_response(error.code or 500, code, error.description or "")
        for name, value in error.get_headers():
            if name.lower() == "allow":
                response.headers[name] = value
        return response, status

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")
