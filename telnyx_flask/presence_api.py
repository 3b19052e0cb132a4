"""The agents' presence over HTTP: an agent chooses Available or Away."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .auth import agent_required, current_agent
from .errors import ApiError
from .presence import CHOSEN, get_presence
from .request_body import json_object

bp = Blueprint("presence_api", __name__)


@bp.put("/api/agents/me/presence")
@agent_required
def choose_presence():
    """The signed-in agent chooses Available or Away."""
    chosen = json_object().get("presence")
    if not isinstance(chosen, str) or chosen not in CHOSEN:
        raise ApiError(f"presence must be one of {', '.join(CHOSEN)}", code="invalid_presence")
    presence = get_presence().choose(current_agent().id, chosen)
    return jsonify({"success": True, "presence": presence})
