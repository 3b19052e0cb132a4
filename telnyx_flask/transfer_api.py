"""The agents' HTTP API for transfers to a colleague, and the colleague list the page offers."""

from __future__ import annotations

import uuid

from flask import Blueprint, Flask, current_app, jsonify

from . import presence
from .auth import agent_required, current_agent
from .call_status import checked_call_control_id
from .claims import sip_uri_for
from .db import get_db
from .errors import ApiError
from .live_calls import get_live
from .rate_limits import agent_actions_limit, check_rate
from .request_body import json_object
from .telnyx_api import get_telnyx
from .transfer_offers import TransferOffers
from .transfers import (
    accept_transfer,
    cancel_transfer,
    decline_transfer,
    offer_transfer,
)

bp = Blueprint("transfer_api", __name__)

# A uuid in any of the spellings uuid.UUID takes is well under this.
MAX_AGENT_ID = 64
TRANSFER_PATH = "/api/telnyx/calls/<path:call_control_id>/transfer"


def get_offers() -> TransferOffers:
    """The application's TransferOffers."""
    return current_app.extensions["transfer_offers"]


def _agent_id(body: dict) -> str:
    value = body.get("agent_id")
    wrong = ApiError("agent_id must be a colleague's id (a uuid)", code="invalid_agent_id")
    if not isinstance(value, str) or len(value) > MAX_AGENT_ID:
        raise wrong
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise wrong from None


@bp.get("/api/agents")
@agent_required
def agents():
    """Every active agent with their presence: the page lists the available ones to transfer to."""
    return jsonify({"success": True, "agents": presence.agents()})


@bp.post(TRANSFER_PATH)
@agent_required
def offer(call_control_id: str):
    """Offer the agent's answered call to an available colleague, whose page then rings."""
    agent = current_agent()
    check_rate(agent_actions_limit(), agent.id)
    colleague_id = _agent_id(json_object())
    result = offer_transfer(
        get_db(),
        get_offers(),
        agent,
        checked_call_control_id(call_control_id),
        colleague_id,
        current_app.config["TRANSFER_RING_SECONDS"],
        current_app.config["TELNYX_SIP_USERNAME"],
    )
    return jsonify({"success": True, **result})


@bp.delete(TRANSFER_PATH)
@agent_required
def cancel(call_control_id: str):
    """Take back an offer nobody has answered yet; the call stays with this agent."""
    agent = current_agent()
    check_rate(agent_actions_limit(), agent.id)
    result = cancel_transfer(get_offers(), agent, checked_call_control_id(call_control_id))
    return jsonify({"success": True, **result})


@bp.post(f"{TRANSFER_PATH}/accept")
@agent_required
def accept(call_control_id: str):
    """Take the call offered to this agent: Telnyx transfers the caller to their phone."""
    agent = current_agent()
    check_rate(agent_actions_limit(), agent.id)
    config = current_app.config
    sip_uri = sip_uri_for(agent, config["TELNYX_SIP_DOMAIN"], config["TELNYX_SIP_USERNAME"])
    result = accept_transfer(
        get_db(),
        get_live(),
        get_offers(),
        get_telnyx(),
        agent,
        checked_call_control_id(call_control_id),
        sip_uri,
        config["TELNYX_ACTION_DEADLINE_SECONDS"],
    )
    return jsonify({"success": True, **result})


@bp.post(f"{TRANSFER_PATH}/decline")
@agent_required
def decline(call_control_id: str):
    """Say no to a call offered to this agent; it stays with the agent who offered it."""
    agent = current_agent()
    check_rate(agent_actions_limit(), agent.id)
    result = decline_transfer(get_offers(), agent, checked_call_control_id(call_control_id))
    return jsonify({"success": True, **result})


def init_app(app: Flask) -> None:
    """Register the transfer scripts and the routes."""
    app.extensions["transfer_offers"] = TransferOffers(app.extensions["live"])
    app.register_blueprint(bp)
