"""Simulated calls: legs, their state machine, and the Call Control commands that drive it.

Every change happens under one lock, and the webhooks a change causes are queued while that
lock is held, so each call's events are queued in the order they happened.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from . import webhook_bodies
from .errors import (
    CALL_ALREADY_ENDED,
    CALL_NOT_ANSWERED,
    INVALID_CALL_CONTROL_ID,
    INVALID_CALL_STATE,
    RESOURCE_NOT_FOUND,
    TelnyxApiError,
    invalid_parameter,
    missing_parameter,
)

INCOMING, OUTGOING = "incoming", "outgoing"
PARKED, BRIDGING, ANSWERED, BRIDGED, ENDED = "parked", "bridging", "answered", "bridged", "ended"

ACTIONS = (
    "answer",
    "transfer",
    "reject",
    "hangup",
    "record_start",
    "record_stop",
    "speak",
    "playback_start",
)
# The name refusals and delays use for GET /v2/calls/<id>, which is not a command.
STATUS_LOOKUP = "status"
TRANSFER_MODES = ("answer", "busy", "no-answer")
RECORD_FORMATS = ("mp3", "wav")
RECORD_CHANNELS = ("single", "dual")
# reject cause -> (hangup_cause, sip_hangup_cause) Telnyx reports for the rejected leg.
REJECT_CAUSES = {"CALL_REJECTED": ("call_rejected", "603"), "USER_BUSY": ("user_busy", "486")}
# transfer mode -> (hangup_cause, sip_hangup_cause) of the agent leg when it does not pick up.
FAILED_TRANSFER = {"busy": ("user_busy", "486"), "no-answer": ("timeout", "408")}
TRANSFER_TIMEOUT_RANGE = (5, 600)
MAX_RECORDING_SECONDS = 14400
SPEAK_PAYLOAD_TYPES = ("text", "ssml")
# How long a simulated caller may talk into a voicemail, and a greeting may play.
MAX_MESSAGE_SECONDS = 3600
MAX_MEDIA_SECONDS = 600
# How a speak or playback ended, as Telnyx reports it in call.speak.ended / call.playback.ended.
MEDIA_COMPLETED, MEDIA_CALL_HANGUP = "completed", "call_hangup"

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
DEFAULT_CONNECTION_ID = "1684641123236054244"
DEDUP_SECONDS = 60.0


class EventSink(Protocol):
    """Where the calls send the webhooks they cause (delivery.Delivery)."""

    def open_session(self, session_id: str, overrides: dict[str, Any] | None) -> None: ...

    def enqueue(self, data: dict[str, Any], session_id: str) -> None: ...

    def close_session(self, session_id: str) -> None: ...


class CallStateError(Exception):
    """A simulated caller action the call's state does not allow (already hung up, say)."""


@dataclass
class Recording:
    """One record_start .. hangup/record_stop span of a leg."""

    id: str
    format: str
    channels: str
    started_at: datetime
    ended_at: datetime | None = None

    def snapshot(self, urls: dict[str, str]) -> dict[str, Any]:
        """The recording as GET /sim/calls shows it."""
        return {
            "id": self.id,
            "format": self.format,
            "channels": self.channels,
            "started_at": webhook_bodies.timestamp(self.started_at),
            "ended_at": webhook_bodies.timestamp(self.ended_at) if self.ended_at else None,
            "urls": urls,
        }


@dataclass
class Media:
    """A speak or playback_start playing to a leg, until it ends or the leg hangs up."""

    kind: str  # speak | playback
    started_at: datetime
    text: str | None = None
    audio_url: str | None = None
    ended_at: datetime | None = None
    status: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """The greeting as GET /sim/calls shows it."""
        return {
            "kind": self.kind,
            "text": self.text,
            "audio_url": self.audio_url,
            "started_at": webhook_bodies.timestamp(self.started_at),
            "ended_at": webhook_bodies.timestamp(self.ended_at) if self.ended_at else None,
            "status": self.status,
        }


