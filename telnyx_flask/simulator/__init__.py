"""A stand-in for Telnyx: the Call Control API the service calls, and the webhooks it receives.

Run it with `python -m telnyx_flask.simulator`; tests build it with create_simulator_app().
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, has_request_context, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from .api_faults import Delays, Refusals
from .call_control import DEDUP_SECONDS, DEFAULT_CONNECTION_ID, CallControl
from .delivery import Delivery
from .errors import BAD_REQUEST, RESOURCE_NOT_FOUND, UNEXPECTED_ERROR, TelnyxApiError
from .signing_key import SEED_BYTES, public_key_base64, seed_from_base64

EXTENSION = "telnyx_simulator"

log = logging.getLogger(__name__)

DEFAULT_SETTINGS: dict[str, Any] = {
    "webhook_url": None,  # where webhooks go; None until set (POST /sim/delivery can set it)
    "signing_seed": None,  # 32 bytes or their base64; None: a new key for this process only
    "public_url": None,  # base of recording URLs; None: the host the request came to
    "api_key": None,  # the only accepted API key; None: any non-empty bearer key
    "connection_id": DEFAULT_CONNECTION_ID,
    "delivery_timeout": 5.0,  # seconds to wait for the webhook endpoint to answer
    "max_attempts": 3,  # deliveries of one event before giving up
    "retry_backoff": 0.5,  # seconds before the 2nd attempt, doubling after that
    "reorder_window": 1.0,  # seconds events are held back in reorder mode before going anyway
    "dedup_seconds": DEDUP_SECONDS,  # how long a command_id is remembered per call
}


@dataclass
class Simulator:
    """The simulator's parts, kept in app.extensions["telnyx_simulator"]."""

    calls: CallControl
    delivery: Delivery
    signing_seed: bytes
    public_key: str
    api_key: str | None
    refusals: Refusals = field(default_factory=Refusals)
    delays: Delays = field(default_factory=Delays)

    def reset(self) -> None:
        """Forget every call, command and delivery, and turn chaos off."""
        # First, so requests still held back give up instead of acting on the new run's calls.
        self.delays.clear()
        self.calls.reset()
        self.delivery.reset()
        self.refusals.clear()

    def close(self) -> None:
        """Stop the delivery thread, and let requests still held back give up."""
        self.delays.clear()
        self.delivery.close()


def get_simulator() -> Simulator:
    """The simulator of the current app."""
    return current_app.extensions[EXTENSION]


def _seed(value: bytes | str | None) -> bytes:
    if value is None:
        return os.urandom(SEED_BYTES)
    if isinstance(value, str):
        return seed_from_base64(value)
    if len(value) != SEED_BYTES:
        raise ValueError(f"signing_seed must be {SEED_BYTES} bytes")
    return bytes(value)


def create_simulator_app(settings: dict | None = None) -> Flask:
    """Build the simulator app (see DEFAULT_SETTINGS) and start its delivery thread."""
    unknown = set(settings or {}) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown simulator setting(s): {', '.join(sorted(unknown))}")
    options = {**DEFAULT_SETTINGS, **(settings or {})}
    seed = _seed(options["signing_seed"])
    public_url = options["public_url"].rstrip("/") if options["public_url"] else None

    # The address the last request reached: a recording saved on a timer (a max_length, a
    # caller who hangs up after a message) has no request of its own to take it from.
    last_host_url = ["http://127.0.0.1"]

    def recording_url(recording_id: str, fmt: str) -> str:
        if public_url is not None:
            base = public_url
        elif has_request_context():
            base = request.host_url.rstrip("/")
        else:
            base = last_host_url[0]
        return f"{base}/sim/recordings/{recording_id}.{fmt}"

    delivery = Delivery(
        seed,
        options["webhook_url"],
        timeout=float(options["delivery_timeout"]),
        max_attempts=int(options["max_attempts"]),
        retry_backoff=float(options["retry_backoff"]),
        reorder_window=float(options["reorder_window"]),
    )
    calls = CallControl(
        delivery,
        recording_url,
        connection_id=options["connection_id"],
        dedup_seconds=float(options["dedup_seconds"]),
    )
    app = Flask(__name__)
    assert isinstance(app.json, DefaultJSONProvider)  # Flask's own; nothing replaces it
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.extensions[EXTENSION] = Simulator(
        calls=calls,
        delivery=delivery,
        signing_seed=seed,
        public_key=public_key_base64(seed),
        api_key=options["api_key"],
    )

    from . import api, control

    app.register_blueprint(api.bp)
    app.register_blueprint(control.bp)

    @app.before_request
    def remember_host_url() -> None:
        last_host_url[0] = request.host_url.rstrip("/")

    app.register_error_handler(TelnyxApiError, _telnyx_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    delivery.start()
    return app


def _telnyx_error(error: TelnyxApiError):
    return jsonify(error.body()), error.status


def _http_error(error: HTTPException):
    status = error.code or 500
    if request.path.startswith("/v2/"):
        # The API side answers in Telnyx's error shape, whatever went wrong.
        code = {404: RESOURCE_NOT_FOUND, 500: UNEXPECTED_ERROR}.get(status, BAD_REQUEST)
        return _telnyx_error(TelnyxApiError(status, code, error.description or code.title))
    return jsonify({"error": error.description}), status


def _unexpected_error(error: Exception):
    log.exception("unexpected error on %s %s", request.method, request.path)
    if request.path.startswith("/v2/"):
        return _telnyx_error(TelnyxApiError(500, UNEXPECTED_ERROR, "the simulator failed"))
    return jsonify({"error": f"the simulator failed: {type(error).__name__}"}), 500
