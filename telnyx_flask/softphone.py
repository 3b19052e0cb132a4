"""What the softphone page needs from the server besides the call API: the page itself, its
settings, WebRTC login tokens, the pinned WebRTC SDK, and (against the simulator) test calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from flask import Blueprint, Response, current_app, jsonify, send_file, url_for

from .auth import agent_required, current_agent
from .claims import AGENT_CALL_HEADER, TelnyxRefused, require_telnyx, sip_uri_for
from .db import get_db
from .errors import ApiError
from .phone_numbers import MAX_PHONE_LENGTH, to_e164
from .rate_limits import check_rate, webrtc_tokens_limit
from .request_body import json_object
from .telnyx_api import TelnyxError, get_telnyx
from .users import Agent

bp = Blueprint("softphone", __name__)
# Registered only in development (create_app): production has no such route at all.
dev_bp = Blueprint("softphone_dev", __name__)

# The page loads only its own files; the WebRTC SDK talks to Telnyx's signalling hosts.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "connect-src 'self' wss://*.telnyx.com https://*.telnyx.com",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    )
)
# Telnyx's login tokens are valid for 24 hours.
WEBRTC_TOKEN_SECONDS = 24 * 3600
DEFAULT_SIMULATED_FROM = "+13125550147"
DEFAULT_SIMULATED_TO = "+14155550123"
SIMULATOR_TIMEOUT_SECONDS = 5
# A simulated caller who reaches voicemail leaves a message this long, then hangs up (rather
# than talking to the recording until VOICEMAIL_MAX_SECONDS).
SIMULATED_MESSAGE_SECONDS = 5


class NotConfigured(ApiError):
    """A feature the server is not set up for."""

    status = 409
    code = "not_configured"


class SimulatorUnavailable(ApiError):
    """The Telnyx simulator did not answer, or refused."""

    status = 502
    code = "simulator_unavailable"


@dataclass(frozen=True)
class WebRtc:
    """Whether this agent's page can take calls in the browser, and if not, why."""

    credential_id: str | None
    reason: str | None

    @property
    def enabled(self) -> bool:
        return self.reason is None


def webrtc_for(agent: Agent) -> WebRtc:
    """The agent's telephony credential and readiness: its own, else TELNYX_CREDENTIAL_ID only
    when WEBRTC_SHARED_CREDENTIAL allows sharing one between agents."""
    config = current_app.config
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT telephony_credential_id FROM users WHERE id = %s", (agent.id,))
        row = cur.fetchone()
    own = row[0] if row else None
    shared = config["TELNYX_CREDENTIAL_ID"]
    # Every page signed in with a shared credential is rung with every agent's calls; the page
    # picks its own by a SIP header, but sharing stays an explicit choice.
    credential_id = own or (shared if config["WEBRTC_SHARED_CREDENTIAL"] else None)
    if not config["WEBRTC_ENABLED"]:
        reason = "in-browser audio is turned off on this server (WEBRTC_ENABLED=false)"
    elif config["TELNYX_API_KEY"] is None:
        reason = "TELNYX_API_KEY is not set"
    elif credential_id is None and shared is not None:
        reason = (
            "this agent has no Telnyx telephony credential of its own, and sharing "
            "TELNYX_CREDENTIAL_ID between agents is off (WEBRTC_SHARED_CREDENTIAL=false)"
        )
    elif credential_id is None:
        reason = "this agent has no Telnyx telephony credential"
    elif not config["WEBRTC_SDK_PATH"].is_file():
        reason = "the Telnyx WebRTC SDK is not installed on the server (run `npm ci`)"
    else:
        reason = None
    return WebRtc(credential_id, reason)


def _sip_uri(agent: Agent) -> str | None:
    config = current_app.config
    try:
        return sip_uri_for(agent, config["TELNYX_SIP_DOMAIN"], config["TELNYX_SIP_USERNAME"])
    except ApiError:
        return None


def static_page(name: str) -> Response:
    """One of static/'s pages, with the headers every page gets (its CSP above all)."""
    response = current_app.send_static_file(name)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.get("/")