@dataclass
class Leg:
    """One leg of a call: the caller's (incoming) or the one a transfer dials (outgoing)."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str
    connection_id: str
    direction: str
    from_: str
    to: str
    start_time: datetime
    state: str
    caller_name: str | None = None
    client_state: str | None = None
    transfer_mode: str | None = None
    answered_at: datetime | None = None
    end_time: datetime | None = None
    hangup_cause: str | None = None
    hangup_source: str | None = None
    sip_hangup_cause: str | None = None
    partner: str | None = None
    recording: Recording | None = None
    recordings: list[Recording] = field(default_factory=list)
    # A greeting playing to the leg (speak or playback_start), and what the caller does once a
    # recording starts: talk for this many seconds, then hang up (a voicemail message).
    media: Media | None = None
    media_played: list[Media] = field(default_factory=list)
    message_seconds: float | None = None

    @property
    def ended(self) -> bool:
        """True once the leg has hung up."""
        return self.state == ENDED

    def status(self, now: datetime) -> dict[str, Any]:
        """The leg as GET /v2/calls/<id> shows it (Telnyx's Call object)."""
        # Counted from the answer: Telnyx's documented example has a call_duration shorter than
        # end_time - start_time, and a call that only rang has nobody talking to time.
        if self.answered_at is None:
            duration = 0
        else:
            duration = int(((self.end_time or now) - self.answered_at).total_seconds())
        return {
            "record_type": "call",
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "client_state": self.client_state,
            "is_alive": not self.ended,
            "call_duration": duration,
            "start_time": webhook_bodies.timestamp(self.start_time),
            "end_time": webhook_bodies.timestamp(self.end_time) if self.end_time else None,
        }

    def snapshot(self, recording_urls: Callable[[str], dict[str, str]]) -> dict[str, Any]:
        """The leg as GET /sim/calls shows it."""

        def stamp(moment: datetime | None) -> str | None:
            return webhook_bodies.timestamp(moment) if moment else None

        return {
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "direction": self.direction,
            "from": self.from_,
            "to": self.to,
            "caller_name": self.caller_name,
            "state": self.state,
            "client_state": self.client_state,
            "start_time": stamp(self.start_time),
            "answered_at": stamp(self.answered_at),
            "end_time": stamp(self.end_time),
            "hangup_cause": self.hangup_cause,
            "hangup_source": self.hangup_source,
            "bridged_with": self.partner,
            "recorded": bool(self.recordings),
            "recording_active": self.recording is not None,
            "recordings": [r.snapshot(recording_urls(r.id)) for r in self.recordings],
            "media": [m.snapshot() for m in self.media_played],
            "message_seconds": self.message_seconds,
        }


def new_call_control_id() -> str:
    """An id shaped like Telnyx's: "v3:" and a long url-safe token."""
    return f"v3:{secrets.token_urlsafe(48)}"


def _not_answered(leg: Leg, action: str) -> TelnyxApiError:
    return TelnyxApiError(
        422, CALL_NOT_ANSWERED, f"{action} needs an answered call; this leg is {leg.state}"
    )


def _invalid_state(detail: str) -> TelnyxApiError:
    return TelnyxApiError(422, INVALID_CALL_STATE, detail)


# --- parameter checks, before any state is looked at --------------------------------------------


def _optional_string(body: dict[str, Any], name: str) -> None:
    if name in body and body[name] is not None and not isinstance(body[name], str):
        raise invalid_parameter(name, f"'{name}' must be a string")


def _check_client_state(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, str):
        raise invalid_parameter(name, f"'{name}' must be a base64-encoded string")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_parameter(name, f"'{name}' must be valid base64") from None


def _check_common(body: dict[str, Any]) -> None:
    command_id = body.get("command_id")
    if command_id is not None and (not isinstance(command_id, str) or not command_id.strip()):
        raise invalid_parameter("command_id", "'command_id' must be a non-empty string")
    _check_client_state(body, "client_state")


def _check_transfer(body: dict[str, Any]) -> None:
    if body.get("to") is None:
        raise missing_parameter("to")
    if not isinstance(body["to"], str) or not body["to"].strip():
        raise invalid_parameter("to", "'to' must be a phone number or SIP URI")
    _optional_string(body, "from")
    timeout = body.get("timeout_secs")
    if timeout is not None:
        low, high = TRANSFER_TIMEOUT_RANGE
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not low <= timeout <= high:
            raise invalid_parameter(
                "timeout_secs", f"'timeout_secs' must be an integer from {low} to {high}"
            )
    _check_client_state(body, "target_leg_client_state")


def _check_reject(body: dict[str, Any]) -> None:
    if body.get("cause") is None:
        raise missing_parameter("cause")
    if body["cause"] not in REJECT_CAUSES:
        raise invalid_parameter("cause", f"'cause' must be one of {', '.join(REJECT_CAUSES)}")


def _check_record_start(body: dict[str, Any]) -> None:
    for name, allowed in (("format", RECORD_FORMATS), ("channels", RECORD_CHANNELS)):
        if body.get(name) is None:
            raise missing_parameter(name)
        if body[name] not in allowed:
            raise invalid_parameter(name, f"'{name}' must be one of {', '.join(allowed)}")
    if "play_beep" in body and not isinstance(body["play_beep"], bool):
        raise invalid_parameter("play_beep", "'play_beep' must be a boolean")
    max_length = body.get("max_length")
    if max_length is not None and (
        isinstance(max_length, bool)
        or not isinstance(max_length, int)
        or not 0 <= max_length <= MAX_RECORDING_SECONDS
    ):
        raise invalid_parameter(
            "max_length", f"'max_length' must be an integer from 0 to {MAX_RECORDING_SECONDS}"
        )
    if body.get("trim") not in (None, "trim-silence"):
        raise invalid_parameter("trim", "'trim' must be 'trim-silence'")


def _required_text(body: dict[str, Any], name: str) -> None:
    if body.get(name) is None:
        raise missing_parameter(name)
    if not isinstance(body[name], str) or not body[name].strip():
        raise invalid_parameter(name, f"'{name}' must be a non-empty string")


def _check_speak(body: dict[str, Any]) -> None:
    _required_text(body, "payload")
    _required_text(body, "voice")
    _optional_string(body, "language")
    if body.get("payload_type") not in (None, *SPEAK_PAYLOAD_TYPES):
        raise invalid_parameter(
            "payload_type", f"'payload_type' must be one of {', '.join(SPEAK_PAYLOAD_TYPES)}"
        )


def _check_playback_start(body: dict[str, Any]) -> None:
    url, content = body.get("audio_url"), body.get("playback_content")
    if url is None and content is None:
        raise missing_parameter("audio_url")
    if url is not None and (
        not isinstance(url, str) or not url.startswith(("https://", "http://"))
    ):
        raise invalid_parameter("audio_url", "'audio_url' must be an http(s) URL")
    if content is not None:
        if not isinstance(content, str):
            raise invalid_parameter("playback_content", "'playback_content' must be base64")
        try:
            base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_parameter(
                "playback_content", "'playback_content' must be valid base64"
            ) from None
    if "overlay" in body and not isinstance(body["overlay"], bool):
        raise invalid_parameter("overlay", "'overlay' must be a boolean")


_PARAMETER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "transfer": _check_transfer,
    "reject": _check_reject,
    "record_start": _check_record_start,
    "speak": _check_speak,
    "playback_start": _check_playback_start,
}


