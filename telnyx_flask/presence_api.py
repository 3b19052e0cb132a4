"""The agents' presence over HTTP: an agent chooses Available or Away."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from .auth import agent_required, current_agent
from .errors import ApiError
from .presence import CHOSEN, get_presence
from .rate_limits import Limit, check_rate
from .request_body import json_object

bp = Blueprint("presence_api", __name__)


def presence_changes_limit() -> Limit:
    """Presence changes, counted apart from call actions (so many as AGENT_ACTIONS_PER_MINUTE):
    switching back and forth must not use up an agent's answers."""
    per_minute = current_app.config["AGENT_ACTIONS_PER_MINUTE"]
    return Limit("presence", per_minute, 60, "presence changes")


@bp.put("/api/agents/me/presence")
@agent_required
def choose_presence():
    """The signed-in agent chooses Available or Away."""
    agent = current_agent()
    check_rate(presence_changes_limit(), agent.id)
    chosen = json_object().get("presence")
    if not isinstance(chosen, str) or chosen not in CHOSEN:
        raise ApiError(f"presence must be one of {', '.join(CHOSEN)}", code="invalid_presence")
    presence = get_presence().choose(agent.id, chosen)
    return jsonify({"success": True, "presence": presence})
