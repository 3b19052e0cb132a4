"""The Telnyx Call Control v2 API, as the service's TelnyxClient calls it."""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request
from nacl.signing import SigningKey

from . import get_simulator
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


@bp.post("/calls/<call_control_id>/actions/<action>")
def command(call_control_id: str, action: str):
    """Run a Call Control command; every command is recorded with the status it got."""
    simulator = get_simulator()
    body: dict[str, Any] | None = None
    status, error_code, outcome = 200, None, None
    try:
        _authenticate(simulator.api_key)
        body = _json_object()
        refusal = simulator.refusals.take(action)
        if refusal is not None:
            raise refusal
        outcome = simulator.calls.execute(action, call_control_id, body)
        return jsonify(OK_BODY)
    except TelnyxApiError as error:
        status, error_code = error.status, error.code
        raise
    except Exception:
        status = 500
        raise
    finally:
        simulator.calls.record_command(
            action, call_control_id, body, status, error_code=error_code, outcome=outcome
        )


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
