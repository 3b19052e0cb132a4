"""Telnyx webhook events: the types this service acts on, what each does to a call, and parsing
a body into a WebhookEvent (what is malformed is refused here, before anything is stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import BadWebhook
from .request_body import is_storable_text, parse_json, storable_text

# Telnyx event types acted on, and the effect each has on a call (the names apply_call_event uses).
CALL_INITIATED = "call.initiated"
CALL_ANSWERED = "call.answered"
CALL_BRIDGED = "call.bridged"
CALL_HANGUP = "call.hangup"
CALL_RECORDING_SAVED = "call.recording.saved"
# A voicemail's greeting has finished playing: its recording is owed next (sql/013).
CALL_SPEAK_ENDED = "call.speak.ended"
CALL_PLAYBACK_ENDED = "call.playback.ended"

EFFECTS = {
    CALL_INITIATED: "initiated",
    CALL_ANSWERED: "answered",
    CALL_BRIDGED: "bridged",
    CALL_HANGUP: "hangup",
    CALL_RECORDING_SAVED: "recording",
    CALL_SPEAK_ENDED: "greeting_ended",
    CALL_PLAYBACK_ENDED: "greeting_ended",
}

# Leg roles: the caller's leg is the call; the transfer leg is the one Telnyx creates for an agent.
CALLER_LEG, TRANSFER_LEG = "caller", "transfer"

# Telnyx stamps events as they happen. A time further than this from the server's clock is not a
# time, and two such times decades apart would overflow a call's talk time (PostgreSQL keeps it
# as an integer number of seconds: 68 years at most).
FARTHEST_FROM_NOW = timedelta(days=30 * 365)


@dataclass(frozen=True)
class WebhookEvent:
    """One Telnyx webhook, reduced to the fields this service uses (all but the ids optional)."""

    event_id: str
    event_type: str
    occurred_at: datetime
    attempt: int | None
    call_control_id: str | None = None
    call_leg_id: str | None = None
    call_session_id: str | None = None
    connection_id: str | None = None
    leg: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    caller_id_name: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    hangup_cause: str | None = None
    hangup_source: str | None = None
    sip_hangup_cause: str | None = None
    recording_url: str | None = None

    @property
    def effect(self) -> str | None:
        """What this event does to a call, or None for types that are only stored."""
        return EFFECTS.get(self.event_type)


def _string(payload: dict[str, Any], key: str, limit: int = 1024) -> str | None:
    """A payload field as storable text. A caller sets some fields (caller_id_name is the SIP
    display name), so a NUL or lone surrogate in one is cleaned away, never a reason to refuse
    the call: refused, Telnyx's retries would be refused too, and the call would never ring."""
    value = payload.get(key)
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    return storable_text(str(value)).strip()[:limit] or None


def _identifier(data: dict[str, Any], key: str) -> str:
    """data.id or data.event_type, exactly as sent: Telnyx makes these, so one that PostgreSQL
    cannot store is a malformed webhook, not something to repair."""
    value = data.get(key)
    if isinstance(value, str) and not is_storable_text(value):
        raise BadWebhook(f"data.{key} contains a NUL or an unpaired surrogate character")
    text = _string(data, key, 200)
    if text is None:
        raise BadWebhook(f"data.{key} is missing")
    return text


def _timestamp(value: Any, now: datetime) -> datetime | None:
    """An ISO 8601 timestamp with a zone, in UTC; None when absent, unreadable or not within
    FARTHEST_FROM_NOW of `now`.

    In UTC because PostgreSQL refuses offsets of 16 hours or more, which Python reads happily.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01 at +01:00 is year 0 in UTC
        return None
    return parsed if abs(parsed - now) <= FARTHEST_FROM_NOW else None


def _occurred_at(data: dict[str, Any], now: datetime) -> datetime:
    value = data.get("occurred_at")
    if value is None:
        # Telnyx always sends it; without it, receipt time is the best estimate there is.
        return now
    parsed = _timestamp(value, now)
    if parsed is None:
        raise BadWebhook(
            "data.occurred_at must be an ISO 8601 timestamp with a zone, within"
            f" {FARTHEST_FROM_NOW.days // 365} years of now, got {str(value)[:40]!r}"
        )
    return parsed


def _leg_from_initiated(payload: dict[str, Any]) -> str | None:
    # A new inbound call is parked and incoming; the leg a transfer creates is bridging/outgoing.
    state, direction = payload.get("state"), payload.get("direction")
    if state == "bridging" or direction == "outgoing":
        return TRANSFER_LEG
    if direction == "incoming" or state == "parked":
        return CALLER_LEG
    return None


def _recording_url(payload: dict[str, Any]) -> str | None:
    for field in ("recording_urls", "public_recording_urls"):
        urls = payload.get(field)
        if isinstance(urls, dict):
            for fmt in ("mp3", "wav"):
                if isinstance(urls.get(fmt), str) and urls[fmt]:
                    return storable_text(urls[fmt])
    return None


def parse_webhook(body: bytes) -> WebhookEvent:
    """Parse a webhook body; raise BadWebhook saying exactly what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadWebhook("body must be UTF-8 encoded JSON") from None
    try:
        document = parse_json(text)
    except ValueError as error:
        raise BadWebhook(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadWebhook("body must be a JSON object")
    data = document.get("data")
    if not isinstance(data, dict):
        raise BadWebhook("data is missing or not an object")
    event_id = _identifier(data, "id")
    event_type = _identifier(data, "event_type")
    payload = data.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise BadWebhook("data.payload must be an object")
    meta = document.get("meta")
    attempt = meta.get("attempt") if isinstance(meta, dict) else None
    now = datetime.now(UTC)

    event = WebhookEvent(
        event_id=event_id,
        event_type=event_type,
        occurred_at=_occurred_at(data, now),
        attempt=attempt if isinstance(attempt, int) else None,
        call_control_id=_string(payload, "call_control_id"),
        call_leg_id=_string(payload, "call_leg_id"),
        call_session_id=_string(payload, "call_session_id"),
        connection_id=_string(payload, "connection_id"),
        leg=_leg_from_initiated(payload) if event_type == CALL_INITIATED else None,
        from_number=_string(payload, "from", 256),
        to_number=_string(payload, "to", 256),
        caller_id_name=_string(payload, "caller_id_name", 256),
        start_time=_timestamp(payload.get("start_time"), now),
        end_time=_timestamp(payload.get("end_time"), now),
        hangup_cause=_string(payload, "hangup_cause", 100),
        hangup_source=_string(payload, "hangup_source", 100),
        sip_hangup_cause=_string(payload, "sip_hangup_cause", 100),
        recording_url=_recording_url(payload) if event_type == CALL_RECORDING_SAVED else None,
    )
    if event.effect is not None:
        if event.call_session_id is None:
            raise BadWebhook(f"payload.call_session_id is missing for {event_type}")
        # call.recording.saved carries no call_control_id; the others must.
        if event.call_control_id is None and event.event_type != CALL_RECORDING_SAVED:
            raise BadWebhook(f"payload.call_control_id is missing for {event_type}")
    return event
