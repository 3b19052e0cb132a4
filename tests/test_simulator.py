"""The Telnyx simulator: its Call Control API, the signed webhooks it drives, and its chaos.

The simulator runs in-process on a real port and delivers to a local webhook sink. Tests never
sleep to synchronise: GET /sim/deliveries?wait_idle blocks until every webhook is delivered.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import selectors
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from nacl.signing import VerifyKey

from telnyx_flask.errors import BadSignature
from telnyx_flask.signature import WebhookVerifier
from telnyx_flask.simulator import EXTENSION, create_simulator_app
from telnyx_flask.simulator.audio import MP3_FRAME_BYTES
from telnyx_flask.simulator.cli import sim_cli
from telnyx_flask.simulator.signing_key import public_key_base64
from telnyx_flask.telnyx_api import TelnyxClient, TelnyxError

from .helpers import load_fixture, wait_until
from .servers import free_port
from .webhook_sink import ReceivedWebhook, ThreadedServer, WebhookSink

SEED = bytes(range(100, 132))
PUBLIC_KEY_B64 = public_key_base64(SEED)
API_KEY = "KEY_SIMULATOR_TEST"
CALLER = "+13125550147"
DIALLED = "+14155550123"
AGENT = "sip:agentalice@sip.telnyx.com"
OCCURRED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Sim:
    """The in-process simulator and helpers to drive it over HTTP."""

    def __init__(self, url: str, sink: WebhookSink) -> None:
        self.url = url
        self.sink = sink
        self.http = requests.Session()

    def reset(self) -> None:
        """Forget everything, and let an attempt still in flight finish before the sink forgets."""
        self.http.post(f"{self.url}/sim/reset").raise_for_status()
        self.settle()
        self.sink.reset()

    def call(self, **fields: Any) -> dict[str, str]:
        """Start an inbound call; return its ids."""
        response = self.http.post(
            f"{self.url}/sim/calls", json={"from": CALLER, "to": DIALLED, **fields}
        )
        assert response.status_code == 201, response.text
        return response.json()

    def command(
        self,
        call_control_id: str,
        action: str,
        body: dict[str, Any] | bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """POST a Call Control command the way the service's client does."""
        all_headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        all_headers.update(headers if headers is not None else {})
        data = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        return self.http.post(
            f"{self.url}/v2/calls/{call_control_id}/actions/{action}",
            data=data,
            headers={k: v for k, v in all_headers.items() if v is not None},
        )

    def ok(self, call_control_id: str, action: str, body: dict[str, Any] | None = None) -> None:
        """Send a command that must succeed."""
        response = self.command(call_control_id, action, body)
        assert response.status_code == 200, response.text
        assert response.json() == {"data": {"result": "ok"}}

    def answered_call(self) -> dict[str, str]:
        """A call the service has answered."""
        ids = self.call()
        self.ok(ids["call_control_id"], "answer")
        return ids

    def bridged_call(self) -> dict[str, str]:
        """A call answered and transferred to the agent, who picked up."""
        ids = self.answered_call()
        self.ok(ids["call_control_id"], "transfer", {"to": AGENT})
        return ids

    def caller_hangs_up(self, call_control_id: str, **body: Any) -> requests.Response:
        """The simulated caller hangs up (body: {"deliver": false} loses its webhooks)."""
        return self.http.post(
            f"{self.url}/sim/calls/{call_control_id}/hangup", json=body if body else None
        )

    def status(self, call_control_id: str, api_key: str | None = API_KEY) -> requests.Response:
        """GET /v2/calls/<id> the way the service's client does."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
        return self.http.get(f"{self.url}/v2/calls/{call_control_id}", headers=headers)

    def delay(self, action: str, seconds: float, times: int = 1) -> None:
        """POST /sim/delays."""
        response = self.http.post(
            f"{self.url}/sim/delays", json={"action": action, "seconds": seconds, "times": times}
        )
        assert response.status_code == 201, response.text

    def refuse(self, action: str, status: int, code: str, times: int = 1) -> None:
        """POST /sim/refusals."""
        response = self.http.post(
            f"{self.url}/sim/refusals",
            json={"action": action, "status": status, "code": code, "times": times},
        )
        assert response.status_code == 201, response.text

    def wait_delayed(self, n: int) -> list[dict[str, Any]]:
        """Block until n requests have been held back by a delay; return them."""
        response = self.http.get(f"{self.url}/sim/delays", params={"wait_for": n, "timeout": 10})
        assert response.status_code == 200, response.text
        return response.json()["delayed"]

    def configure_delivery(self, **options: Any) -> None:
        """POST /sim/delivery."""
        self.http.post(f"{self.url}/sim/delivery", json=options).raise_for_status()

    def settle(self) -> list[dict[str, Any]]:
        """Block until every queued webhook is delivered; return the delivery log."""
        response = self.http.get(f"{self.url}/sim/deliveries", params={"wait_idle": 10})
        assert response.status_code == 200, response.text
        assert response.json()["idle"] is True
        return response.json()["data"]

    def webhooks(self, session_id: str) -> list[ReceivedWebhook]:
        """Settle, then the webhooks the sink got for one call, in arrival order."""
        self.settle()
        return self.sink.webhooks(session_id)

    def state(self, call_control_id: str) -> dict[str, Any]:
        """GET /sim/calls/<id>."""
        response = self.http.get(f"{self.url}/sim/calls/{call_control_id}")
        assert response.status_code == 200, response.text
        return response.json()


def event_types(hooks: list[ReceivedWebhook]) -> list[str]:
    return [hook.event_type for hook in hooks]


def telnyx_error(response: requests.Response) -> tuple[int, str]:
    """(HTTP status, Telnyx error code) of a refused command."""
    return response.status_code, response.json()["errors"][0]["code"]


def fixture_payload_keys(name: str) -> set[str]:
    return set(load_fixture(name)["data"]["payload"])


@pytest.fixture(scope="module")
def sink() -> Iterator[WebhookSink]:
    receiver = WebhookSink().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def sim_server(sink: WebhookSink) -> Iterator[Sim]:
    app = create_simulator_app(
        {
            "webhook_url": sink.url,
            "signing_seed": SEED,
            "api_key": API_KEY,
            "delivery_timeout": 2.0,
            "retry_backoff": 0.02,
        }
    )
    server = ThreadedServer(app, name="telnyx-simulator").start()
    yield Sim(server.url, sink)
    server.stop()
    app.extensions[EXTENSION].close()


@pytest.fixture
def sim(sim_server: Sim) -> Sim:
    sim_server.reset()
    return sim_server


# --- a new call --------------------------------------------------------------------------------


def test_new_call_sends_signed_call_initiated_shaped_like_the_real_one(sim, sink):
    ids = sim.call(caller_name="Ann Caller")

    [hook] = sim.webhooks(ids["call_session_id"])
    verifier = WebhookVerifier(base64.b64decode(PUBLIC_KEY_B64))
    verifier.verify(hook.headers, hook.body)
    with pytest.raises(BadSignature):
        verifier.verify(hook.headers, hook.body + b" ")
    fixture = load_fixture("01_call.initiated.json")
    body = hook.json
    assert body.keys() == fixture.keys()
    assert body["data"].keys() == fixture["data"].keys()
    assert body["meta"] == {"attempt": 1, "delivered_to": sink.url}
    assert body["data"]["record_type"] == "event"
    assert body["data"]["event_type"] == "call.initiated"
    assert uuid.UUID(body["data"]["id"])
    assert OCCURRED_AT.match(body["data"]["occurred_at"])
    payload = hook.payload
    assert payload.keys() == fixture["data"]["payload"].keys()
    assert payload["call_control_id"] == ids["call_control_id"]
    assert payload["call_control_id"].startswith("v3:")
    assert payload["call_leg_id"] == ids["call_leg_id"]
    assert payload["call_session_id"] == ids["call_session_id"]
    assert (payload["direction"], payload["state"]) == ("incoming", "parked")
    assert (payload["from"], payload["to"]) == (CALLER, DIALLED)
    assert payload["caller_id_name"] == "Ann Caller"
    assert OCCURRED_AT.match(payload["start_time"])


@pytest.mark.parametrize(
    "body",
    [
        {"to": DIALLED},
        {"from": "3125550147", "to": DIALLED},
        {"from": "+0125550147", "to": DIALLED},
        {"from": CALLER, "to": "+1 415 555 0123"},
        {"from": CALLER, "to": DIALLED, "caller_name": 42},
        {"from": CALLER, "to": DIALLED, "colour": "blue"},
        {"from": CALLER, "to": DIALLED, "delivery": {"duplicate": "yes"}},
        {"from": CALLER, "to": DIALLED, "transfer_behaviour": "voicemail"},
    ],
)
def test_new_call_with_bad_input_is_refused_and_sends_nothing(sim, sink, body):
    response = sim.http.post(f"{sim.url}/sim/calls", json=body)

    assert response.status_code == 400
    assert response.json()["error"]
    sim.settle()
    assert sink.received == []


# --- answer and transfer -----------------------------------------------------------------------


def test_answer_sends_call_answered_for_the_caller_leg(sim):
    ids = sim.call()

    sim.ok(ids["call_control_id"], "answer")

    initiated, answered = sim.webhooks(ids["call_session_id"])
    assert answered.event_type == "call.answered"
    assert answered.payload.keys() == fixture_payload_keys("03_call.answered.json")
    assert answered.payload["call_control_id"] == ids["call_control_id"]
    assert answered.payload["start_time"] == initiated.payload["start_time"]
    assert answered.json["data"]["occurred_at"] > initiated.json["data"]["occurred_at"]


def test_client_state_from_a_command_is_echoed_in_the_webhooks_it_causes(sim):
    ids = sim.call()

    sim.ok(ids["call_control_id"], "answer", {"client_state": "YWdlbnQ9YWxpY2U="})

    initiated, answered = sim.webhooks(ids["call_session_id"])
    assert initiated.payload["client_state"] is None
    assert answered.payload["client_state"] == "YWdlbnQ9YWxpY2U="


def test_transfer_before_answer_is_refused_with_90034(sim):
    ids = sim.call()

    response = sim.command(ids["call_control_id"], "transfer", {"to": AGENT})

    assert telnyx_error(response) == (422, "90034")
    assert event_types(sim.webhooks(ids["call_session_id"])) == ["call.initiated"]


def test_transfer_after_answer_dials_the_agent_and_bridges_both_legs(sim):
    ids = sim.answered_call()
    caller = ids["call_control_id"]

    sim.ok(caller, "transfer", {"to": AGENT})

    hooks = sim.webhooks(ids["call_session_id"])
    assert event_types(hooks) == [
        "call.initiated",
        "call.answered",
        "call.initiated",
        "call.answered",
        "call.bridged",
        "call.bridged",
    ]
    agent_leg = hooks[2].payload
    assert agent_leg.keys() == fixture_payload_keys("02_call.initiated.leg_b_bridging.json")
    assert (agent_leg["direction"], agent_leg["state"]) == ("outgoing", "bridging")
    assert agent_leg["call_session_id"] == ids["call_session_id"]
    assert (agent_leg["from"], agent_leg["to"]) == (DIALLED, AGENT)
    agent = agent_leg["call_control_id"]
    assert agent != caller and agent_leg["call_leg_id"] != ids["call_leg_id"]
    assert hooks[3].payload["call_control_id"] == agent
    assert [h.payload["call_control_id"] for h in hooks[4:]] == [caller, agent]
    assert hooks[4].payload.keys() == fixture_payload_keys("04_call.bridged.json")
    legs = sim.state(caller)["legs"]
    assert [(leg["direction"], leg["state"]) for leg in legs] == [
        ("incoming", "bridged"),
        ("outgoing", "bridged"),
    ]


@pytest.mark.parametrize(
    ("mode", "cause", "sip"), [("busy", "user_busy", "486"), ("no-answer", "timeout", "408")]
)
def test_agent_leg_that_fails_hangs_up_and_the_caller_stays_answered(sim, mode, cause, sip):
    sim.http.post(f"{sim.url}/sim/transfer-behaviour", json={"mode": mode}).raise_for_status()
    ids = sim.answered_call()
    caller = ids["call_control_id"]

    sim.ok(caller, "transfer", {"to": AGENT})

    hooks = sim.webhooks(ids["call_session_id"])
    assert event_types(hooks) == [
        "call.initiated",
        "call.answered",
        "call.initiated",
        "call.hangup",
    ]
    hangup = hooks[3].payload
    assert hangup["call_control_id"] == hooks[2].payload["call_control_id"] != caller
    assert (hangup["hangup_cause"], hangup["hangup_source"]) == (cause, "callee")
    assert hangup["sip_hangup_cause"] == sip
    assert [leg["state"] for leg in sim.state(caller)["legs"]] == ["answered", "ended"]
    # The caller is still there, so the service may try another agent.
    sim.http.post(f"{sim.url}/sim/transfer-behaviour", json={"mode": "answer"})
    sim.ok(caller, "transfer", {"to": "sip:agentbob@sip.telnyx.com"})
    assert event_types(sim.webhooks(ids["call_session_id"]))[-2:] == [
        "call.bridged",
        "call.bridged",
    ]


def test_per_call_transfer_behaviour_overrides_the_global_one(sim):
    busy = sim.call(transfer_behaviour="busy")
    sim.ok(busy["call_control_id"], "answer")

    sim.ok(busy["call_control_id"], "transfer", {"to": AGENT})

    assert event_types(sim.webhooks(busy["call_session_id"]))[-1] == "call.hangup"
    assert sim.http.get(f"{sim.url}/sim/transfer-behaviour").json() == {"mode": "answer"}


# --- reject and hangup -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "hangup_cause", "sip"),
    [("CALL_REJECTED", "call_rejected", "603"), ("USER_BUSY", "user_busy", "486")],
)
def test_reject_while_ringing_hangs_up_the_caller_with_the_cause(sim, cause, hangup_cause, sip):
    ids = sim.call()

    sim.ok(ids["call_control_id"], "reject", {"cause": cause})

    initiated, hangup = sim.webhooks(ids["call_session_id"])
    assert hangup.event_type == "call.hangup"
    payload = hangup.payload
    assert payload.keys() == fixture_payload_keys("12_missed.call.hangup.json")
    assert (payload["hangup_cause"], payload["hangup_source"]) == (hangup_cause, "callee")
    assert payload["sip_hangup_cause"] == sip
    assert payload["start_time"] == initiated.payload["start_time"]
    assert payload["end_time"] >= payload["start_time"]


def test_reject_after_answer_is_refused(sim):
    ids = sim.answered_call()

    response = sim.command(ids["call_control_id"], "reject", {"cause": "CALL_REJECTED"})

    assert telnyx_error(response) == (422, "90035")
    assert event_types(sim.webhooks(ids["call_session_id"])) == [
        "call.initiated",
        "call.answered",
    ]


def test_service_hangup_ends_the_caller_and_the_bridged_agent_leg(sim):
    ids = sim.bridged_call()

    sim.ok(ids["call_control_id"], "hangup")

    *_, caller_hangup, agent_hangup = sim.webhooks(ids["call_session_id"])
    assert caller_hangup.payload.keys() == fixture_payload_keys("05_call.hangup.json")
    assert caller_hangup.payload["call_control_id"] == ids["call_control_id"]
    assert (caller_hangup.payload["hangup_cause"], caller_hangup.payload["hangup_source"]) == (
        "normal_clearing",
        "callee",
    )
    assert agent_hangup.event_type == "call.hangup"
    assert agent_hangup.payload["hangup_cause"] == "normal_clearing"


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("answer", {}),
        ("transfer", {"to": AGENT}),
        ("reject", {"cause": "USER_BUSY"}),
        ("hangup", {}),
        ("record_start", {"format": "mp3", "channels": "dual"}),
    ],
)
def test_commands_on_an_ended_call_are_refused_with_90018(sim, action, body):
    ids = sim.call()
    sim.caller_hangs_up(ids["call_control_id"]).raise_for_status()

    response = sim.command(ids["call_control_id"], action, body)

    assert telnyx_error(response) == (422, "90018")


def test_unknown_call_control_id_is_refused_with_90015(sim):
    response = sim.command("v3:no-such-call", "answer")

    assert telnyx_error(response) == (422, "90015")


@pytest.mark.parametrize(
    "authorization", [None, "Bearer ", "Basic S0VZOnNlY3JldA==", "Bearer KEY_SOMEONE_ELSE"]
)
def test_command_without_the_api_key_is_refused_with_401_and_not_applied(sim, authorization):
    ids = sim.call()

    response = sim.command(
        ids["call_control_id"], "answer", headers={"Authorization": authorization}
    )

    assert telnyx_error(response) == (401, "10009")
    assert response.json()["errors"][0]["title"] == "Authentication failed"
    [command] = sim.state(ids["call_control_id"])["commands"]
    assert (command["action"], command["status"]) == ("answer", 401)
    assert [leg["state"] for leg in sim.state(ids["call_control_id"])["legs"]] == ["parked"]


@pytest.mark.parametrize(
    ("action", "body", "status", "code"),
    [
        ("transfer", {}, 422, "10004"),
        ("transfer", {"to": ""}, 422, "10015"),
        ("transfer", {"to": AGENT, "timeout_secs": 2}, 422, "10015"),
        ("reject", {}, 422, "10004"),
        ("reject", {"cause": "NOT_TODAY"}, 422, "10015"),
        ("record_start", {"channels": "dual"}, 422, "10004"),
        ("record_start", {"format": "ogg", "channels": "dual"}, 422, "10015"),
        ("record_start", {"format": "mp3", "channels": "stereo"}, 422, "10015"),
        ("answer", {"client_state": "not base64!"}, 422, "10015"),
        ("answer", {"command_id": 7}, 422, "10015"),
        ("answer", b"[1, 2]", 400, "10015"),
        ("answer", b"{not json", 400, "10023"),
        ("speak", {"voice": "female"}, 422, "10004"),
        ("speak", {"payload": "hello"}, 422, "10004"),
        ("speak", {"payload": "", "voice": "female"}, 422, "10015"),
        ("speak", {"payload": "hello", "voice": "female", "payload_type": "html"}, 422, "10015"),
        ("playback_start", {}, 422, "10004"),
        ("playback_start", {"audio_url": "ftp://example.test/a.mp3"}, 422, "10015"),
        ("playback_start", {"playback_content": "not base64!"}, 422, "10015"),
        ("enqueue", {"queue_name": "support"}, 404, "10005"),
    ],
)
def test_invalid_parameters_are_refused_with_telnyx_errors(sim, action, body, status, code):
    ids = sim.call()
    if action in ("transfer", "record_start"):
        sim.ok(ids["call_control_id"], "answer")
    before = [leg["state"] for leg in sim.state(ids["call_control_id"])["legs"]]

    response = sim.command(ids["call_control_id"], action, body)

    assert telnyx_error(response) == (status, code)
    assert [leg["state"] for leg in sim.state(ids["call_control_id"])["legs"]] == before


def test_repeated_command_id_within_the_window_is_ignored(sim):
    ids = sim.call()
    caller = ids["call_control_id"]

    sim.ok(caller, "answer", {"command_id": "answer-once"})
    sim.ok(caller, "answer", {"command_id": "answer-once"})

    assert event_types(sim.webhooks(ids["call_session_id"])) == [
        "call.initiated",
        "call.answered",
    ]
    assert [c["duplicate"] for c in sim.state(caller)["commands"]] == [False, True]
    # A different command_id is a new command, which the answered call refuses.
    response = sim.command(caller, "answer", {"command_id": "answer-twice"})
    assert telnyx_error(response) == (422, "90035")


# --- recording ---------------------------------------------------------------------------------


def test_record_start_before_answer_is_refused_with_90034(sim):
    ids = sim.call()

    response = sim.command(
        ids["call_control_id"], "record_start", {"format": "mp3", "channels": "dual"}
    )

    assert telnyx_error(response) == (422, "90034")


def mp3_frames(data: bytes) -> list[dict[str, Any]]:
    """Parse MPEG audio frame headers, independently of the simulator's constants."""
    bitrates_kbps = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320]
    sample_rates = [44100, 48000, 32000]
    frames, offset = [], 0
    while offset < len(data):
        header = int.from_bytes(data[offset : offset + 4], "big")
        assert header >> 21 == 0x7FF, f"no frame sync at byte {offset}"
        frame = {
            "version": (header >> 19) & 0b11,
            "layer": (header >> 17) & 0b11,
            "bitrate": bitrates_kbps[(header >> 12) & 0xF] * 1000,
            "sample_rate": sample_rates[(header >> 10) & 0b11],
            "padding": (header >> 9) & 1,
            "mono": (header >> 6) & 0b11 == 0b11,
        }
        length = 144 * frame["bitrate"] // frame["sample_rate"] + frame["padding"]
        frames.append(frame)
        offset += length
    assert offset == len(data), "the last frame is cut short"
    return frames


