"""Telnyx Call Control v2 REST client: idempotent commands with bounded retries."""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests
from flask import Flask, current_app
from requests.exceptions import ChunkedEncodingError

from . import metrics
from .circuit_breaker import BreakerSettings, CircuitBreaker, TelnyxUnavailable

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.telnyx.com/v2"
USER_AGENT = "telnyx-flask/0.1"

CALL_ALREADY_ENDED = "90018"
INVALID_CALL_CONTROL_ID = "90015"
CALL_NOT_ANSWERED = "90034"

REJECT_CAUSES = ("CALL_REJECTED", "USER_BUSY")
RECORD_FORMATS = ("mp3", "wav")
RECORD_CHANNELS = ("single", "dual")
SPEAK_PAYLOAD_TYPES = ("text", "ssml")
TRANSFER_TIMEOUT_RANGE = (5, 600)

# Fixed forever: changing it would give every logical command a new id and defeat deduplication
# between processes running different versions during a deploy.
COMMAND_ID_NAMESPACE = uuid.UUID("aa2ff160-c357-46c7-ad7b-7f1dd5cf6da5")

# A response body can be an HTML error page; keep only enough of it to recognise.
_MAX_DETAIL_CHARS = 300
# An attempt with less time than this left is not started: it could only time out.
_MIN_ATTEMPT_SECONDS = 0.05

# ChunkedEncodingError means the answer broke off mid-way; the same command_id makes resending safe.
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, ChunkedEncodingError)