def index() -> Response:
    """The softphone page."""
    return static_page("index.html")


@bp.get("/vendor/telnyx-webrtc.mjs")
def webrtc_sdk() -> Response:
    """The pinned @telnyx/webrtc bundle from node_modules, never a CDN."""
    path = current_app.config["WEBRTC_SDK_PATH"]
    if not path.is_file():
        raise ApiError(
            "the Telnyx WebRTC SDK is not installed (run `npm ci`)",
            status=404,
            code="not_installed",
        )
    return send_file(path, mimetype="text/javascript", max_age=3600)


@bp.get("/api/softphone/config")
@agent_required
def page_config():
    """What the page should offer this agent: where calls go, browser audio, the simulator."""
    agent = current_agent()
    config = current_app.config
    webrtc = webrtc_for(agent)
    return jsonify(
        {
            "success": True,
            "agent": agent.public(),
            "sip_uri": _sip_uri(agent),
            "webrtc": {
                "enabled": webrtc.enabled,
                "reason": webrtc.reason,
                "sdk_url": url_for("softphone.webrtc_sdk"),
                # The SIP header on the transferred leg that names the call this agent took.
                "call_header": AGENT_CALL_HEADER,
            },
            "simulator": {
                "enabled": config["APP_ENV"] == "development"
                and config["TELNYX_SIMULATOR_URL"] is not None
            },
            "ring_timeout_seconds": config["RING_TIMEOUT_SECONDS"],
            # The after-call form's choices and limit (call_notes.py checks the same).
            "dispositions": list(config["CALL_DISPOSITIONS"]),
            "note_max_chars": config["CALL_NOTE_MAX_CHARS"],
        }
    )


@bp.post("/api/telnyx/webrtc/token")
@agent_required
def webrtc_token():
    """A Telnyx WebRTC login token for the agent's credential; the SIP password stays here."""
    agent = current_agent()
    check_rate(webrtc_tokens_limit(), agent.id)
    webrtc = webrtc_for(agent)
    if webrtc.credential_id is None:
        raise NotConfigured(
            webrtc.reason or "no telephony credential", code="webrtc_not_configured"
        )
    telnyx = require_telnyx(get_telnyx())
    try:
        token = telnyx.webrtc_token(webrtc.credential_id)
    except TelnyxError as error:
        raise TelnyxRefused(error) from error
    response = jsonify({"success": True, "login_token": token, "expires_in": WEBRTC_TOKEN_SECONDS})
    response.headers["Cache-Control"] = "no-store"
    return response


def _number(body: dict[str, Any], field: str, default: str) -> str:
    value = body.get(field, default)
    try:
        if not isinstance(value, str) or len(value) > MAX_PHONE_LENGTH:
            raise ValueError(value)
        return to_e164(value)
    except ValueError:
        raise ApiError(f"{field} must be a phone number", code=f"invalid_{field}") from None


@dev_bp.post("/api/dev/simulated-calls")
@agent_required
def simulate_call():
    """Ask the Telnyx simulator (TELNYX_SIMULATOR_URL) to ring this service with a new call."""
    base = current_app.config["TELNYX_SIMULATOR_URL"]
    if base is None:
        raise NotConfigured("TELNYX_SIMULATOR_URL is not set", code="simulator_not_configured")
    body = json_object(required=False)
    caller = _number(body, "from", DEFAULT_SIMULATED_FROM)
    called = _number(body, "to", current_app.config["TELNYX_CALLER_ID"] or DEFAULT_SIMULATED_TO)
    try:
        reply = requests.post(
            f"{base}/sim/calls",
            json={"from": caller, "to": called, "message_seconds": SIMULATED_MESSAGE_SECONDS},
            timeout=SIMULATOR_TIMEOUT_SECONDS,
        )
        reply.raise_for_status()
        call_control_id = reply.json()["call_control_id"]
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise SimulatorUnavailable(f"the Telnyx simulator did not start a call: {exc}") from exc
    return jsonify(
        {"success": True, "call_control_id": call_control_id, "from": caller, "to": called}
    ), 201