def test_recorded_call_sends_recording_saved_after_hangup_with_fetchable_urls(sim):
    ids = sim.bridged_call()
    caller = ids["call_control_id"]
    sim.ok(caller, "record_start", {"format": "mp3", "channels": "dual"})
    assert sim.state(caller)["legs"][0]["recording_active"] is True

    sim.ok(caller, "hangup")

    hooks = sim.webhooks(ids["call_session_id"])
    assert event_types(hooks)[-3:] == ["call.hangup", "call.hangup", "call.recording.saved"]
    saved = hooks[-1].payload
    assert saved.keys() == fixture_payload_keys("06_call.recording.saved.json")
    assert "call_control_id" not in saved
    assert saved["call_leg_id"] == ids["call_leg_id"]
    assert saved["call_session_id"] == ids["call_session_id"]
    assert saved["channels"] == "dual"
    assert saved["public_recording_urls"] == {"mp3": None, "wav": None}
    assert saved["recording_started_at"] <= saved["recording_ended_at"]
    assert sim.state(caller)["legs"][0]["recorded"] is True

    mp3 = requests.get(saved["recording_urls"]["mp3"], timeout=5)
    assert mp3.status_code == 200
    assert mp3.headers["Content-Type"] == "audio/mpeg"
    frames = mp3_frames(mp3.content)
    assert len(frames) * 1152 / 48000 >= 1.0
    assert {(f["version"], f["layer"], f["sample_rate"], f["mono"]) for f in frames} == {
        (0b11, 0b01, 48000, False)  # MPEG-1, Layer III, stereo for a dual-channel recording
    }
    assert len(mp3.content) % MP3_FRAME_BYTES == 0

    wav = requests.get(saved["recording_urls"]["wav"], timeout=5)
    assert wav.status_code == 200
    assert wav.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(wav.content)) as audio:
        assert audio.getnchannels() == 2
        assert audio.getsampwidth() == 2
        assert 1.0 <= audio.getnframes() / audio.getframerate() <= 2.0
        assert any(audio.readframes(audio.getnframes()))


