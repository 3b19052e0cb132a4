"""The Telnyx Call Control v2 API, as the service's TelnyxClient calls it.

Commands and status lookups take, in the order they arrive, any delay and refusal queued for
their action (api_faults); a delay is waited out without holding the calls' lock.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Response, jsonify, request
from nacl.signing import SigningKey

from . import Simulator, get_simulator
from .api_faults import ResetWhileWaiting
from .call_control import STATUS_LOOKUP
from .errors import AUTHENTICATION_FAILED, BAD_REQUEST, INVALID_JSON, TelnyxApiError

bp = Blueprint("telnyx_api", __name__, url_prefix="/v2")

OK_BODY = {"data": {"result": "ok"}}
TOKEN_SECONDS = 24 * 3600


def _authenticate(api_key: str | None) -> None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise TelnyxApiError(401, AUTHENTICATION_FAILED, "send 'Authorization: Bearer <API key>'")
    if api_key is not None and not hmac.compare_digest(key.encode(), api_key.encode()):
        raise TelnyxApiError(401, AUTHENTICATION_FAILED, "the API key is not valid")


def _json_object() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}  # e.g. curl -X POST .../actions/hangup with no body
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise TelnyxApiError(400, INVALID_JSON, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise TelnyxApiError(400, BAD_REQUEST, "the request body must be a JSON object")
    return body


def _slow_or_refused(simulator: Simulator, action: str, call_control_id: str) -> None:
    """Wait out a queued delay, then raise a queued refusal; both taken on arrival."""
    delay = simulator.delays.take(action, call_control_id)
    refusal = simulator.refusals.take(action)
    if delay is not None:
        # A client that gives up meanwhile does not stop the request: Telnyx has received it.
        simulator.delays.wait(delay)
    if refusal is not None:
        raise refusal


@contextmanager
def _recorded(record: Callable[[int, str | None], None]) -> Iterator[None]:
    """Record the status a request got (and Telnyx's error code), however it ends; a request
    caught by a reset while it waited is not recorded: the reset forgot everything before it."""
    try:
        yield
    except ResetWhileWaiting:
        raise
    except TelnyxApiError as error:
        record(error.status, error.code)
        raise
    except Exception:
        record(500, None)
        raise
    record(200, None)


@bp.post("/calls/<call_control_id>/actions/<action>")
def command(call_control_id: str, action: str):
    """Run a Call Control command; every command is recorded with the status it got."""
    simulator = get_simulator()
    body: dict[str, Any] | None = None
    outcome = None

    def record(status: int, error_code: str | None) -> None:
        simulator.calls.record_command(
            action, call_control_id, body, status, error_code=error_code, outcome=outcome
        )

    with _recorded(record):
        _authenticate(simulator.api_key)
        body = _json_object()
        _slow_or_refused(simulator, action, call_control_id)
        outcome = simulator.calls.execute(action, call_control_id, body)
        return jsonify(OK_BODY)


@bp.get("/calls/<call_control_id>")
def call_status(call_control_id: str):
    """Retrieve a call status: is the leg alive, and for how long it has talked."""
    simulator = get_simulator()
    is_alive = None

    def record(status: int, error_code: str | None) -> None:
        simulator.calls.record_status_lookup(
            call_control_id, status, error_code=error_code, is_alive=is_alive
        )

    with _recorded(record):
        _authenticate(simulator.api_key)
        _slow_or_refused(simulator, STATUS_LOOKUP, call_control_id)
        call = simulator.calls.status(call_control_id)
        is_alive = call["is_alive"]
        return jsonify({"data": call})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def credential_token(seed: bytes, credential_id: str) -> str:
    """A JWT (EdDSA, signed with the simulator's key) naming the telephony credential."""
    now = int(time.time())
    header = {"alg": "EdDSA", "typ": "JWT"}
    claims = {
        "iss": "telnyx-simulator",
        "sub": credential_id,
        "iat": now,
        "exp": now + TOKEN_SECONDS,
        "jti": str(uuid.uuid4()),
    }
    signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
    signature = SigningKey(seed).sign(signing_input.encode()).signature
    return f"{signing_input}.{_b64url(signature)}"


@bp.post("/telephony_credentials/<credential_id>/token")
def telephony_token(credential_id: str):
    """A login token for the browser's WebRTC client, as text."""
    simulator = get_simulator()
    _authenticate(simulator.api_key)
    token = credential_token(simulator.signing_seed, credential_id)
    return Response(token, status=201, mimetype="text/plain")