class TelnyxError(Exception):
    """A Call Control command failed: Telnyx refused it or never answered."""

    def __init__(
        self,
        action: str,
        call_control_id: str,
        status: int | None,
        code: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        *,
        attempts: int = 1,
        subject: str = "call",
        deadline_exceeded: bool = False,
    ) -> None:
        self.action = action
        self.subject = subject
        self.call_control_id = call_control_id
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.attempts = attempts
        self.deadline_exceeded = deadline_exceeded
        super().__init__(self._message())

    def _message(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(f"code {self.code}")
        texts = [self.title] if self.title else []
        if self.detail and self.detail != self.title:
            texts.append(self.detail)
        if texts:
            parts.append(" - ".join(texts))
        if not parts:
            parts.append("no answer")
        if self.attempts > 1:
            parts.append(f"after {self.attempts} attempts")
        if self.deadline_exceeded:
            parts.append("out of time")
        target = f"{self.subject} {self.call_control_id}"
        return f"Telnyx {self.action} on {target} failed: {', '.join(parts)}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable (multiprocessing, task queues) despite the custom __init__.
        args = (self.action, self.call_control_id, self.status, self.code, self.title, self.detail)
        return (_rebuild_error, (args, self.attempts, self.subject))

    @property
    def call_already_ended(self) -> bool:
        """True when Telnyx says the call is already over (422, code 90018)."""
        return self.status == 422 and self.code == CALL_ALREADY_ENDED

    @property
    def call_gone(self) -> bool:
        """True when Telnyx says the leg is over (90018) or no longer knows it (90015)."""
        return self.call_already_ended or (
            self.status == 422 and self.code == INVALID_CALL_CONTROL_ID
        )

    @property
    def outcome_unknown(self) -> bool:
        """True when no answer came: Telnyx may or may not have acted on the command."""
        return self.status is None

    @property
    def transient(self) -> bool:
        """True when trying again later may succeed: no answer, 5xx, 429, or not answered yet."""
        return (
            self.status is None
            or self.status >= 500
            or self.status in (408, 429)
            or (self.status == 422 and self.code == CALL_NOT_ANSWERED)
        )


def _rebuild_error(args: tuple[Any, ...], attempts: int, subject: str = "call") -> TelnyxError:
    return TelnyxError(*args, attempts=attempts, subject=subject)


def command_id_for(action: str, call_control_id: str, *parts: str) -> str:
    """Return the deterministic command_id for one logical command on one call."""
    # Escaping the separator keeps ("a|b", "c") and ("a", "b|c") from sharing an id.
    fields = (action, call_control_id, *(str(p) for p in parts))
    name = "|".join(f.replace("\\", "\\\\").replace("|", "\\|") for f in fields)
    return str(uuid.uuid5(COMMAND_ID_NAMESPACE, name))


def _require_call_control_id(call_control_id: str) -> None:
    if not isinstance(call_control_id, str) or not call_control_id.strip():
        raise ValueError("call_control_id must be a non-empty string")


def _parse_error(response: requests.Response) -> tuple[str | None, str | None, str | None]:
    """Return (code, title, detail) from a Telnyx error body, tolerating any shape."""
    try:
        payload = response.json()
    except ValueError:
        text = (response.text or "").strip()
        return None, None, text[:_MAX_DETAIL_CHARS] or None
    errors = payload.get("errors") if isinstance(payload, dict) else None
    first = errors[0] if isinstance(errors, list) and errors else None
    if not isinstance(first, dict):
        return None, None, None

    def field(name: str) -> str | None:
        value = first.get(name)
        return None if value is None else str(value)

    return field("code"), field("title"), field("detail")


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff.
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


class TelnyxClient:
    """Sends Call Control commands to Telnyx over one reusable HTTP session."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 2.0,
        session: requests.Session | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """Configure the client; nothing is sent until a command is called.

        Every command takes `deadline` (a time.monotonic() instant every attempt and backoff
        must fit before) and `attempts` (instead of max_attempts), for callers with a budget.
        """
        if not api_key or not api_key.strip():
            raise ValueError("api_key must be a non-empty string")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff_seconds < 0 or max_backoff_seconds < backoff_seconds:
            raise ValueError("need 0 <= backoff_seconds <= max_backoff_seconds")
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self.breaker = breaker
        self._sleep: Callable[[float], None] = time.sleep
        self._random = random.Random()

    def __repr__(self) -> str:
        return f"TelnyxClient(base_url={self.base_url!r})"

    def __enter__(self) -> TelnyxClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session:
            self._session.close()

    def answer(
        self,
        call_control_id: str,
        *,
        client_state: str | None = None,
        command_id: str | None = None,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> dict:
        """Answer an incoming call; client_state must already be base64-encoded."""
        _require_call_control_id(call_control_id)
        body: dict[str, Any] = {}
        if client_state is not None:
            body["client_state"] = client_state
        command_id = command_id or command_id_for("answer", call_control_id)
        return self._command("answer", call_control_id, body, command_id, deadline, attempts)

    def transfer(
        self,
        call_control_id: str,
        to: str,
        *,
        from_: str | None = None,
        timeout_secs: int | None = None,
        client_state: str | None = None,
        target_leg_client_state: str | None = None,
        custom_headers: list[dict[str, str]] | None = None,
        command_id: str | None = None,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> dict:
        """Transfer the call to a phone number or SIP URI (`custom_headers`: SIP X- headers)."""
        _require_call_control_id(call_control_id)
        if not isinstance(to, str) or not to.strip():
            raise ValueError("transfer target 'to' must be a non-empty number or SIP URI")
        body: dict[str, Any] = {"to": to}
        if from_ is not None:
            body["from"] = from_
        if timeout_secs is not None:
            low, high = TRANSFER_TIMEOUT_RANGE
            if isinstance(timeout_secs, bool) or not isinstance(timeout_secs, int):
                raise ValueError(f"timeout_secs must be an integer, got {timeout_secs!r}")
            if not low <= timeout_secs <= high:
                raise ValueError(
                    f"timeout_secs must be between {low} and {high}, got {timeout_secs}"
                )
            body["timeout_secs"] = timeout_secs
        if client_state is not None:
            body["client_state"] = client_state
        if target_leg_client_state is not None:
            body["target_leg_client_state"] = target_leg_client_state
        if custom_headers is not None:
            # Telnyx puts these on the INVITE: only X- headers, and nothing that could end a
            # header line early and smuggle in another.
            if not isinstance(custom_headers, list):
                raise ValueError("custom_headers must be a list of {name, value}")
            for header in custom_headers:
                name = header.get("name") if isinstance(header, dict) else None
                value = header.get("value") if isinstance(header, dict) else None
                if (
                    not isinstance(name, str)
                    or not name[:2].lower() == "x-"
                    or not name.isascii()
                    or not name.replace("-", "").isalnum()
                ):
                    raise ValueError(
                        f"custom header names must be X-<letters, digits, ->: {name!r}"
                    )
                if not isinstance(value, str) or not value or not value.isprintable():
                    raise ValueError(f"custom header {name} needs a printable value, got {value!r}")
                if set(header) != {"name", "value"}:
                    raise ValueError(f"custom header {name} has fields other than name and value")
            body["custom_headers"] = [dict(header) for header in custom_headers]
        command_id = command_id or command_id_for("transfer", call_control_id, to)
        return self._command("transfer", call_control_id, body, command_id, deadline, attempts)

    def reject(
        self,
        call_control_id: str,
        cause: str = "CALL_REJECTED",
        *,
        command_id: str | None = None,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> dict:
        """Reject an unanswered incoming call with CALL_REJECTED or USER_BUSY."""
        _require_call_control_id(call_control_id)
        if cause not in REJECT_CAUSES:
            raise ValueError(f"reject cause must be one of {REJECT_CAUSES}, got {cause!r}")
        command_id = command_id or command_id_for("reject", call_control_id, cause)
        return self._command(
            "reject", call_control_id, {"cause": cause}, command_id, deadline, attempts
        )

    def hangup(
        self,
        call_control_id: str,
        *,
        command_id: str | None = None,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> dict:
        """Hang up the call."""
        _require_call_control_id(call_control_id)
        command_id = command_id or command_id_for("hangup", call_control_id)
        return self._command("hangup", call_control_id, {}, command_id, deadline, attempts)

    def record_start(
        self,
        call_control_id: str,
        format: str = "mp3",
        channels: str = "dual",
        *,
        play_beep: bool | None = None,
        max_length: int | None = None,
        trim: str | None = None,
        command_id: str | None = None,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> dict:
        """Start recording the call in mp3/wav, single or dual channel."""
        _require_call_control_id(call_control_id)
        if format not in RECORD_FORMATS:
            raise ValueError(f"record format must be one of {RECORD_FORMATS}, got {format!r}")
        if channels not in RECORD_CHANNELS:
            raise ValueError(f"record channels must be one of {RECORD_CHANNELS}, got {channels!r}")
        body: dict[str, Any] = {"format": format, "channels": channels}
        if play_beep is not None:
            body["play_beep"] = play_beep
        if max_length is not None:
            body["max_length"] = max_length
        if trim is not None:
            body["trim"] = trim
        # One recording per call is the logical command, so format/channels are not in the id.
        command_id = command_id or command_id_for("record_start", call_control_id)
        return self._command("record_start", call_control_id, body, command_id, deadline, attempts)

    def record_stop(
        self,
        call_control_id: str,
        *,
        command_id: str | None = None,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> dict:
        """Stop the call's recording (Telnyx then sends call.recording.saved)."""
        _require_call_control_id(call_control_id)
        command_id = command_id or command_id_for("record_stop", call_control_id)
        return self._command("record_stop", call_control_id, {}, command_id, deadline, attempts)

    def speak(
        self,
        call_control_id: str,
        payload: str,
        voice: str,
        *,
        language: str | None = None,
        payload_type: str | None = None,
        command_id: str | None = None,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> dict:
        """Speak text (or SSML) to the call; call.speak.ended follows when it is done."""
        _require_call_control_id(call_control_id)
        if not isinstance(payload, str) or not payload.strip():
            raise ValueError("speak needs a non-empty payload")
        if not isinstance(voice, str) or not voice.strip():
            raise ValueError("speak needs a voice")
        if payload_type not in (None, *SPEAK_PAYLOAD_TYPES):
            raise ValueError(f"payload_type must be one of {SPEAK_PAYLOAD_TYPES}")
        body: dict[str, Any] = {"payload": payload, "voice": voice}
        if language is not None:
            body["language"] = language
        if payload_type is not None:
            body["payload_type"] = payload_type
        # One greeting per call is the logical command, so its text is not in the id.
        command_id = command_id or command_id_for("speak", call_control_id)
        return self._command("speak", call_control_id, body, command_id, deadline, attempts)

    def playback_start(
        self,
        call_control_id: str,
        audio_url: str,
        *,
        command_id: str | None = None,
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> dict:
        """Play an audio file (mp3/wav over HTTPS) to the call; call.playback.ended follows."""
        _require_call_control_id(call_control_id)
        if not isinstance(audio_url, str) or not audio_url.startswith(("https://", "http://")):
            raise ValueError("playback_start needs an http(s) audio_url")
        command_id = command_id or command_id_for("playback_start", call_control_id)
        return self._command(
            "playback_start",
            call_control_id,
            {"audio_url": audio_url},
            command_id,
            deadline,
            attempts,
        )

    def webrtc_token(self, credential_id: str) -> str:
        """A WebRTC login token (a JWT, valid for 24 h) for one telephony credential."""
        if not isinstance(credential_id, str) or not credential_id.strip():
            raise ValueError("credential_id must be a non-empty string")
        url = f"{self.base_url}/telephony_credentials/{quote(credential_id, safe='')}/token"
        # Minting twice is harmless, so a retry needs no command_id.
        response = self._send(
            "POST", "telephony_token", credential_id, url, None, subject="credential"
        )
        token = response.text.strip()
        if not token:
            raise TelnyxError(
                "telephony_token",
                credential_id,
                response.status_code,
                detail="empty token",
                subject="credential",
            )
        return token

    def _url(self, call_control_id: str, action: str) -> str:
        # Ids look like "v3:..."; ":" is legal in a path segment, anything else unsafe is quoted.
        return f"{self.base_url}/calls/{quote(call_control_id, safe=':')}/actions/{action}"

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_seconds)
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        # Jitter spreads out retries from many workers that failed at the same moment.
        return self._random.uniform(self.backoff_seconds, ceiling)

    def call_status(self, call_control_id: str, *, deadline: float | None = None) -> dict:
        """GET /calls/{call_control_id}: the leg's `data` (`is_alive`, `call_duration`...)."""
        _require_call_control_id(call_control_id)
        url = f"{self.base_url}/calls/{quote(call_control_id, safe=':')}"
        response = self._send("GET", "status", call_control_id, url, None, deadline=deadline)
        return self._data(response)

    def _command(
        self,
        action: str,
        call_control_id: str,
        body: dict,
        command_id: str,
        deadline: float | None,
        attempts: int | None,
    ) -> dict:
        url = self._url(call_control_id, action)
        payload = {**body, "command_id": command_id}
        response = self._send(
            "POST", action, call_control_id, url, payload, deadline=deadline, attempts=attempts
        )
        return self._data(response)

    def _send(
        self,
        method: str,
        action: str,
        target: str,
        url: str,
        payload: dict | None,
        *,
        subject: str = "call",
        deadline: float | None = None,
        attempts: int | None = None,
    ) -> requests.Response:
        """Send with bounded retries on transport errors, 429 and 5xx; TelnyxError otherwise.

        Every attempt and every backoff fits before `deadline`. The breaker is asked before each
        attempt: it refuses (TelnyxUnavailable) only while nothing was sent, otherwise the last
        error stands, since Telnyx may already have acted on an attempt that got no answer.
        """
        command_id = payload.get("command_id") if payload else None
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        max_attempts = self.max_attempts if attempts is None else max(1, attempts)
        error: TelnyxError | None = None
        for attempt in range(1, max_attempts + 1):
            timeout = self._timeout_before(deadline)
            if timeout is None:
                error = self._out_of_time(error, action, target, attempt - 1, subject)
                break
            if self.breaker is not None:
                try:
                    self.breaker.allow()
                except TelnyxUnavailable:
                    if error is None:
                        raise
                    break
            retry_after: float | None = None
            try:
                response = self._session.request(
                    method, url, json=payload, headers=headers, timeout=timeout
                )
            except _TRANSPORT_ERRORS as exc:
                metrics.TELNYX_REQUESTS.labels(action, "none").inc()
                self._record(failed=True)
                reason = f"no answer: connection error or timeout ({type(exc).__name__})"
                error = TelnyxError(
                    action, target, None, detail=reason, attempts=attempt, subject=subject
                )
            except requests.RequestException as exc:
                # Not a transient network failure (bad URL, proxy config...): retrying won't help.
                metrics.TELNYX_REQUESTS.labels(action, "none").inc()
                error = TelnyxError(
                    action,
                    target,
                    None,
                    detail=f"request failed ({type(exc).__name__})",
                    attempts=attempt,
                    subject=subject,
                )
                break
            else:
                status = response.status_code
                metrics.TELNYX_REQUESTS.labels(action, str(status)).inc()
                if status != 429:
                    self._record(failed=status >= 500)
                if 200 <= status < 300:
                    return response
                code, title, detail = _parse_error(response)
                error = TelnyxError(
                    action, target, status, code, title, detail, attempts=attempt, subject=subject
                )
                if status != 429 and status < 500:
                    break
                if status == 429:
                    retry_after = _retry_after_seconds(response)
            if attempt == max_attempts:
                break
            delay = self._backoff(attempt, retry_after)
            if deadline is not None and time.monotonic() + delay + _MIN_ATTEMPT_SECONDS > deadline:
                error = self._out_of_time(error, action, target, attempt, subject)
                break
            log.info(
                "Telnyx %s on %s %s: attempt %d/%d failed (%s), retrying in %.3fs "
                "with command_id %s",
                action,
                subject,
                target,
                attempt,
                max_attempts,
                f"HTTP {error.status}" if error.status is not None else error.detail,
                delay,
                command_id,
                extra=self._log_fields(subject, target),
            )
            self._sleep(delay)

        assert error is not None
        # An ended call is an expected race (caller hung up first), not an operational problem.
        level = logging.INFO if error.call_already_ended else logging.WARNING
        log.log(
            level, "%s (command_id %s)", error, command_id, extra=self._log_fields(subject, target)
        )
        raise error

    def _timeout_before(self, deadline: float | None) -> tuple[float, float] | None:
        """(connect, read) timeouts for an attempt that must end by `deadline`; None: no time."""
        if deadline is None:
            return self.timeout
        remaining = deadline - time.monotonic()
        if remaining < _MIN_ATTEMPT_SECONDS:
            return None
        connect, read = self.timeout
        return (min(connect, remaining), min(read, remaining))

    @staticmethod
    def _out_of_time(
        error: TelnyxError | None, action: str, target: str, attempts: int, subject: str
    ) -> TelnyxError:
        """The error to raise when the deadline leaves no room for another attempt."""
        if error is not None and not error.outcome_unknown:
            return error  # Telnyx's own answer says more than "out of time"
        return TelnyxError(
            action,
            target,
            None,
            detail="no answer in time",
            attempts=max(1, attempts),
            subject=subject,
            deadline_exceeded=True,
        )

    def _record(self, *, failed: bool) -> None:
        if self.breaker is None:
            return
        if failed:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()

    @staticmethod
    def _log_fields(subject: str, target: str) -> dict[str, str]:
        return {"call_control_id": target} if subject == "call" else {}

    @staticmethod
    def _data(response: requests.Response) -> dict:
        try:
            payload = response.json()
        except ValueError:
            return {}
        data = payload.get("data") if isinstance(payload, dict) else None
        return data if isinstance(data, dict) else {}


def get_telnyx() -> TelnyxClient | None:
    """The application's Telnyx client; None when TELNYX_API_KEY is not set."""
    client: TelnyxClient | None = current_app.extensions["telnyx"]
    return client


def init_app(app: Flask) -> None:
    """This app's Telnyx client (None without TELNYX_API_KEY), behind the shared breaker."""
    api_key = app.config["TELNYX_API_KEY"]
    if not api_key:
        app.extensions["telnyx"] = None
        return
    live = app.extensions["live"]
    breaker = CircuitBreaker(
        live.client,
        live.keys,
        BreakerSettings(
            failure_threshold=app.config["TELNYX_BREAKER_FAILURES"],
            cooldown_seconds=app.config["TELNYX_BREAKER_COOLDOWN_SECONDS"],
        ),
    )
    app.extensions["telnyx"] = TelnyxClient(api_key, app.config["TELNYX_API_BASE"], breaker=breaker)

    def breaker_gauges():
        state = breaker.state()
        for name in ("closed", "open", "half_open"):
            yield (
                "telnyx_flask_telnyx_circuit_state",
                "The circuit breaker around the Telnyx API: 1 for its current state",
                {"state": name},
                1.0 if state == name else 0.0,
            )

    metrics.add_scrape_gauges(app, breaker_gauges)
