"""Webhook event bodies, shaped like the real ones in tests/fixtures/telnyx."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .call_control import Leg, Media, Recording

CALL_INITIATED = "call.initiated"
CALL_ANSWERED = "call.answered"
CALL_BRIDGED = "call.bridged"
CALL_HANGUP = "call.hangup"
CALL_RECORDING_SAVED = "call.recording.saved"
CALL_SPEAK_STARTED = "call.speak.started"
CALL_SPEAK_ENDED = "call.speak.ended"
CALL_PLAYBACK_STARTED = "call.playback.started"
CALL_PLAYBACK_ENDED = "call.playback.ended"
# Media kind -> (its .started, its .ended) event types.
MEDIA_EVENTS = {
    "speak": (CALL_SPEAK_STARTED, CALL_SPEAK_ENDED),
    "playback": (CALL_PLAYBACK_STARTED, CALL_PLAYBACK_ENDED),
}

# Values a real PSTN call reports; nothing in the service depends on them.
OFFERED_CODECS = "PCMU,G729"
CONNECTION_CODECS = "PCMA,PCMU,VP8,H264"
CODEC = "PCMU"
SAMPLING_RATE = 8000
SIP_HOST = "192.0.2.10:5060"
CARRIER_HOST = "198.51.100.20:5060"


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z, as Telnyx writes them."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_data(event_type: str, payload: dict[str, Any], occurred_at: datetime) -> dict[str, Any]:
    """The `data` half of a webhook; `meta` is added per delivery attempt."""
    return {
        "record_type": "event",
        "event_type": event_type,
        "id": str(uuid.uuid4()),
        "occurred_at": timestamp(occurred_at),
        "payload": payload,
    }


def _leg_ids(leg: Leg) -> dict[str, Any]:
    return {
        "call_control_id": leg.call_control_id,
        "call_leg_id": leg.call_leg_id,
        "call_session_id": leg.call_session_id,
        "connection_id": leg.connection_id,
        "client_state": leg.client_state,
    }


def initiated(leg: Leg, at: datetime) -> dict[str, Any]:
    """call.initiated: a new incoming call (parked) or the leg a transfer dials (bridging)."""
    payload = _leg_ids(leg)
    if leg.direction == "incoming":
        payload.update(
            {
                "caller_id_name": leg.caller_name or leg.from_,
                "calling_party_type": "pstn",
                "connection_codecs": CONNECTION_CODECS,
                "direction": "incoming",
                "from": leg.from_,
                "from_sip_uri": f"{leg.from_.lstrip('+')}@{CARRIER_HOST}",
                "offered_codecs": OFFERED_CODECS,
                "start_time": timestamp(leg.start_time),
                "state": "parked",
                "to": leg.to,
                "to_sip_uri": f"{leg.to}@{SIP_HOST}",
            }
        )
    else:
        payload.update(
            {
                "direction": "outgoing",
                "from": leg.from_,
                "to": leg.to,
                "state": "bridging",
                "start_time": timestamp(leg.start_time),
            }
        )
    return event_data(CALL_INITIATED, payload, at)


def answered(leg: Leg, at: datetime) -> dict[str, Any]:
    """call.answered for a leg."""
    payload = _leg_ids(leg)
    if leg.direction == "incoming":
        payload["calling_party_type"] = "pstn"
    payload.update(
        {
            "codec": CODEC,
            "from": leg.from_,
            "sampling_rate": SAMPLING_RATE,
            "start_time": timestamp(leg.start_time),
            "to": leg.to,
        }
    )
    return event_data(CALL_ANSWERED, payload, at)


def bridged(leg: Leg, at: datetime) -> dict[str, Any]:
    """call.bridged for one of the two bridged legs."""
    payload = _leg_ids(leg)
    payload.update({"from": leg.from_, "to": leg.to})
    return event_data(CALL_BRIDGED, payload, at)


def _quality_stats() -> dict[str, Any]:
    return {
        "inbound": {
            "jitter_max_variance": "0.00",
            "jitter_packet_count": "0",
            "mos": "4.50",
            "packet_count": "7912",
            "skip_packet_count": "12",
        },
        "outbound": {"packet_count": "7890", "skip_packet_count": "0"},
    }


def hangup(leg: Leg, at: datetime) -> dict[str, Any]:
    """call.hangup for a leg that has just ended (its hangup fields are set)."""
    assert leg.end_time is not None
    payload = _leg_ids(leg)
    if leg.answered_at is not None:
        # Only a call that was answered has media to measure (compare fixtures 05 and 12).
        payload["call_quality_stats"] = _quality_stats()
    payload.update(
        {
            "calling_party_type": "pstn" if leg.direction == "incoming" else "sip",
            "end_time": timestamp(leg.end_time),
            "from": leg.from_,
            "hangup_cause": leg.hangup_cause,
            "hangup_source": leg.hangup_source,
            "sip_hangup_cause": leg.sip_hangup_cause,
            "start_time": timestamp(leg.start_time),
            "to": leg.to,
        }
    )
    return event_data(CALL_HANGUP, payload, at)


def recording_saved(
    leg: Leg, recording: Recording, urls: dict[str, str], at: datetime
) -> dict[str, Any]:
    """call.recording.saved: no call_control_id, correlated by the session and leg ids."""
    assert recording.ended_at is not None
    payload = _leg_ids(leg)
    del payload["call_control_id"]
    payload.update(
        {
            "channels": recording.channels,
            "recording_started_at": timestamp(recording.started_at),
            "recording_ended_at": timestamp(recording.ended_at),
            "recording_urls": urls,
            "public_recording_urls": dict.fromkeys(urls),
        }
    )
    return event_data(CALL_RECORDING_SAVED, payload, at)


def _media_payload(leg: Leg, media: Media) -> dict[str, Any]:
    payload = _leg_ids(leg)
    if media.kind == "playback":
        # Telnyx names the file played (media_url) and whether it was mixed over other audio.
        payload.update({"media_url": media.audio_url, "overlay": False})
    return payload


def media_started(leg: Leg, media: Media, at: datetime) -> dict[str, Any]:
    """call.speak.started or call.playback.started: the common fields (and the file played)."""
    return event_data(MEDIA_EVENTS[media.kind][0], _media_payload(leg, media), at)


def media_ended(leg: Leg, media: Media, at: datetime) -> dict[str, Any]:
    """call.speak.ended or call.playback.ended, with `status`: completed, or call_hangup when
    the leg hung up while it played."""
    payload = _media_payload(leg, media)
    payload["status"] = media.status
    return event_data(MEDIA_EVENTS[media.kind][1], payload, at)
