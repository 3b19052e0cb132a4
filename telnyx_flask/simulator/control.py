"""The simulator's own endpoints: start and end calls, set chaos, and observe without sleeping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request

from . import audio, get_simulator
from .call_control import (
    ACTIONS,
    E164,
    MAX_MESSAGE_SECONDS,
    STATUS_LOOKUP,
    TRANSFER_MODES,
    CallStateError,
)
from .delivery import Delivery
from .errors import BAD_REQUEST, ErrorCode, TelnyxApiError

bp = Blueprint("simulator_control", __name__)

MAX_WAIT_SECONDS = 60.0
MAX_CALLER_NAME = 128
CALL_FIELDS = {"from", "to", "caller_name", "transfer_behaviour", "delivery", "message_seconds"}
HANGUP_FIELDS = {"deliver"}
MAX_TIMES = 100
DELAYABLE = (*ACTIONS, STATUS_LOOKUP)


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="the body must be a JSON object")
    return body


def _number_arg(name: str, cast: type, low: float, high: float) -> Any:
    text = request.args.get(name)
    if text is None or text == "":
        return None
    try:
        value = cast(text)
    except ValueError:
        abort(400, description=f"{name} must be a number")
    if not low <= value <= high:
        abort(400, description=f"{name} must be from {low} to {high}")
    return value


@bp.get("/healthz")
def healthz():
    """Liveness."""
    return jsonify({"status": "ok"})


@bp.get("/sim/public-key")
def public_key():
    """The base64 Ed25519 public key the service must use as TELNYX_PUBLIC_KEY."""
    return jsonify({"public_key": get_simulator().public_key})


@bp.post("/sim/calls")
def start_call():
    """A caller dials in: {"from", "to", "caller_name"?, "transfer_behaviour"?, "delivery"?,
    "message_seconds"?} (the last: at a recording's beep, the caller talks that long, hangs up)."""
    body = _json_object()
    unknown = set(body) - CALL_FIELDS
    if unknown:
        abort(400, description=f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in ("from", "to"):
        value = body.get(name)
        if not isinstance(value, str) or not E164.match(value):
            abort(400, description=f"'{name}' must be an E.164 number like +13125550147")
    caller_name = body.get("caller_name")
    if caller_name is not None and (
        not isinstance(caller_name, str) or len(caller_name) > MAX_CALLER_NAME
    ):
        abort(400, description=f"'caller_name' must be a string of at most {MAX_CALLER_NAME}")
    mode = body.get("transfer_behaviour")
    if mode is not None and mode not in TRANSFER_MODES:
        abort(400, description=f"'transfer_behaviour' must be one of {', '.join(TRANSFER_MODES)}")
    delivery = body.get("delivery")
    if delivery is not None:
        try:
            delivery = Delivery.check_overrides(delivery)
        except ValueError as error:
            abort(400, description=str(error))
    message_seconds = body.get("message_seconds")
    if message_seconds is not None and (
        isinstance(message_seconds, bool)
        or not isinstance(message_seconds, int | float)
        or not 0 <= message_seconds <= MAX_MESSAGE_SECONDS
    ):
        abort(400, description=f"'message_seconds' must be from 0 to {MAX_MESSAGE_SECONDS}")
    ids = get_simulator().calls.start_call(
        body["from"],
        body["to"],
        caller_name,
        transfer_mode=mode,
        delivery=delivery,
        message_seconds=message_seconds,
    )
    return jsonify(ids), 201


@bp.get("/sim/calls")
def list_calls():
    """Every call so far, with its legs."""
    return jsonify({"data": get_simulator().calls.calls()})


@bp.get("/sim/calls/<call_control_id>")
def show_call(call_control_id: str):
    """The call a leg belongs to: its legs (state, recordings) and the commands received."""
    call = get_simulator().calls.call(call_control_id)
    if call is None:
        abort(404, description="no call with that call_control_id")
    return jsonify(call)


@bp.post("/sim/calls/<call_control_id>/hangup")
def remote_hangup(call_control_id: str):
    """The caller or the agent's phone hangs up; with {"deliver": false} no webhook tells of it."""
    # No body at all is the common case (curl -X POST), and means deliver as usual.
    body = _json_object() if request.get_data(cache=True).strip() else {}
    unknown = set(body) - HANGUP_FIELDS
    if unknown:
        abort(400, description=f"unknown field(s): {', '.join(sorted(unknown))}")
    deliver = body.get("deliver", True)
    if not isinstance(deliver, bool):
        abort(400, description="'deliver' must be true or false")
    try:
        leg = get_simulator().calls.remote_hangup(call_control_id, deliver=deliver)
    except KeyError:
        abort(404, description="no call with that call_control_id")
    except CallStateError as error:
        abort(409, description=str(error))
    return jsonify(leg)


@bp.route("/sim/transfer-behaviour", methods=["GET", "POST"])
def transfer_behaviour():
    """What the agent's phone does when a transfer rings it: answer, busy or no-answer."""
    calls = get_simulator().calls
    if request.method == "POST":
        mode = _json_object().get("mode")
        if not isinstance(mode, str):  # the answer set_transfer_mode gives any unknown mode
            abort(400, description=f"mode must be one of {', '.join(TRANSFER_MODES)}")
        try:
            calls.set_transfer_mode(mode)
        except ValueError as error:
            abort(400, description=str(error))
    return jsonify({"mode": calls.transfer_mode})


@bp.route("/sim/media", methods=["GET", "POST"])
def media():
    """How long a speak or playback plays before its .ended webhook: {"seconds"} (0: at once)."""
    calls = get_simulator().calls
    if request.method == "POST":
        try:
            calls.set_media_seconds(_json_object().get("seconds"))  # type: ignore[arg-type]
        except ValueError as error:
            abort(400, description=str(error))
    return jsonify({"seconds": calls.media_seconds})


def _times(body: dict[str, Any]) -> int:
    times = body.get("times", 1)
    if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= MAX_TIMES:
        abort(400, description=f"times must be between 1 and {MAX_TIMES}")
    return times


@bp.post("/sim/refusals")
def refuse_commands():
    """Answer the next `times` commands of `action` (or "status" lookups) with this error."""
    body = _json_object()
    action = body.get("action")
    status = body.get("status", 422)
    if not isinstance(action, str) or not action:
        abort(400, description="action is required (answer, transfer, reject, hangup, status...)")
    if not isinstance(status, int) or not 400 <= status <= 599:
        abort(400, description="status must be an HTTP error status (400-599)")
    times = _times(body)
    code = ErrorCode(str(body.get("code", BAD_REQUEST.code)), str(body.get("title", "Refused")))
    detail = str(body.get("detail", "refused by the simulator"))
    get_simulator().refusals.add(action, TelnyxApiError(status, code, detail), times)
    return jsonify({"action": action, "status": status, "times": times}), 201


@bp.route("/sim/delays", methods=["GET", "POST"])
def delays():
    """POST: hold the next `times` requests of `action` back; GET: those held (and wait_for=N)."""
    faults = get_simulator().delays
    if request.method == "GET":
        wait_for = _number_arg("wait_for", int, 0, 100_000)
        timeout = _number_arg("timeout", float, 0, MAX_WAIT_SECONDS)
        if wait_for is None:
            return jsonify({**faults.snapshot(), "complete": True})
        found, complete = faults.wait_for_delayed(wait_for, 5.0 if timeout is None else timeout)
        return jsonify({**found, "complete": complete}), 200 if complete else 408
    body = _json_object()
    action = body.get("action")
    seconds = body.get("seconds")
    if action not in DELAYABLE:
        abort(400, description=f"action must be one of {', '.join(DELAYABLE)}")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        abort(400, description="seconds must be a number")
    times = _times(body)
    try:
        faults.add(action, seconds, times)
    except ValueError as error:
        abort(400, description=str(error))
    return jsonify({"action": action, "seconds": seconds, "times": times}), 201


@bp.route("/sim/delivery", methods=["GET", "POST"])
def delivery_settings():
    """Chaos options: duplicate, delay_ms, reorder, reorder_window_ms; also webhook_url."""
    delivery = get_simulator().delivery
    if request.method == "GET":
        return jsonify(delivery.settings())
    try:
        return jsonify(delivery.configure(_json_object()))
    except ValueError as error:
        abort(400, description=str(error))


def _received(
    read: Callable[[], list[dict[str, Any]]],
    wait: Callable[[int, float], tuple[list[dict[str, Any]], bool]],
):
    wait_for = _number_arg("wait_for", int, 0, 100_000)
    timeout = _number_arg("timeout", float, 0, MAX_WAIT_SECONDS)
    if wait_for is None:
        return jsonify({"data": read(), "complete": True})
    found, complete = wait(wait_for, 5.0 if timeout is None else timeout)
    return jsonify({"data": found, "complete": complete}), 200 if complete else 408


@bp.get("/sim/commands")
def commands():
    """Commands received; with wait_for=N, block until N match or `timeout` s pass (then 408)."""
    calls = get_simulator().calls
    action = request.args.get("action") or None
    call_control_id = request.args.get("call_control_id") or None
    return _received(
        lambda: calls.commands(action, call_control_id),
        lambda n, timeout: calls.wait_for_commands(n, action, call_control_id, timeout),
    )


@bp.get("/sim/status-lookups")
def status_lookups():
    """GET /v2/calls/<id> received; wait_for=N and timeout as for /sim/commands."""
    calls = get_simulator().calls
    call_control_id = request.args.get("call_control_id") or None
    return _received(
        lambda: calls.status_lookups(call_control_id),
        lambda n, timeout: calls.wait_for_status_lookups(n, call_control_id, timeout),
    )


@bp.get("/sim/deliveries")
def deliveries():
    """Every delivery attempt; with wait_idle=S, first block until nothing is left to send."""
    delivery = get_simulator().delivery
    wait_idle = _number_arg("wait_idle", float, 0, MAX_WAIT_SECONDS)
    idle = delivery.wait_idle(wait_idle) if wait_idle is not None else delivery.pending() == 0
    log = delivery.deliveries(
        request.args.get("event_type") or None, request.args.get("call_session_id") or None
    )
    body = {"data": log, "idle": idle, "pending": delivery.pending()}
    return jsonify(body), 408 if wait_idle is not None and not idle else 200


@bp.post("/sim/reset")
def reset():
    """Forget every call, command, delivery, refusal and delay; chaos off; the phone answers."""
    get_simulator().reset()
    return jsonify({"result": "ok"})


@bp.get("/sim/recordings/<recording_id>.<any(mp3, wav):fmt>")
def recording(recording_id: str, fmt: str):
    """A recording's audio, generated: a tone in WAV, silence in MP3."""
    found = get_simulator().calls.recording(recording_id)
    if found is None:
        abort(404, description="no such recording")
    body = audio.recording_bytes(fmt, found.channels)
    return Response(body, mimetype=audio.CONTENT_TYPES[fmt])
