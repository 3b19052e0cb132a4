"""The agents' HTTP API: ringing calls, live events, and answer, decline, hang up."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from . import auth, presence
from .auth import agent_required, current_agent
from .call_status import checked_call_control_id
from .claims import answer_call, decline_call, end_call, ringing_calls, sip_uri_for
from .db import get_db
from .errors import ApiError
from .lifecycle import WorkerDraining, get_draining
from .live_calls import get_live
from .push import StreamBody, StreamSettings, event_stream, get_hub, get_stream_slots
from .rate_limits import agent_actions_limit, check_rate
from .request_body import json_object
from .telnyx_api import get_telnyx

bp = Blueprint("agent_api", __name__)


@bp.get("/api/telnyx/calls/pending")
@agent_required
def pending_calls():
    """Ringing calls, oldest first, in the seed's shape."""
    return jsonify({"success": True, "calls": ringing_calls(get_live())})


@bp.get("/api/telnyx/events")
@agent_required
def events():
    """Server-Sent Events: a snapshot (or catch-up from Last-Event-ID), then live call events.

    ?watch=true is a page that takes no calls (the supervisor's view): its stream does not make
    its agent present, so calls do not ring for someone who only watches."""
    watching = auth.query_flag("watch")
    if get_draining().is_draining:
        # A stream opened here would end at once; the page retries and reaches another worker.
        raise WorkerDraining()
    guard = auth.stream_guard()
    config = current_app.config
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    settings = StreamSettings(
        heartbeat_seconds=config["SSE_HEARTBEAT_SECONDS"],
        lifetime_seconds=config["SSE_LIFETIME_SECONDS"],
        retry_ms=config["SSE_RETRY_MS"],
    )
    slot = get_stream_slots().take(guard.agent_id, watching=watching)
    if not watching:
        presence.page_opened(guard.agent_id)  # known from now on, and not away for want of one
    # Handed to gunicorn as it is (direct_passthrough), without werkzeug's two wrapper layers,
    # which every waiting stream would keep (docs/bench/stream-memory.md). A body that never
    # starts (the client left at once) skips the stream's own release: closing it releases too.
    response = Response(
        StreamBody(event_stream(get_hub(), last_event_id, settings, guard, slot), slot.release),
        mimetype="text/event-stream",
        direct_passthrough=True,
    )
    response.headers["Cache-Control"] = "no-cache"
    # nginx would otherwise buffer the stream and deliver events late, in batches.
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.post("/api/telnyx/calls/<path:call_control_id>/answer")
@agent_required
def answer(call_control_id: str):
    """Take a ringing call: exactly one agent wins, the rest get 409 naming the winner."""
    agent = current_agent()
    check_rate(agent_actions_limit(), agent.id)
    config = current_app.config
    sip_uri = sip_uri_for(agent, config["TELNYX_SIP_DOMAIN"], config["TELNYX_SIP_USERNAME"])
    result = answer_call(
        get_db(),
        get_live(),
        get_telnyx(),
        agent,
        checked_call_control_id(call_control_id),
        sip_uri,
        config["TELNYX_ACTION_DEADLINE_SECONDS"],
    )
    return jsonify({"success": True, **result})


@bp.post("/api/telnyx/calls/<path:call_control_id>/decline")
@agent_required
def decline(call_control_id: str):
    """Reject a ringing call (cause CALL_REJECTED, or USER_BUSY)."""
    check_rate(agent_actions_limit(), current_agent().id)
    cause = json_object(required=False).get("cause", "CALL_REJECTED")
    if not isinstance(cause, str):
        raise ApiError("cause must be a string", code="invalid_cause")
    result = decline_call(
        get_db(),
        get_live(),
        get_telnyx(),
        current_agent(),
        checked_call_control_id(call_control_id),
        cause,
        current_app.config["TELNYX_ACTION_DEADLINE_SECONDS"],
    )
    return jsonify({"success": True, **result})


@bp.post("/api/telnyx/calls/<path:call_control_id>/end")
@agent_required
def end(call_control_id: str):
    """Hang up a call the agent took; already ended is a 200 with already_ended: true."""
    check_rate(agent_actions_limit(), current_agent().id)
    result = end_call(
        get_db(),
        get_live(),
        get_telnyx(),
        current_agent(),
        checked_call_control_id(call_control_id),
        current_app.config["TELNYX_ACTION_DEADLINE_SECONDS"],
    )
    return jsonify({"success": True, **result})
