"""The OpenAPI 3.1 description of the HTTP API, served at GET /api/openapi.json.

Written by hand, next to nothing else: tests check that every route is described here, and
schemathesis checks the running app against it (no 5xx, no response outside its schema).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

bp = Blueprint("openapi", __name__)

NULLABLE_STRING = {"type": ["string", "null"]}
STRING = {"type": "string"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    return json_body(ref("Error"), description)


def ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return json_body(schema, description)


def success(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"success": {"const": True}, **properties},
        "required": ["success", *(required or list(properties))],
    }


AGENT_ERRORS = {
    "401": error("no valid session cookie or bearer token"),
    "403": error("deactivated agent, or a cookie-authenticated POST from another origin"),
    "503": error("PostgreSQL or Redis unavailable; retry"),
}
# What an agent action answers when Telnyx is down or slow (invariant 11).
TELNYX_ERRORS = {
    "503": error(
        "PostgreSQL or Redis unavailable, or Telnyx unavailable (the circuit breaker is open, "
        "code telnyx_unavailable): retry after Retry-After"
    ),
    "504": error(
        "Telnyx did not answer in time (telnyx_timeout); the agent keeps the call and a retry "
        "is safe (caller_waiting: true if the caller is answered)"
    ),
}
# Each agent action costs a Telnyx API call: they are limited per agent (rate_limits.py).
ACTIONS_LIMITED = {
    "429": error(
        "too many call actions by this agent (code rate_limited, AGENT_ACTIONS_PER_MINUTE for "
        "answer, decline and end together): retry after Retry-After"
    )
}
CALL_ID = {
    "name": "call_control_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}
HISTORY_ID = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "description": "the call_logs id, or the call's call_control_id",
    "schema": {"type": "string", "minLength": 1},
}
AGENT_SECURITY = [{"bearer": []}, {"session": []}]


def operation(
    summary: str,
    responses: dict[str, Any],
    *,
    agent: bool = True,
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if agent:
        op["security"] = AGENT_SECURITY
        op["responses"] = {**AGENT_ERRORS, **responses}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": body}},
        }
    return op


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": STRING, "message": STRING},
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    },
    "Agent": {
        "type": "object",
        "properties": {
            "id": STRING,
            "email": STRING,
            "name": STRING,
            "sip_username": NULLABLE_STRING,
        },
        "required": ["id", "email", "name", "sip_username"],
    },
    "LiveCall": {
        "type": "object",
        "description": "a call ringing or in progress, from Redis",
        "properties": {
            "call_control_id": STRING,
            "call_session_id": NULLABLE_STRING,
            "from": NULLABLE_STRING,
            "to": NULLABLE_STRING,
            "caller_name": NULLABLE_STRING,
            "status": {"enum": ["ringing", "answering", "answered", "ended"]},
            "ringing_since": NULLABLE_STRING,
            "answered_at": NULLABLE_STRING,
            "ended_at": NULLABLE_STRING,
            "has_recording": {"type": "boolean"},
            "claimed_by": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {"id": STRING, "name": NULLABLE_STRING},
                        "required": ["id"],
                    },
                ]
            },
        },
        "required": ["call_control_id", "status"],
    },
    "LoggedCall": {
        "type": "object",
        "description": "one call from the history (call_logs)",
        "properties": {
            "id": STRING,
            "call_control_id": STRING,
            "direction": {"enum": ["inbound", "outbound"]},
            "from": NULLABLE_STRING,
            "to": NULLABLE_STRING,
            "caller_name": NULLABLE_STRING,
            "outcome": {"enum": ["answered", "missed", "abandoned", "declined", None]},
            "duration": {"type": ["integer", "null"]},
            "started_at": NULLABLE_STRING,
            "ended_at": NULLABLE_STRING,
            "end_reason": NULLABLE_STRING,
            "has_recording": {
                "type": "boolean",
                "description": "play it from /api/calls/{call_id}/recording",
            },
            "agent": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {"id": STRING, "name": STRING},
                        "required": ["id", "name"],
                    },
                ]
            },
        },
        "required": ["id", "call_control_id", "outcome", "duration"],
    },
}

SUMMARY_OF_EVENTS = (
    "text/event-stream: `retry:`, then `snapshot` (or, with Last-Event-ID / ?last_event_id=, "
    "every event after it; `reset` + `snapshot` if that id is malformed or gone), then live "
    "`call.ringing`, `call.claimed`, `call.released`, `call.answered`, `call.ended`, "
    "`call.recording`, `call.logged`, each with its Redis stream id; `: ping` when idle."
)

PATHS: dict[str, Any] = {
    "/": {
        "get": operation(
            "The softphone page",
            {"200": {"description": "HTML", "content": {"text/html": {}}}},
            agent=False,
        )
    },
    "/api/openapi.json": {
        "get": operation(
            "This document",
            {"200": ok({"type": "object"})},
            agent=False,
        )
    },
    "/api/telnyx/webhook": {
        "post": {
            "summary": "A Telnyx Call Control webhook, signed with Ed25519",
            "description": "At most 256 KiB. 2xx only once the event is durable and live.",
            "parameters": [
                {"name": "telnyx-signature-ed25519", "in": "header", "schema": STRING},
                {"name": "telnyx-timestamp", "in": "header", "schema": STRING},
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": ok(
                    {
                        "type": "object",
                        "properties": {
                            "result": {"enum": ["applied", "duplicate", "ignored"]},
                            "event_id": STRING,
                        },
                        "required": ["result", "event_id"],
                    }
                ),
                "400": error("not a Telnyx webhook body"),
                "401": error("signature missing, wrong or outside the 300 s window"),
                "413": error("over 256 KiB"),
                "503": error("PostgreSQL or Redis unavailable: Telnyx retries"),
            },
        }
    },
    "/api/auth/login": {
        "post": operation(
            "Sign in: sets the session cookie and returns a bearer token",
            {
                "200": ok(
                    {
                        "type": "object",
                        "properties": {"token": STRING, "user": ref("Agent")},
                        "required": ["token", "user"],
                    }
                ),
                "400": error("email or password missing or malformed"),
                "401": error("email or password is wrong"),
                "403": error(
                    "the account is deactivated, or Origin/Referer names another site "
                    "(login CSRF protection)"
                ),
                "413": error("body too large"),
                "415": error("the body is not application/json (login CSRF protection)"),
                "429": error("too many attempts (Retry-After says when to try again)"),
                "503": error("Redis or PostgreSQL unavailable"),
            },
            agent=False,
            body={
                "type": "object",
                "properties": {"email": STRING, "password": STRING},
                "required": ["email", "password"],
            },
        )
    },
    "/api/auth/logout": {
        "post": operation(
            "Sign out: ends this sign-in's session (its cookie and bearer token, everywhere); "
            "with everywhere=true every session of the agent, and its open event streams",
            {
                "200": ok(success({})),
                "400": error("everywhere is not true or false"),
                "401": error("the credentials are not valid (everywhere needs a live session)"),
                "403": error("a cookie-authenticated request from another origin"),
                "503": error("PostgreSQL unavailable"),
            },
            agent=False,
            parameters=[
                {
                    "name": "everywhere",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]},
                }
            ],
        )
    },
    "/api/auth/me": {
        "get": operation(
            "The signed-in agent",
            {
                "200": ok(
                    {"type": "object", "properties": {"user": ref("Agent")}, "required": ["user"]}
                )
            },
        )
    },
    "/api/softphone/config": {
        "get": operation(
            "What the page offers this agent",
            {
                "200": ok(
                    success(
                        {
                            "agent": ref("Agent"),
                            "sip_uri": NULLABLE_STRING,
                            "webrtc": {
                                "type": "object",
                                "properties": {
                                    "enabled": {"type": "boolean"},
                                    "reason": NULLABLE_STRING,
                                    "sdk_url": STRING,
                                },
                                "required": ["enabled", "reason", "sdk_url"],
                            },
                            "simulator": {
                                "type": "object",
                                "properties": {"enabled": {"type": "boolean"}},
                                "required": ["enabled"],
                            },
                            "ring_timeout_seconds": {"type": "integer"},
                        }
                    )
                )
            },
        )
    },
    "/api/telnyx/webrtc/token": {
        "post": operation(
            "A Telnyx WebRTC login token for the agent's telephony credential",
            {
                "200": ok(success({"login_token": STRING, "expires_in": {"type": "integer"}})),
                "409": error(
                    "no telephony credential for this agent (or only the shared one, and "
                    "WEBRTC_SHARED_CREDENTIAL is off)"
                ),
                "429": error(
                    "too many tokens for this agent (code rate_limited, WEBRTC_TOKENS_PER_HOUR): "
                    "retry after Retry-After"
                ),
                "502": error("Telnyx refused or did not answer"),
            },
        )
    },
    "/api/dev/simulated-calls": {
        "post": operation(
            "Development only (absent with APP_ENV=production): ask the Telnyx simulator "
            "(TELNYX_SIMULATOR_URL) to ring this service",
            {
                "201": ok(
                    success({"call_control_id": STRING, "from": STRING, "to": STRING}),
                    "the simulator started the call",
                ),
                "400": error("a bad phone number or body"),
                "409": error("TELNYX_SIMULATOR_URL is not set"),
                "413": error("body too large"),
                "502": error("the simulator did not start a call"),
            },
            body={"type": "object", "properties": {"from": STRING, "to": STRING}},
            body_required=False,
        )
    },
    "/api/telnyx/calls/pending": {
        "get": operation(
            "Ringing calls, oldest first",
            {"200": ok(success({"calls": {"type": "array", "items": ref("LiveCall")}}))},
        )
    },
    "/api/telnyx/events": {
        "get": operation(
            "Live call events (Server-Sent Events)",
            {
                "200": {
                    "description": SUMMARY_OF_EVENTS,
                    "content": {"text/event-stream": {"schema": STRING}},
                },
                "429": error(
                    "this agent already has SSE_MAX_STREAMS_PER_AGENT streams open on any server "
                    "(code too_many_streams): close one, or retry after Retry-After"
                ),
                "503": error(
                    "PostgreSQL or Redis unavailable, or this server is shutting down (code "
                    "draining): reconnect after Retry-After, with Last-Event-ID"
                ),
            },
            parameters=[
                {"name": "Last-Event-ID", "in": "header", "schema": STRING},
                {"name": "last_event_id", "in": "query", "schema": STRING},
            ],
        )
    },
    "/api/telnyx/calls/{call_control_id}/answer": {
        "post": operation(
            "Take a ringing call: claim, answer, transfer to the agent; one agent wins",
            {
                "200": ok(
                    success(
                        {"call_control_id": STRING, "transferred_to": STRING, "agent": ref("Agent")}
                    )
                ),
                "400": error("malformed call_control_id"),
                "404": error("unknown call, or it has ended"),
                "409": error("taken by someone else (claimed_by names who), or no SIP username"),
                "502": error("Telnyx refused (caller_waiting: true if the caller is answered)"),
                **ACTIONS_LIMITED,
                **TELNYX_ERRORS,
            },
            parameters=[CALL_ID],
        )
    },
    "/api/telnyx/calls/{call_control_id}/decline": {
        "post": operation(
            "Reject a ringing call",
            {
                "200": ok(success({"call_control_id": STRING, "cause": STRING})),
                "400": error("malformed call_control_id, body or cause"),
                "404": error("unknown call, or it has ended"),
                "409": error("taken by someone else"),
                "413": error("body too large"),
                "502": error("Telnyx refused"),
                **ACTIONS_LIMITED,
                **TELNYX_ERRORS,
            },
            parameters=[CALL_ID],
            body={
                "type": "object",
                "properties": {"cause": {"enum": ["CALL_REJECTED", "USER_BUSY"]}},
            },
            body_required=False,
        )
    },
    "/api/telnyx/calls/{call_control_id}/end": {
        "post": operation(
            "Hang up a call this agent took",
            {
                "200": ok(
                    success({"call_control_id": STRING, "already_ended": {"type": "boolean"}})
                ),
                "400": error("malformed call_control_id"),
                "403": error("someone else's call"),
                "404": error("no live call with that id"),
                "409": error("still ringing: decline it instead"),
                "502": error("Telnyx refused"),
                **ACTIONS_LIMITED,
                **TELNYX_ERRORS,
            },
            parameters=[CALL_ID],
        )
    },
    "/api/calls": {
        "get": operation(
            "Call history, newest first, with filters and a cursor",
            {
                "200": ok(
                    success(
                        {
                            "calls": {"type": "array", "items": ref("LoggedCall")},
                            "next_cursor": NULLABLE_STRING,
                        }
                    )
                ),
                "400": error("a bad, unknown or repeated parameter (named in `parameter`)"),
            },
            parameters=[
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                {"name": "before", "in": "query", "schema": STRING},
                {
                    "name": "outcome",
                    "in": "query",
                    "schema": {"enum": ["answered", "missed", "abandoned", "declined"]},
                },
                {"name": "direction", "in": "query", "schema": {"enum": ["inbound", "outbound"]}},
                {"name": "agent", "in": "query", "schema": STRING},
                {"name": "phone", "in": "query", "schema": STRING},
                {"name": "since", "in": "query", "schema": STRING},
                {"name": "until", "in": "query", "schema": STRING},
            ],
        )
    },
    "/api/calls/{call_id}": {
        "get": operation(
            "One call from the history",
            {
                "200": ok(success({"call": ref("LoggedCall")})),
                "404": error("no such call"),
            },
            parameters=[HISTORY_ID],
        )
    },
    "/api/calls/{call_id}/recording": {
        "get": operation(
            "The call's recording, streamed through the service (Range supported)",
            {
                "200": {"description": "audio", "content": {"audio/*": {}}},
                "206": {"description": "part of the audio", "content": {"audio/*": {}}},
                "404": error("no such call, or no recording"),
                "410": error("the recording's link has expired"),
                "502": error(
                    "the recording's source did not answer, or is not on RECORDING_HOSTS "
                    "(recording_source_refused)"
                ),
            },
            parameters=[
                HISTORY_ID,
                {"name": "Range", "in": "header", "schema": STRING},
            ],
        )
    },
    "/vendor/telnyx-webrtc.mjs": {
        "get": operation(
            "The pinned @telnyx/webrtc bundle",
            {
                "200": {"description": "JavaScript", "content": {"text/javascript": {}}},
                "404": error("not installed (npm ci)"),
            },
            agent=False,
        )
    },
    "/healthz": {
        "get": operation(
            "Liveness",
            {
                "200": ok(
                    {"type": "object", "properties": {"status": {"const": "ok"}}},
                )
            },
            agent=False,
        )
    },
    "/readyz": {
        "get": operation(
            "Readiness: PostgreSQL and Redis answer (rebuilding Redis's live state first if it "
            "was lost); `detail` reports the Telnyx circuit breaker and Redis's eviction policy",
            {
                "200": ok({"type": "object", "properties": {"status": {"const": "ready"}}}),
                "503": ok(
                    {"type": "object", "properties": {"checks": {"type": "object"}}},
                    "a dependency does not answer (`checks` says which), or this worker is "
                    "stopping (`status`: draining)",
                ),
            },
            agent=False,
        )
    },
    "/metrics": {
        "get": operation(
            "Prometheus metrics, summed over this host's workers",
            {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
            agent=False,
        )
    },
}

# Paths create_app registers only with APP_ENV=development; production's document leaves them out.
DEVELOPMENT_ONLY_PATHS = frozenset({"/api/dev/simulated-calls"})

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "telnyx-flask",
        "version": "0.1.0",
        "description": (
            "Inbound calls from Telnyx Call Control v2, answered by agents in the browser. "
            'Errors are always JSON: {"error": {"code", "message"}}.'
        ),
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "telnyx_flask_session"},
        },
    },
}


def document_for(development: bool) -> dict[str, Any]:
    """The document for a process in development (every path) or production (not the dev ones)."""
    if development:
        return DOCUMENT
    paths = {path: item for path, item in PATHS.items() if path not in DEVELOPMENT_ONLY_PATHS}
    return {**DOCUMENT, "paths": paths}


@bp.get("/api/openapi.json")
def openapi_document():
    """This API's OpenAPI 3.1 description, as this process serves it."""
    return jsonify(document_for(current_app.config["APP_ENV"] == "development"))
