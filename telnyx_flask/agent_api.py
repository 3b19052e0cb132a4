"""The agents' HTTP API: the calls ringing now."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .auth import agent_required
from .calls import ringing_calls
from .live import get_live

bp = Blueprint("agent_api", __name__)


@bp.get("/api/telnyx/calls/pending")
@agent_required
def pending_calls():
    """Ringing calls, oldest first, in the seed's shape."""
    return jsonify({"success": True, "calls": ringing_calls(get_live())})