def test_record_stop_saves_the_recording_at_once_and_hangup_saves_nothing_more(sim):
    ids = sim.answered_call()
    caller = ids["call_control_id"]
    sim.ok(caller, "record_start", {"format": "wav", "channels": "single"})

    sim.ok(caller, "record_stop")
    sim.ok(caller, "hangup")

    hooks = sim.webhooks(ids["call_session_id"])
    assert event_types(hooks)[-2:] == ["call.recording.saved", "call.hangup"]
    assert hooks[-2].payload["channels"] == "single"
    wav = requests.get(hooks[-2].payload["recording_urls"]["wav"], timeout=5)
    with wave.open(io.BytesIO(wav.content)) as audio:
        assert audio.getnchannels() == 1
    assert telnyx_error(sim.command(caller, "record_stop")) == (422, "90018")


def test_unknown_recording_is_404(sim):
    assert sim.http.get(f"{sim.url}/sim/recordings/nope.mp3").status_code == 404


# --- the caller hangs up -----------------------------------------------------------------------


def test_caller_hangup_while_ringing_is_originator_cancel(sim):
    ids = sim.call()

    response = sim.caller_hangs_up(ids["call_control_id"])

    assert response.status_code == 200
    initiated, hangup = sim.webhooks(ids["call_session_id"])
    assert hangup.payload.keys() == fixture_payload_keys("12_missed.call.hangup.json")
    assert (hangup.payload["hangup_cause"], hangup.payload["hangup_source"]) == (
        "originator_cancel",
        "caller",
    )
    assert hangup.payload["sip_hangup_cause"] == "487"
    assert hangup.payload["start_time"] == initiated.payload["start_time"]