def check_parameters(action: str, body: dict[str, Any]) -> None:
    """Raise TelnyxApiError (404 or 422) unless Telnyx would accept these parameters."""
    if action not in ACTIONS:
        raise TelnyxApiError(
            404, RESOURCE_NOT_FOUND, f"the simulator does not implement the '{action}' action"
        )
    _check_common(body)
    check = _PARAMETER_CHECKS.get(action)
    if check is not None:
        check(body)


class CallControl:
    """All simulated calls, the commands received for them, and the rules Telnyx applies."""

    def __init__(
        self,
        sink: EventSink,
        recording_url: Callable[[str, str], str],
        *,
        connection_id: str = DEFAULT_CONNECTION_ID,
        dedup_seconds: float = DEDUP_SECONDS,
    ) -> None:
        """`recording_url(recording_id, format)` says where a recording can be fetched."""
        self._sink = sink
        self._recording_url = recording_url
        self.connection_id = connection_id
        self.dedup_seconds = dedup_seconds
        # The one lock: legs, commands and recordings change only while holding it.
        self._lock = threading.Condition()
        self._legs: dict[str, Leg] = {}
        self._sessions: dict[str, list[str]] = {}
        self._commands: list[dict[str, Any]] = []
        self._status_lookups: list[dict[str, Any]] = []
        self._seen_command_ids: dict[tuple[str, str], float] = {}
        self._recordings: dict[str, Recording] = {}
        self._last_moment = datetime.now(UTC)
        self.transfer_mode = "answer"
        # How long a speak or playback plays before its .ended webhook (0: at once).
        self.media_seconds = 0.0
        self._timers: list[threading.Timer] = []
        # False only during a hangup whose webhooks are lost (remote_hangup(deliver=False)).
        self._delivering = True

    # --- simulated callers -------------------------------------------------------------------

    def start_call(
        self,
        from_: str,
        to: str,
        caller_name: str | None = None,
        *,
        transfer_mode: str | None = None,
        delivery: dict[str, Any] | None = None,
        message_seconds: float | None = None,
    ) -> dict[str, str]:
        """A caller dials in: leg A is parked and call.initiated is sent. With
        `message_seconds`, once a recording with a beep starts (voicemail) the caller talks
        that long and hangs up."""
        with self._lock:
            now = self._now()
            leg = Leg(
                call_control_id=new_call_control_id(),
                call_leg_id=str(uuid.uuid4()),
                call_session_id=str(uuid.uuid4()),
                connection_id=self.connection_id,
                direction=INCOMING,
                from_=from_,
                to=to,
                start_time=now,
                state=PARKED,
                caller_name=caller_name,
                transfer_mode=transfer_mode,
                message_seconds=message_seconds,
            )
            self._add(leg)
            self._sink.open_session(leg.call_session_id, delivery)
            self._emit(webhook_bodies.initiated(leg, now), leg)
            return {
                "call_control_id": leg.call_control_id,
                "call_leg_id": leg.call_leg_id,
                "call_session_id": leg.call_session_id,
            }

    def remote_hangup(self, call_control_id: str, *, deliver: bool = True) -> dict[str, Any]:
        """The far end of a leg hangs up: the caller on leg A, the agent's phone on leg B."""
        # deliver=False: the legs end all the same, but none of the webhooks this causes
        # (call.hangup, call.recording.saved) is sent, as when Telnyx gives up delivering them.
        with self._lock:
            leg = self._legs.get(call_control_id)
            if leg is None:
                raise KeyError(call_control_id)
            if leg.ended:
                raise CallStateError("the call has already ended")
            self._delivering = deliver
            try:
                if leg.direction == OUTGOING:
                    self._hang_up(leg, "normal_clearing", "callee", "200")
                elif leg.state == PARKED:
                    # A caller giving up before anyone answered cancels the INVITE (SIP 487).
                    self._hang_up(leg, "originator_cancel", "caller", "487")
                else:
                    self._hang_up(leg, "normal_clearing", "caller", "200")
            finally:
                self._delivering = True
            return leg.snapshot(self._urls)

    # --- Call Control commands ---------------------------------------------------------------

    def execute(self, action: str, call_control_id: str, body: dict[str, Any]) -> str:
        """Apply one command; return "ok", or "duplicate" for a repeated command_id."""
        check_parameters(action, body)
        with self._lock:
            leg = self._legs.get(call_control_id)
            if leg is None:
                raise TelnyxApiError(
                    422, INVALID_CALL_CONTROL_ID, f"no call with call_control_id {call_control_id}"
                )
            key = self._dedup_key(call_control_id, body)
            if key is not None and key in self._seen_command_ids:
                return "duplicate"
            if leg.ended:
                raise TelnyxApiError(422, CALL_ALREADY_ENDED, "this call leg has already hung up")
            previous_state = leg.client_state
            if body.get("client_state") is not None:
                # Set first: the webhooks this command causes already carry the new state.
                leg.client_state = body["client_state"]
            try:
                getattr(self, f"_do_{action}")(leg, body)
            except TelnyxApiError:
                leg.client_state = previous_state
                raise
            if key is not None:
                # Only commands that took effect count: a refused one may be sent again.
                self._seen_command_ids[key] = time.monotonic()
            return "ok"

    def status(self, call_control_id: str) -> dict[str, Any]:
        """What GET /v2/calls/<id> answers; TelnyxApiError (422, 90015) for an unknown leg."""
        with self._lock:
            leg = self._legs.get(call_control_id)
            if leg is None:
                raise TelnyxApiError(
                    422, INVALID_CALL_CONTROL_ID, f"no call with call_control_id {call_control_id}"
                )
            return leg.status(datetime.now(UTC))

    def record_status_lookup(
        self,
        call_control_id: str,
        status: int,
        *,
        error_code: str | None = None,
        is_alive: bool | None = None,
    ) -> None:
        """Remember a GET /v2/calls/<id> and what it answered, and wake anyone waiting for it."""
        with self._lock:
            self._status_lookups.append(
                {
                    "call_control_id": call_control_id,
                    "status": status,
                    "error_code": error_code,
                    "is_alive": is_alive,
                    "received_at": webhook_bodies.timestamp(datetime.now(UTC)),
                }
            )
            self._lock.notify_all()

    def record_command(
        self,
        action: str,
        call_control_id: str,
        body: dict[str, Any] | None,
        status: int,
        *,
        error_code: str | None = None,
        outcome: str | None = None,
    ) -> None:
        """Remember a command and the HTTP status it got, and wake anyone waiting for it."""
        with self._lock:
            self._commands.append(
                {
                    "action": action,
                    "call_control_id": call_control_id,
                    "body": body,
                    "status": status,
                    "error_code": error_code,
                    "duplicate": outcome == "duplicate",
                    "received_at": webhook_bodies.timestamp(datetime.now(UTC)),
                }
            )
            self._lock.notify_all()

    def _dedup_key(self, call_control_id: str, body: dict[str, Any]) -> tuple[str, str] | None:
        command_id = body.get("command_id")
        if command_id is None:
            return None
        cutoff = time.monotonic() - self.dedup_seconds
        for key in [k for k, at in self._seen_command_ids.items() if at < cutoff]:
            del self._seen_command_ids[key]
        return (call_control_id, command_id)

    def _do_answer(self, leg: Leg, body: dict[str, Any]) -> None:
        if leg.direction != INCOMING or leg.state != PARKED:
            raise _invalid_state(f"answer needs a ringing incoming call; this leg is {leg.state}")
        leg.state = ANSWERED
        leg.answered_at = self._now()
        self._emit(webhook_bodies.answered(leg, leg.answered_at), leg)

    def _do_transfer(self, leg: Leg, body: dict[str, Any]) -> None:
        # A caller already bridged (to the agent who took the call) may be transferred again,
        # to a colleague: the new leg is dialled while the bridge stays up; once it answers,
        # the old partner is hung up and the caller is bridged to the new leg. If it does not
        # answer, the new leg hangs up and the caller stays with the old partner.
        if leg.direction != INCOMING:
            raise _invalid_state("only the caller's incoming leg can be transferred")
        if leg.state == PARKED:
            raise _not_answered(leg, "transfer")
        if leg.state not in (ANSWERED, BRIDGED):
            raise _invalid_state(f"the call is already {leg.state}")
        now = self._now()
        target = Leg(
            call_control_id=new_call_control_id(),
            call_leg_id=str(uuid.uuid4()),
            call_session_id=leg.call_session_id,
            connection_id=leg.connection_id,
            direction=OUTGOING,
            from_=body.get("from") or leg.to,
            to=body["to"],
            start_time=now,
            state=BRIDGING,
            client_state=body.get("target_leg_client_state"),
        )
        self._add(target)
        self._emit(webhook_bodies.initiated(target, now), target)
        mode = leg.transfer_mode or self.transfer_mode
        if mode in FAILED_TRANSFER:
            # The caller stays on the line, answered, as with real Telnyx.
            cause, sip = FAILED_TRANSFER[mode]
            self._end(target, cause, "callee", sip)
            self._finish(target)
            return
        target.state = BRIDGED
        target.answered_at = self._now()
        self._emit(webhook_bodies.answered(target, target.answered_at), target)
        self._drop_partner(leg)
        leg.state = BRIDGED
        leg.partner, target.partner = target.call_control_id, leg.call_control_id
        self._emit(webhook_bodies.bridged(leg, self._now()), leg)
        self._emit(webhook_bodies.bridged(target, self._now()), target)

    def _drop_partner(self, leg: Leg) -> None:
        """Hang up the leg `leg` is bridged to (a transfer replaced it), leaving `leg` up."""
        partner = self._legs.get(leg.partner) if leg.partner else None
        leg.partner = None
        if partner is None or partner.ended:
            return
        partner.partner = None
        # Telnyx ends it on the application's behalf, the caller of an outgoing leg.
        self._end(partner, "normal_clearing", "caller", "200")
        self._finish(partner)

    def _do_reject(self, leg: Leg, body: dict[str, Any]) -> None:
        if leg.direction != INCOMING or leg.state != PARKED:
            raise _invalid_state(f"reject is only allowed while a call rings; it is {leg.state}")
        cause, sip = REJECT_CAUSES[body["cause"]]
        self._hang_up(leg, cause, "callee", sip)

    def _do_hangup(self, leg: Leg, body: dict[str, Any]) -> None:
        # The application is the callee of an incoming leg and the caller of an outgoing one.
        source = "callee" if leg.direction == INCOMING else "caller"
        self._hang_up(leg, "normal_clearing", source, "200")

    def _do_record_start(self, leg: Leg, body: dict[str, Any]) -> None:
        if leg.state in (PARKED, BRIDGING):
            raise _not_answered(leg, "record_start")
        if leg.recording is not None:
            raise _invalid_state("the call is already being recorded")
        recording = Recording(uuid.uuid4().hex, body["format"], body["channels"], self._now())
        leg.recording = recording
        leg.recordings.append(recording)
        self._recordings[recording.id] = recording
        self._recording_limits(leg, recording, body.get("max_length"), bool(body.get("play_beep")))

    def _do_record_stop(self, leg: Leg, body: dict[str, Any]) -> None:
        if leg.state in (PARKED, BRIDGING):
            raise _not_answered(leg, "record_stop")
        if leg.recording is None:
            raise _invalid_state("the call is not being recorded")
        self._save_recording(leg)

    def _do_speak(self, leg: Leg, body: dict[str, Any]) -> None:
        self._play(leg, Media("speak", self._now(), text=body["payload"]), "speak")

    def _do_playback_start(self, leg: Leg, body: dict[str, Any]) -> None:
        media = Media("playback", self._now(), audio_url=body.get("audio_url"))
        self._play(leg, media, "playback_start")

    def _play(self, leg: Leg, media: Media, action: str) -> None:
        """Start a greeting on an answered leg: .started now, .ended after media_seconds."""
        if leg.state in (PARKED, BRIDGING):
            raise _not_answered(leg, action)
        if leg.media is not None:
            # Telnyx stops what was playing for the new one; the old one ends as stopped.
            self._end_media(leg, MEDIA_COMPLETED)
        leg.media = media
        leg.media_played.append(media)
        self._emit(webhook_bodies.media_started(leg, media, media.started_at), leg)
        if self.media_seconds <= 0:
            self._end_media(leg, MEDIA_COMPLETED)
        else:
            self._later(self.media_seconds, leg, lambda: self._media_done(leg, media))

    def _media_done(self, leg: Leg, media: Media) -> None:
        if leg.media is media and not leg.ended:
            self._end_media(leg, MEDIA_COMPLETED)

    def _end_media(self, leg: Leg, status: str) -> None:
        media = leg.media
        assert media is not None
        leg.media = None
        media.ended_at, media.status = self._now(), status
        self._emit(webhook_bodies.media_ended(leg, media, media.ended_at), leg)

    def _later(self, seconds: float, leg: Leg, step: Callable[[], None]) -> None:
        """Run `step` under the lock after `seconds`, unless the simulator was reset meanwhile."""
        timers = self._timers

        def run() -> None:
            with self._lock:
                if timers is self._timers and leg.call_control_id in self._legs:
                    step()
                    self._lock.notify_all()

        timer = threading.Timer(seconds, run)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _recording_limits(
        self, leg: Leg, recording: Recording, max_length: int | None, beep: bool
    ) -> None:
        """A recording ends at its max_length; a caller who hears the beep leaves a message
        and hangs up (a recording of an agent's call, without a beep, is not for them)."""

        def stop_at_limit() -> None:
            if leg.recording is recording and not leg.ended:
                self._save_recording(leg)

        def caller_done() -> None:
            if not leg.ended:
                self._hang_up(leg, "normal_clearing", "caller", "200")

        if max_length:
            self._later(max_length, leg, stop_at_limit)
        if beep and leg.message_seconds is not None and leg.direction == INCOMING:
            self._later(leg.message_seconds, leg, caller_done)

    # --- state changes -----------------------------------------------------------------------

    def _hang_up(self, leg: Leg, cause: str, source: str, sip: str) -> None:
        """End a leg and the leg bridged to it, then save their recordings."""
        ended = [leg]
        self._end(leg, cause, source, sip)
        partner = self._legs.get(leg.partner) if leg.partner else None
        if partner is not None and not partner.ended:
            # Seen from the partner, the hangup came from the far side of its own call.
            partner_source = "callee" if partner.direction == INCOMING else "caller"
            self._end(partner, "normal_clearing", partner_source, "200")
            ended.append(partner)
        for each in ended:
            self._finish(each)

    def _end(self, leg: Leg, cause: str, source: str, sip: str) -> None:
        leg.state = ENDED
        leg.end_time = self._now()
        leg.hangup_cause, leg.hangup_source, leg.sip_hangup_cause = cause, source, sip
        self._emit(webhook_bodies.hangup(leg, leg.end_time), leg)

    def _finish(self, leg: Leg) -> None:
        """After a leg's hangup: a greeting playing ends, its recording is saved; a session
        with no live legs is over."""
        if leg.media is not None:
            self._end_media(leg, MEDIA_CALL_HANGUP)
        if leg.recording is not None:
            self._save_recording(leg)
        session = leg.call_session_id
        if all(self._legs[ccid].ended for ccid in self._sessions[session]):
            self._sink.close_session(session)

    def _save_recording(self, leg: Leg) -> None:
        recording = leg.recording
        assert recording is not None
        recording.ended_at = leg.end_time or self._now()
        leg.recording = None
        self._emit(
            webhook_bodies.recording_saved(leg, recording, self._urls(recording.id), self._now()),
            leg,
        )

    def _add(self, leg: Leg) -> None:
        self._legs[leg.call_control_id] = leg
        self._sessions.setdefault(leg.call_session_id, []).append(leg.call_control_id)

    def _emit(self, data: dict[str, Any], leg: Leg) -> None:
        if self._delivering:
            self._sink.enqueue(data, leg.call_session_id)

    def _now(self) -> datetime:
        # Strictly increasing, so no two events of a call share an occurred_at.
        now = datetime.now(UTC)
        if now <= self._last_moment:
            now = self._last_moment + timedelta(microseconds=1)
        self._last_moment = now
        return now

    def _urls(self, recording_id: str) -> dict[str, str]:
        return {fmt: self._recording_url(recording_id, fmt) for fmt in RECORD_FORMATS}

    # --- observing ---------------------------------------------------------------------------

    def set_transfer_mode(self, mode: str) -> None:
        """What the agent's phone does when a transfer dials it: answer, busy or no-answer."""
        if mode not in TRANSFER_MODES:
            raise ValueError(f"mode must be one of {', '.join(TRANSFER_MODES)}")
        with self._lock:
            self.transfer_mode = mode

    def set_media_seconds(self, seconds: float) -> None:
        """How long a speak or playback plays before it ends (0: its .ended follows at once)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError("seconds must be a number")
        if not 0 <= seconds <= MAX_MEDIA_SECONDS:
            raise ValueError(f"seconds must be from 0 to {MAX_MEDIA_SECONDS}")
        with self._lock:
            self.media_seconds = float(seconds)

    def call(self, call_control_id: str) -> dict[str, Any] | None:
        """The session a leg belongs to: every leg and every command received for them."""
        with self._lock:
            leg = self._legs.get(call_control_id)
            if leg is None:
                return None
            ids = self._sessions[leg.call_session_id]
            return {
                "call_session_id": leg.call_session_id,
                "legs": [self._legs[ccid].snapshot(self._urls) for ccid in ids],
                "commands": [c for c in self._commands if c["call_control_id"] in ids],
            }

    def calls(self) -> list[dict[str, Any]]:
        """Every session, oldest first, with its legs."""
        with self._lock:
            return [
                {
                    "call_session_id": session,
                    "legs": [self._legs[ccid].snapshot(self._urls) for ccid in ids],
                }
                for session, ids in self._sessions.items()
            ]

    def recording(self, recording_id: str) -> Recording | None:
        """A recording that has been started, or None."""
        with self._lock:
            return self._recordings.get(recording_id)

    def _matching(self, action: str | None, call_control_id: str | None) -> list[dict[str, Any]]:
        return [
            c
            for c in self._commands
            if (action is None or c["action"] == action)
            and (call_control_id is None or c["call_control_id"] == call_control_id)
        ]

    def _lookups_of(self, call_control_id: str | None) -> list[dict[str, Any]]:
        return [
            lookup
            for lookup in self._status_lookups
            if call_control_id is None or lookup["call_control_id"] == call_control_id
        ]

    def commands(
        self, action: str | None = None, call_control_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The commands received so far, optionally for one action and/or one leg."""
        with self._lock:
            return self._matching(action, call_control_id)

    def wait_for_commands(
        self,
        n: int,
        action: str | None = None,
        call_control_id: str | None = None,
        timeout: float = 5.0,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Block until at least n matching commands arrived; return them and whether they did."""
        with self._lock:
            arrived = self._lock.wait_for(
                lambda: len(self._matching(action, call_control_id)) >= n, timeout=timeout
            )
            return self._matching(action, call_control_id), arrived

    def status_lookups(self, call_control_id: str | None = None) -> list[dict[str, Any]]:
        """The GET /v2/calls/<id> received so far, optionally for one leg."""
        with self._lock:
            return self._lookups_of(call_control_id)

    def wait_for_status_lookups(
        self, n: int, call_control_id: str | None = None, timeout: float = 5.0
    ) -> tuple[list[dict[str, Any]], bool]:
        """Block until at least n matching lookups arrived; return them and whether they did."""
        with self._lock:
            arrived = self._lock.wait_for(
                lambda: len(self._lookups_of(call_control_id)) >= n, timeout=timeout
            )
            return self._lookups_of(call_control_id), arrived

    def reset(self) -> None:
        """Forget every call, command, status lookup and recording; the agent's phone answers."""
        with self._lock:
            self._legs.clear()
            self._sessions.clear()
            self._commands.clear()
            self._status_lookups.clear()
            self._seen_command_ids.clear()
            self._recordings.clear()
            self.transfer_mode = "answer"
            self.media_seconds = 0.0
            for timer in self._timers:
                timer.cancel()
            self._timers = []
            self._lock.notify_all()