def test_caller_hangup_while_bridged_hangs_up_both_legs(sim):
    ids = sim.bridged_call()

    sim.caller_hangs_up(ids["call_control_id"]).raise_for_status()

    hooks = sim.webhooks(ids["call_session_id"])
    caller_hangup, agent_hangup = hooks[-2:]
    assert event_types(hooks[-2:]) == ["call.hangup", "call.hangup"]
    assert caller_hangup.payload["call_control_id"] == ids["call_control_id"]
    assert (caller_hangup.payload["hangup_cause"], caller_hangup.payload["hangup_source"]) == (
        "normal_clearing",
        "caller",
    )
    assert agent_hangup.payload["call_control_id"] == hooks[2].payload["call_control_id"]
    assert agent_hangup.payload["hangup_cause"] == "normal_clearing"
    assert all(leg["state"] == "ended" for leg in sim.state(ids["call_control_id"])["legs"])
    assert sim.caller_hangs_up(ids["call_control_id"]).status_code == 409


# --- delivery ----------------------------------------------------------------------------------


def test_failed_delivery_is_redelivered_with_the_next_attempt_and_the_same_id(sim, sink):
    sink.answer_next(500)

    ids = sim.call()

    first, second = sim.webhooks(ids["call_session_id"])
    assert (first.status, second.status) == (500, 200)
    assert first.json["data"] == second.json["data"]
    assert (first.json["meta"]["attempt"], second.json["meta"]["attempt"]) == (1, 2)
    verifier = WebhookVerifier(base64.b64decode(PUBLIC_KEY_B64))
    for hook in (first, second):
        verifier.verify(hook.headers, hook.body)
    log = sim.settle()
    assert [(d["attempt"], d["status"]) for d in log] == [(1, 500), (2, 200)]


def test_delivery_gives_up_after_the_last_attempt(sim, sink):
    sim.configure_delivery(webhook_url=f"http://127.0.0.1:{free_port()}/webhook")

    sim.call()

    log = sim.settle()
    assert [(d["attempt"], d["status"]) for d in log] == [(1, None), (2, None), (3, None)]
    assert all(d["error"] for d in log)
    assert sink.received == []


def test_duplicate_mode_delivers_every_event_twice(sim):
    sim.configure_delivery(duplicate=True)
    ids = sim.call()

    sim.ok(ids["call_control_id"], "answer")

    hooks = sim.webhooks(ids["call_session_id"])
    assert event_types(hooks) == [
        "call.initiated",
        "call.initiated",
        "call.answered",
        "call.answered",
    ]
    assert hooks[0].json["data"] == hooks[1].json["data"]
    assert hooks[2].json["data"] == hooks[3].json["data"]
    assert [h.json["meta"]["attempt"] for h in hooks] == [1, 2, 1, 2]


def test_per_call_delivery_options_apply_to_that_call_only(sim):
    chaotic = sim.call(delivery={"duplicate": True})
    calm = sim.call()

    assert len(sim.webhooks(chaotic["call_session_id"])) == 2
    assert len(sim.webhooks(calm["call_session_id"])) == 1


def test_reorder_mode_delivers_all_of_a_calls_events_in_another_order(sim):
    sim.configure_delivery(reorder=True, reorder_window_ms=60_000)
    ids = sim.call()
    sim.ok(ids["call_control_id"], "answer")

    # The call's last event releases the held batch; the long window never comes into play.
    sim.caller_hangs_up(ids["call_control_id"]).raise_for_status()

    hooks = sim.webhooks(ids["call_session_id"])
    assert event_types(hooks) == ["call.hangup", "call.answered", "call.initiated"]
    occurred = [h.json["data"]["occurred_at"] for h in hooks]
    assert occurred == sorted(occurred, reverse=True)


def test_reorder_mode_releases_held_events_after_the_window(sim):
    sim.configure_delivery(reorder=True, reorder_window_ms=100)

    ids = sim.call()

    assert event_types(sim.webhooks(ids["call_session_id"])) == ["call.initiated"]


def test_delay_mode_holds_each_delivery_back(sim):
    sim.configure_delivery(delay_ms=300)

    sim.call()

    [delivery] = sim.settle()
    assert delivery["sent_at"] - delivery["queued_at"] >= 0.3


def test_delivery_settings_reject_unknown_or_bad_options(sim):
    for options in ({"duplicate": 1}, {"delay_ms": -5}, {"shuffle": True}, {"webhook_url": 3}):
        response = sim.http.post(f"{sim.url}/sim/delivery", json=options)
        assert response.status_code == 400, options
    assert sim.http.get(f"{sim.url}/sim/delivery").json()["duplicate"] is False


# --- observing ---------------------------------------------------------------------------------


def test_wait_for_commands_returns_once_the_commands_arrive(sim):
    ids = sim.call()
    result: dict[str, requests.Response] = {}

    def wait() -> None:
        result["response"] = requests.get(
            f"{sim.url}/sim/commands",
            params={"action": "answer", "wait_for": 1, "timeout": 10},
            timeout=15,
        )

    waiter = threading.Thread(target=wait)
    waiter.start()
    sim.ok(ids["call_control_id"], "answer")
    waiter.join(timeout=15)

    response = result["response"]
    assert response.status_code == 200
    assert response.json()["complete"] is True
    [command] = response.json()["data"]
    assert (command["action"], command["call_control_id"]) == ("answer", ids["call_control_id"])
    assert command["status"] == 200


def test_wait_for_commands_times_out_with_408(sim):
    response = sim.http.get(
        f"{sim.url}/sim/commands", params={"action": "hangup", "wait_for": 1, "timeout": 0.1}
    )

    assert response.status_code == 408
    assert response.json() == {"data": [], "complete": False}


def test_reset_forgets_calls_commands_deliveries_and_chaos(sim):
    ids = sim.call()
    sim.ok(ids["call_control_id"], "answer")
    sim.configure_delivery(duplicate=True)
    sim.settle()

    sim.http.post(f"{sim.url}/sim/reset").raise_for_status()

    assert sim.http.get(f"{sim.url}/sim/calls/{ids['call_control_id']}").status_code == 404
    assert sim.http.get(f"{sim.url}/sim/commands").json()["data"] == []
    assert sim.http.get(f"{sim.url}/sim/deliveries").json()["data"] == []
    assert sim.http.get(f"{sim.url}/sim/delivery").json()["duplicate"] is False


def test_public_key_and_health_endpoints(sim):
    assert sim.http.get(f"{sim.url}/healthz").status_code == 200
    assert sim.http.get(f"{sim.url}/sim/public-key").json() == {"public_key": PUBLIC_KEY_B64}


# --- the service's own client ------------------------------------------------------------------


def test_service_client_drives_a_whole_call_through_the_simulator(sim):
    ids = sim.call()
    caller = ids["call_control_id"]
    with TelnyxClient(API_KEY, f"{sim.url}/v2", backoff_seconds=0.001) as client:
        assert client.answer(caller) == {"result": "ok"}
        assert client.transfer(caller, AGENT) == {"result": "ok"}
        assert client.record_start(caller) == {"result": "ok"}
        assert client.answer(caller) == {"result": "ok"}  # the same command_id: a no-op
        assert client.hangup(caller) == {"result": "ok"}
        with pytest.raises(TelnyxError) as refused:
            client.transfer(caller, "sip:agentbob@sip.telnyx.com")
    assert refused.value.call_already_ended

    assert event_types(sim.webhooks(ids["call_session_id"])) == [
        "call.initiated",
        "call.answered",
        "call.initiated",
        "call.answered",
        "call.bridged",
        "call.bridged",
        "call.hangup",
        "call.hangup",
        "call.recording.saved",
    ]
    commands = sim.state(caller)["commands"]
    assert [(c["action"], c["status"], c["duplicate"]) for c in commands] == [
        ("answer", 200, False),
        ("transfer", 200, False),
        ("record_start", 200, False),
        ("answer", 200, True),
        ("hangup", 200, False),
        ("transfer", 422, False),
    ]
    assert commands[2]["body"]["format"] == "mp3"


def test_telephony_credential_token_is_a_signed_jwt(sim):
    url = f"{sim.url}/v2/telephony_credentials/cred-123/token"

    response = sim.http.post(url, headers={"Authorization": f"Bearer {API_KEY}"})

    assert response.status_code == 201
    assert response.headers["Content-Type"].startswith("text/plain")
    header, claims, signature = response.text.split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(decode(header))["typ"] == "JWT"
    assert json.loads(decode(claims))["sub"] == "cred-123"
    VerifyKey(base64.b64decode(PUBLIC_KEY_B64)).verify(
        f"{header}.{claims}".encode(), decode(signature)
    )
    assert sim.http.post(url).status_code == 401


# --- running it --------------------------------------------------------------------------------


def run_simulator(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "telnyx_flask.simulator", "--port", "0", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def first_line(process: subprocess.Popen, timeout: float = 20.0) -> str:
    """The first line the process prints, without blocking past `timeout`."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError("the simulator printed nothing")
    return process.stdout.readline()


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture
def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SIM_")}


def test_module_runs_as_its_own_process_and_prints_its_url_and_public_key(tmp_path, clean_env):
    env = {**clean_env, "SIM_SIGNING_SEED": base64.b64encode(SEED).decode()}
    process = run_simulator("--webhook-url", "http://127.0.0.1:9/webhook", env=env, cwd=tmp_path)
    try:
        line = first_line(process)
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        assert f"TELNYX_PUBLIC_KEY={PUBLIC_KEY_B64}" in line
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        key = requests.get(f"{url}/sim/public-key", timeout=5).json()["public_key"]
        assert key == PUBLIC_KEY_B64
    finally:
        assert stop(process) == 0
    assert not (tmp_path / "var").exists()


def test_module_creates_a_private_key_file_and_reuses_it(tmp_path, clean_env):
    key_file = tmp_path / "keys" / "simulator.key"
    printed = []
    for _ in range(2):
        process = run_simulator("--signing-key-file", str(key_file), env=clean_env, cwd=tmp_path)
        try:
            printed.append(re.search(r"TELNYX_PUBLIC_KEY=(\S+)", first_line(process)).group(1))
        finally:
            stop(process)

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert printed[0] == printed[1]
    assert len(base64.b64decode(printed[0])) == 32


def test_cli_call_starts_a_call_and_prints_its_call_control_id(sim):
    result = CliRunner().invoke(
        sim_cli,
        ["call", "--from", CALLER, "--to", DIALLED, "--name", "Ann", "--sim-url", sim.url],
    )

    assert result.exit_code == 0, result.output
    call_control_id = result.output.strip()
    [leg] = sim.state(call_control_id)["legs"]
    assert (leg["from"], leg["to"], leg["caller_name"]) == (CALLER, DIALLED, "Ann")


def test_cli_call_reports_a_refused_number(sim):
    result = CliRunner().invoke(
        sim_cli, ["call", "--from", "12345", "--to", DIALLED, "--sim-url", sim.url]
    )

    assert result.exit_code != 0
    assert "E.164" in result.output


# --- refusing commands on request -------------------------------------------------------------


def test_a_queued_refusal_answers_the_next_command_of_that_action_only(sim):
    ids = sim.call()
    queued = sim.http.post(
        f"{sim.url}/sim/refusals",
        json={"action": "answer", "status": 403, "code": "10010", "detail": "suspended"},
    )
    assert queued.status_code == 201

    refused = sim.command(ids["call_control_id"], "answer")
    assert telnyx_error(refused) == (403, "10010")
    assert refused.json()["errors"][0]["detail"] == "suspended"
    assert event_types(sim.webhooks(ids["call_session_id"])) == ["call.initiated"]
    sim.ok(ids["call_control_id"], "answer")  # only the next one was refused


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"action": "answer", "status": 200},
        {"action": "answer", "status": "500"},
        {"action": "answer", "times": 0},
        {"action": "answer", "times": 1000},
    ],
)
def test_bad_refusal_requests_are_400(sim, body):
    response = sim.http.post(f"{sim.url}/sim/refusals", json=body)
    assert response.status_code == 400


def test_reset_forgets_queued_refusals(sim):
    sim.http.post(f"{sim.url}/sim/refusals", json={"action": "answer"}).raise_for_status()
    sim.reset()
    sim.ok(sim.call()["call_control_id"], "answer")


# --- call status -------------------------------------------------------------------------------

STATUS_KEYS = {
    "record_type",
    "call_control_id",
    "call_leg_id",
    "call_session_id",
    "client_state",
    "is_alive",
    "call_duration",
    "start_time",
    "end_time",
}


def call_status(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.json().keys() == {"data"}
    return response.json()["data"]


def test_status_of_a_ringing_call_is_alive_with_no_duration(sim):
    ids = sim.call()

    status = call_status(sim.status(ids["call_control_id"]))

    assert status.keys() == STATUS_KEYS
    assert status["record_type"] == "call"
    assert {key: status[key] for key in ids} == ids
    assert (status["is_alive"], status["call_duration"], status["end_time"]) == (True, 0, None)
    [initiated] = sim.webhooks(ids["call_session_id"])
    assert status["start_time"] == initiated.payload["start_time"]
    assert status["client_state"] is None


def test_status_of_an_answered_call_is_alive_with_its_client_state(sim):
    ids = sim.call()
    sim.ok(ids["call_control_id"], "answer", {"client_state": "YWdlbnQ9YWxpY2U="})

    status = call_status(sim.status(ids["call_control_id"]))

    assert status["is_alive"] is True
    assert status["client_state"] == "YWdlbnQ9YWxpY2U="
    assert isinstance(status["call_duration"], int) and status["call_duration"] >= 0
    assert status["end_time"] is None


def test_status_of_ended_legs_is_not_alive_with_the_hangup_end_time(sim):
    ids = sim.bridged_call()
    caller = ids["call_control_id"]
    agent = sim.state(caller)["legs"][1]["call_control_id"]
    assert call_status(sim.status(agent))["is_alive"] is True

    sim.ok(caller, "hangup")

    hangups = [h for h in sim.webhooks(ids["call_session_id"]) if h.event_type == "call.hangup"]
    end_times = {h.payload["call_control_id"]: h.payload["end_time"] for h in hangups}
    for leg in (caller, agent):
        status = call_status(sim.status(leg))
        assert status["is_alive"] is False
        assert status["end_time"] == end_times[leg]
        assert isinstance(status["call_duration"], int) and status["call_duration"] >= 0


def test_status_of_an_unknown_call_is_422_invalid_call_control_id(sim):
    response = sim.status("v3:no-such-call")

    assert telnyx_error(response) == (422, "90015")
    assert response.json()["errors"][0]["title"] == "Invalid Call Control ID"


@pytest.mark.parametrize("api_key", [None, "KEY_SOMEONE_ELSE"])
def test_status_without_the_api_key_is_refused_with_401(sim, api_key):
    ids = sim.call()

    assert telnyx_error(sim.status(ids["call_control_id"], api_key=api_key)) == (401, "10009")


def test_status_lookups_are_recorded_apart_from_commands(sim):
    ids = sim.call()
    caller = ids["call_control_id"]
    sim.status(caller)
    sim.status("v3:no-such-call")

    response = sim.http.get(
        f"{sim.url}/sim/status-lookups", params={"wait_for": 2, "call_control_id": ""}
    )

    assert response.status_code == 200
    lookups = response.json()["data"]
    assert [
        (x["call_control_id"], x["status"], x["error_code"], x["is_alive"]) for x in lookups
    ] == [
        (caller, 200, None, True),
        ("v3:no-such-call", 422, "90015", None),
    ]
    assert sim.http.get(f"{sim.url}/sim/commands").json()["data"] == []
    assert sim.state(caller)["commands"] == []


def test_a_queued_refusal_applies_to_the_next_status_lookup(sim):
    ids = sim.call()
    sim.refuse("status", 503, "10007")

    assert telnyx_error(sim.status(ids["call_control_id"])) == (503, "10007")
    assert call_status(sim.status(ids["call_control_id"]))["is_alive"] is True


# --- a slow Telnyx -----------------------------------------------------------------------------


def test_a_delayed_command_waits_while_other_calls_are_handled_at_once(sim):
    slow, other = sim.call(), sim.call()
    sim.delay("answer", 2)
    answered: dict[str, Any] = {}

    def answer() -> None:
        started = time.monotonic()
        answered["response"] = sim.command(slow["call_control_id"], "answer")
        answered["took"] = time.monotonic() - started
        answered["done_at"] = time.monotonic()

    waiter = threading.Thread(target=answer)
    waiter.start()
    [held] = sim.wait_delayed(1)
    started = time.monotonic()
    sim.ok(other["call_control_id"], "hangup")
    assert call_status(sim.status(other["call_control_id"]))["is_alive"] is False
    hangup_took, hangup_done_at = time.monotonic() - started, time.monotonic()
    waiter.join(timeout=15)

    assert (held["action"], held["call_control_id"]) == ("answer", slow["call_control_id"])
    assert hangup_took < 1.0
    assert answered["took"] >= 2.0
    assert hangup_done_at < answered["done_at"]
    assert answered["response"].status_code == 200
    assert [leg["state"] for leg in sim.state(slow["call_control_id"])["legs"]] == ["answered"]
    # Only the next one was delayed.
    started = time.monotonic()
    sim.ok(sim.call()["call_control_id"], "answer")
    assert time.monotonic() - started < 1.0


def test_a_delayed_command_runs_even_when_the_client_gave_up_waiting(sim):
    ids = sim.call()
    caller = ids["call_control_id"]
    sim.delay("answer", 1)

    with pytest.raises(requests.ReadTimeout):
        requests.post(
            f"{sim.url}/v2/calls/{caller}/actions/answer",
            json={},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=0.2,
        )

    response = sim.http.get(
        f"{sim.url}/sim/commands", params={"action": "answer", "wait_for": 1, "timeout": 10}
    )
    [command] = response.json()["data"]
    assert (command["call_control_id"], command["status"]) == (caller, 200)
    assert event_types(sim.webhooks(ids["call_session_id"])) == [
        "call.initiated",
        "call.answered",
    ]


def test_a_delayed_command_with_a_queued_refusal_is_refused_after_the_wait(sim):
    ids = sim.call()
    caller = ids["call_control_id"]
    sim.delay("answer", 1)
    sim.refuse("answer", 503, "10007")

    started = time.monotonic()
    response = sim.command(caller, "answer")

    assert time.monotonic() - started >= 1.0
    assert telnyx_error(response) == (503, "10007")
    assert [leg["state"] for leg in sim.state(caller)["legs"]] == ["parked"]
    started = time.monotonic()
    sim.ok(caller, "answer")
    assert time.monotonic() - started < 1.0


def test_a_delayed_status_lookup_waits_then_answers(sim):
    ids = sim.call()
    sim.delay("status", 1)

    started = time.monotonic()
    status = call_status(sim.status(ids["call_control_id"]))

    assert time.monotonic() - started >= 1.0
    assert status["is_alive"] is True
    [held] = sim.http.get(f"{sim.url}/sim/delays").json()["delayed"]
    assert (held["action"], held["seconds"], held["waiting"]) == ("status", 1.0, False)


def test_reset_forgets_queued_delays_and_ends_the_waits_in_progress(sim):
    ids = sim.call()
    sim.delay("answer", 60, times=2)
    answered: dict[str, Any] = {}

    def answer() -> None:
        answered["response"] = sim.command(ids["call_control_id"], "answer")

    waiter = threading.Thread(target=answer)
    started = time.monotonic()
    waiter.start()
    sim.wait_delayed(1)
    sim.http.post(f"{sim.url}/sim/reset").raise_for_status()
    waiter.join(timeout=15)

    assert time.monotonic() - started < 10
    assert telnyx_error(answered["response"]) == (500, "10007")
    # The reset forgot the command that waited across it, and the delay still queued.
    assert sim.http.get(f"{sim.url}/sim/commands").json()["data"] == []
    assert sim.http.get(f"{sim.url}/sim/delays").json() == {
        "queued": {},
        "delayed": [],
        "complete": True,
    }
    sim.ok(sim.call()["call_control_id"], "answer")


@pytest.mark.parametrize(
    "body",
    [
        {"seconds": 2},
        {"action": "enqueue", "seconds": 2},
        {"action": "answer"},
        {"action": "answer", "seconds": 0},
        {"action": "answer", "seconds": 121},
        {"action": "answer", "seconds": "2"},
        {"action": "answer", "seconds": True},
        {"action": "answer", "seconds": 2, "times": 0},
    ],
)
def test_bad_delay_requests_are_400(sim, body):
    response = sim.http.post(f"{sim.url}/sim/delays", json=body)

    assert response.status_code == 400
    assert sim.http.get(f"{sim.url}/sim/delays").json()["queued"] == {}


# --- a hangup Telnyx never tells of ------------------------------------------------------------


def test_lost_hangup_ends_both_legs_and_saves_the_recording_without_any_webhook(sim):
    ids = sim.bridged_call()
    caller = ids["call_control_id"]
    sim.ok(caller, "record_start", {"format": "mp3", "channels": "dual"})
    before = sim.webhooks(ids["call_session_id"])

    response = sim.caller_hangs_up(caller, deliver=False)

    assert response.status_code == 200
    assert response.json()["state"] == "ended"
    assert sim.webhooks(ids["call_session_id"]) == before
    sent = {delivery["event_type"] for delivery in sim.settle()}
    assert sent.isdisjoint({"call.hangup", "call.recording.saved"})
    legs = sim.state(caller)["legs"]
    assert [leg["state"] for leg in legs] == ["ended", "ended"]
    assert legs[0]["recordings"][0]["ended_at"] is not None
    for leg in legs:
        assert call_status(sim.status(leg["call_control_id"]))["is_alive"] is False
    response = sim.command(caller, "reject", {"cause": "CALL_REJECTED"})
    assert telnyx_error(response) == (422, "90018")
    assert sim.caller_hangs_up(caller).status_code == 409


def test_hangup_with_deliver_true_sends_the_webhooks_as_usual(sim):
    ids = sim.call()

    sim.caller_hangs_up(ids["call_control_id"], deliver=True).raise_for_status()

    assert event_types(sim.webhooks(ids["call_session_id"])) == ["call.initiated", "call.hangup"]


@pytest.mark.parametrize("body", [{"deliver": "no"}, {"deliver": False, "cause": "busy"}])
def test_bad_hangup_requests_are_400_and_change_nothing(sim, body):
    ids = sim.call()

    response = sim.http.post(f"{sim.url}/sim/calls/{ids['call_control_id']}/hangup", json=body)

    assert response.status_code == 400
    assert call_status(sim.status(ids["call_control_id"]))["is_alive"] is True


def test_flask_sim_is_a_plugin_command_and_the_app_does_not_import_the_simulator(tmp_path):
    # The `flask.commands` entry point (setup.cfg) registers it; create_app never loads it.
    flask = Path(sys.executable).parent / "flask"
    shown = subprocess.run(
        [str(flask), "--app", "telnyx_flask", "sim", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "APP_ENV": "development"},
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "call" in shown.stdout and "serve" in shown.stdout

    probe = (
        "import sys\n"
        "from telnyx_flask import create_app\n"
        "create_app({'APP_ENV': 'development', 'TESTING': True})\n"
        "print(sorted(m for m in sys.modules if m.startswith('telnyx_flask.simulator')))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


# --- voicemail: greetings, a recording with a beep and a limit, a caller leaving a message ------

GREETING = {"payload": "Please leave a message.", "voice": "female", "language": "en-US"}
GREETING_URL = "https://greetings.example.test/voicemail.mp3"


def set_media_seconds(sim: Sim, seconds: float) -> None:
    response = sim.http.post(f"{sim.url}/sim/media", json={"seconds": seconds})
    assert response.status_code == 200, response.text


def arrived(sim: Sim, session_id: str, *types: str):
    """The call's webhooks once every one of `types` has arrived (they come on a timer)."""

    def all_there():
        hooks = sim.webhooks(session_id)
        return hooks if set(types) <= set(event_types(hooks)) else None

    return wait_until(all_there, timeout=10, what=f"{', '.join(types)} delivered")


def test_speak_on_an_answered_call_sends_speak_started_then_ended(sim):
    ids = sim.answered_call()
    sim.ok(ids["call_control_id"], "speak", {**GREETING, "payload_type": "text"})

    hooks = sim.webhooks(ids["call_session_id"])
    assert event_types(hooks)[-2:] == ["call.speak.started", "call.speak.ended"]
    ended = hooks[-1].payload
    assert ended.keys() == fixture_payload_keys("30_call.speak.ended.json")
    assert ended["status"] == "completed"
    assert ended["call_control_id"] == ids["call_control_id"]
    [media] = sim.state(ids["call_control_id"])["legs"][0]["media"]
    assert (media["kind"], media["text"], media["status"]) == (
        "speak",
        GREETING["payload"],
        "completed",
    )


def test_playback_start_sends_playback_started_then_ended_naming_the_file(sim):
    ids = sim.answered_call()
    sim.ok(ids["call_control_id"], "playback_start", {"audio_url": GREETING_URL})

    hooks = sim.webhooks(ids["call_session_id"])
    assert event_types(hooks)[-2:] == ["call.playback.started", "call.playback.ended"]
    ended = hooks[-1].payload
    assert ended.keys() == fixture_payload_keys("31_call.playback.ended.json")
    assert (ended["media_url"], ended["status"]) == (GREETING_URL, "completed")


@pytest.mark.parametrize(
    ("action", "body"), [("speak", GREETING), ("playback_start", {"audio_url": GREETING_URL})]
)
def test_a_greeting_before_the_call_is_answered_is_refused_with_90034(sim, action, body):
    ids = sim.call()
    assert telnyx_error(sim.command(ids["call_control_id"], action, body)) == (422, "90034")
    assert event_types(sim.webhooks(ids["call_session_id"])) == ["call.initiated"]


def test_a_greeting_cut_short_by_the_hangup_ends_with_status_call_hangup(sim):
    set_media_seconds(sim, 300)
    ids = sim.answered_call()
    sim.ok(ids["call_control_id"], "speak", GREETING)
    assert event_types(sim.webhooks(ids["call_session_id"]))[-1] == "call.speak.started"

    assert sim.caller_hangs_up(ids["call_control_id"]).status_code == 200

    hooks = sim.webhooks(ids["call_session_id"])
    assert event_types(hooks)[-2:] == ["call.hangup", "call.speak.ended"]
    assert hooks[-1].payload["status"] == "call_hangup"


def test_a_greeting_that_plays_for_a_while_ends_after_it(sim):
    set_media_seconds(sim, 0.2)
    ids = sim.answered_call()
    sim.ok(ids["call_control_id"], "playback_start", {"audio_url": GREETING_URL})

    hooks = arrived(sim, ids["call_session_id"], "call.playback.ended")
    assert event_types(hooks)[-2:] == ["call.playback.started", "call.playback.ended"]
    assert hooks[-1].payload["status"] == "completed"


def test_record_start_with_a_beep_and_max_length_saves_the_recording_at_the_limit(sim):
    ids = sim.answered_call()
    caller = ids["call_control_id"]
    sim.ok(
        caller,
        "record_start",
        {"format": "mp3", "channels": "single", "play_beep": True, "max_length": 1},
    )
    assert sim.state(caller)["legs"][0]["recording_active"] is True

    hooks = arrived(sim, ids["call_session_id"], "call.recording.saved")
    assert "call.hangup" not in event_types(hooks)  # the call goes on; only the recording ended
    assert sim.state(caller)["legs"][0]["recording_active"] is False
    saved = hooks[-1].payload
    assert saved["recording_started_at"] < saved["recording_ended_at"]
    # Saved on a timer, with no request of its own: its link is still where the simulator is.
    assert requests.get(saved["recording_urls"]["mp3"], timeout=5).status_code == 200
    # What the service sends at the limit anyway finds nothing left to stop.
    assert telnyx_error(sim.command(caller, "record_stop")) == (422, "90035")


def test_a_caller_leaving_a_message_talks_then_hangs_up_and_the_message_is_saved(sim):
    ids = sim.call(message_seconds=0.2)
    caller = ids["call_control_id"]
    sim.ok(caller, "answer")
    sim.ok(caller, "speak", GREETING)
    sim.ok(caller, "record_start", {"format": "mp3", "channels": "single", "play_beep": True})

    hooks = arrived(sim, ids["call_session_id"], "call.hangup", "call.recording.saved")
    assert event_types(hooks)[-2:] == ["call.hangup", "call.recording.saved"]
    hangup = hooks[-2].payload
    assert (hangup["hangup_source"], hangup["hangup_cause"]) == ("caller", "normal_clearing")
    assert sim.state(caller)["legs"][0]["message_seconds"] == 0.2


@pytest.mark.parametrize("seconds", [-1, 601, "2", True, None])
def test_bad_media_seconds_are_400(sim, seconds):
    response = sim.http.post(f"{sim.url}/sim/media", json={"seconds": seconds})
    assert response.status_code == 400
    assert sim.http.get(f"{sim.url}/sim/media").json() == {"seconds": 0.0}


@pytest.mark.parametrize("seconds", [-1, 3601, "2", True])
def test_bad_message_seconds_are_400(sim, seconds):
    response = sim.http.post(
        f"{sim.url}/sim/calls",
        json={"from": "+13125550147", "to": "+14155550123", "message_seconds": seconds},
    )
    assert response.status_code == 400
    assert sim.http.get(f"{sim.url}/sim/calls").json()["data"] == []


def test_reset_puts_greetings_back_to_ending_at_once(sim):
    set_media_seconds(sim, 30)
    sim.reset()
    assert sim.http.get(f"{sim.url}/sim/media").json() == {"seconds": 0.0}
