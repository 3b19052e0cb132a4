"""Hostile input gets a clear 4xx, never a 5xx: the cases found by hand, then a fuzzer that throws
odd headers, query strings, path segments and bodies at every route of the app."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from telnyx_flask.auth import issue_token
from telnyx_flask.redis_store import RedisKeys
from telnyx_flask.users import Agent

from .helpers import FIXTURES, answered_call_events, encode, load_fixture, renamed, signed_headers

MISSED_CALLER = "v3:Mx2c4Vb6Nm8Qw0Er2Ty4Ui6Op8As0Df2Gh4Jk6Lz8Xc0Vb2Nm4Qw6Er8Ty0Ui2"
SOME_UUID = "00000000-0000-4000-8000-000000000000"
WEBHOOK = "/api/telnyx/webhook"
# Streams until the client goes away: the fuzzer asks for it but never reads the body.
EVENT_STREAM = "/api/telnyx/events"


def storage_errors() -> float:
    """Requests answered 503 storage_unavailable so far, in this process."""
    return sum(
        REGISTRY.get_sample_value("telnyx_flask_storage_errors_total", {"store": store}) or 0.0
        for store in ("postgresql", "redis")
    )


@pytest.fixture
def no_storage_errors():
    """Fail the test if anything it sent was counted as PostgreSQL or Redis being down."""
    before = storage_errors()
    yield
    assert storage_errors() == before


@pytest.fixture
def generation_marker_as_found(redis_client, redis_prefix):
    """/readyz writes the live state's generation marker, which the cleanup between tests keeps
    on purpose: take it away again if this test made it, so later tests see Redis as before."""
    key = RedisKeys(redis_prefix).generation
    existed = redis_client.exists(key)
    yield
    if not existed:
        redis_client.delete(key)


def post_raw_webhook(client, raw: bytes, headers: dict[str, str] | None = None):
    all_headers = {"Content-Type": "application/json", **signed_headers(raw), **(headers or {})}
    return client.post(WEBHOOK, data=raw, headers=all_headers)


def post_json_text(client, path: str, text: str, headers: dict[str, str] | None = None):
    """POST a JSON document written by hand (escapes such as \\ud800 kept as they are)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return client.post(path, data=text.encode(), headers=all_headers)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


def cursor(document: bytes) -> str:
    """A `before` value made the way Cursor.encode makes one, around any bytes."""
    return base64.urlsafe_b64encode(document).decode().rstrip("=")


# --- Webhook signature ---


def test_overflowing_timestamp_is_401_not_500(client, db_rows, no_storage_errors):
    raw = encode(load_fixture("11_missed.call.initiated.json"))
    response = post_raw_webhook(client, raw, {"telnyx-timestamp": "9" * 400})
    error = assert_error(response, 401, "invalid_signature")
    assert "telnyx-timestamp must be Unix seconds" in error["message"]
    assert db_rows("SELECT * FROM webhook_events") == []


@pytest.mark.parametrize(
    "timestamp", ["1_700_000_000", "+1700000000", "\u0661\u0667" + "\u0660" * 8, "1e9"]
)
def test_timestamp_that_is_not_plain_digits_is_401(client, timestamp):
    raw = encode(load_fixture("11_missed.call.initiated.json"))
    response = post_raw_webhook(client, raw, {"telnyx-timestamp": timestamp})
    assert_error(response, 401, "invalid_signature")


# --- Sign-in ---


def test_lone_surrogate_in_login_email_is_400(client, no_storage_errors):
    response = post_json_text(
        client, "/api/auth/login", '{"email": "\\ud800@x.io", "password": "correct horse"}'
    )
    error = assert_error(response, 400, "invalid_email")
    assert "surrogate" in error["message"]


def test_nul_in_login_email_is_400(client, no_storage_errors):
    response = client.post(
        "/api/auth/login", json={"email": "a\u0000@x.io", "password": "correct horse"}
    )
    error = assert_error(response, 400, "invalid_email")
    assert "NUL" in error["message"]


def test_lone_surrogate_in_login_password_is_400(client, agent, no_storage_errors):
    text = json.dumps({"email": agent.email, "password": "correct\udc80"})
    response = post_json_text(client, "/api/auth/login", text)
    assert_error(response, 400, "invalid_password")


def test_nul_in_login_password_is_wrong_credentials(client, agent, no_storage_errors):
    response = client.post("/api/auth/login", json={"email": agent.email, "password": "a\u0000b"})
    assert_error(response, 401, "wrong_credentials")


@pytest.mark.parametrize("path", ["/api/auth/login", "/api/telnyx/calls/x/decline"])
@pytest.mark.parametrize("depth", [101, 900, 100_000])
def test_deeply_nested_json_body_is_400(client, agent, path, depth, no_storage_errors):
    deep = '{"a": ' + "[" * depth + "]" * depth + "}"
    response = post_json_text(client, path, deep, agent.headers)
    error = assert_error(response, 400, "invalid_body")
    assert "nested" in error["message"]


@pytest.mark.parametrize(
    "args",
    [
        ["create", "--email", "a\udcff@example.test", "--name", "A", "--password-stdin"],
        ["create", "--email", "a@example.test", "--name", "A\x00", "--password-stdin"],
        ["set-password", "a\udcff@example.test", "--password-stdin"],
        ["set-phone", "a\udcff@example.test", "--sip-username", "agenta"],
        ["deactivate", "a\udcff@example.test"],
    ],
)
def test_users_cli_refuses_text_postgresql_cannot_store(runner, db_rows, args):
    # An argument that is not valid UTF-8 reaches Python as lone surrogates.
    result = runner.invoke(args=["users", *args], input="a long password\n")
    assert result.exit_code == 2, result.output
    assert "must not contain NUL or unpaired surrogate characters" in result.output
    assert db_rows("SELECT * FROM users") == []


# --- Call history ---


@pytest.mark.parametrize("parameter", ["since", "until"])
@pytest.mark.parametrize("offset", ["+20:00", "-16:00", "+14:01"])
def test_history_timestamp_offset_postgresql_refuses_is_400(
    client, agent, parameter, offset, no_storage_errors
):
    response = client.get(
        "/api/calls",
        query_string={parameter: f"2024-01-01T00:00:00{offset}"},
        headers=agent.headers,
    )
    error = assert_error(response, 400, "invalid_parameter")
    assert error["parameter"] == parameter
    assert "UTC offset" in error["message"]


def test_history_timestamp_before_year_one_in_utc_is_400(client, agent, no_storage_errors):
    response = client.get(
        "/api/calls", query_string={"until": "0001-01-01T00:00:00+01:00"}, headers=agent.headers
    )
    error = assert_error(response, 400, "invalid_parameter")
    assert error["parameter"] == "until"
    assert "out of range" in error["message"]


def test_history_offset_with_seconds_is_read(client, agent):
    response = client.get(
        "/api/calls", query_string={"since": "2024-01-01T00:00:00+05:30:15"}, headers=agent.headers
    )
    assert response.status_code == 200


def test_history_offsets_are_read_as_the_instant_they_name(client, agent, post_webhook):
    for name in ("11_missed.call.initiated.json", "12_missed.call.hangup.json"):
        assert post_webhook(load_fixture(name)).status_code == 200
    # The call started at 16:10:00Z: 02:10 the next day at +10:00 is the same instant.
    query = {"since": "2026-11-21T02:09:59+10:00", "until": "2026-11-21T02:10:01+10:00"}
    response = client.get("/api/calls", query_string=query, headers=agent.headers)
    assert [call["call_control_id"] for call in response.get_json()["calls"]] == [MISSED_CALLER]


@pytest.mark.parametrize(
    "before",
    [
        "!!!not base64!!!",
        "é" * 20,
        cursor(b"\xff\xfe\x00"),
        cursor(b"[1, 2]"),
        cursor(b'{"at": 1e999, "id": 5}'),
        cursor(b'{"at": "2024-01-01T00:00:00+00:00", "id": 1' + b"0" * 100 + b"}"),
        cursor(b'{"at": "2024-01-01T00:00:00+00:00", "id": "\\u0000"}'),
        cursor(b'{"at": "2024-01-01T00:00:00\\u0000", "id": "' + SOME_UUID.encode() + b'"}'),
        cursor(b'{"at": "\\ud800", "id": "\\udc80"}'),
        cursor(b'{"at": "2024-01-01T00:00:00+20:00", "id": "' + SOME_UUID.encode() + b'"}'),
        cursor(b'{"at": "0001-01-01T00:00:00+01:00", "id": "' + SOME_UUID.encode() + b'"}'),
        cursor(b'{"at": "2024-01-01T00:00:00", "id": "' + SOME_UUID.encode() + b'"}'),
        cursor(b"[" * 140 + b"]" * 140),
    ],
)
def test_cursor_that_is_not_ours_is_400_naming_before(client, agent, before, no_storage_errors):
    response = client.get("/api/calls", query_string={"before": before}, headers=agent.headers)
    error = assert_error(response, 400, "invalid_parameter")
    assert error["parameter"] == "before"


# --- Webhook bodies ---


def test_nul_in_caller_name_still_rings(client, agent, db_rows, no_storage_errors):
    body = load_fixture("11_missed.call.initiated.json")
    body["data"]["payload"]["caller_id_name"] = "ACME\u0000 CORP"
    raw = encode(body)
    assert post_raw_webhook(client, raw).status_code == 200
    calls = client.get("/api/telnyx/calls/pending", headers=agent.headers).get_json()["calls"]
    assert [(call["call_control_id"], call["caller_name"]) for call in calls] == [
        (MISSED_CALLER, "ACME CORP")
    ]
    # The body is kept exactly as it came, escaped NUL and all.
    [event] = db_rows("SELECT payload::text AS payload FROM webhook_events")
    assert event["payload"].encode() == raw


def test_lone_surrogates_in_payload_are_replaced_and_the_raw_body_kept(
    client, agent, db_rows, redis_client, redis_prefix, no_storage_errors
):
    raw = (
        encode(load_fixture("11_missed.call.initiated.json"))
        .replace(b'"ACME CORP"', b'"ACME \\udc80 CORP \\ud800"')
        .replace(b'"PCMU"', b'"\\ud83d"')
    )
    assert post_raw_webhook(client, raw).status_code == 200
    [event] = db_rows("SELECT payload::text AS payload FROM webhook_events")
    assert event["payload"].encode() == raw
    [call] = db_rows("SELECT caller_id_name FROM inbound_calls")
    assert call["caller_id_name"] == "ACME \ufffd CORP \ufffd"
    assert redis_client.hget(f"{redis_prefix}call:{MISSED_CALLER}", "caller_name") == (
        "ACME \ufffd CORP \ufffd"
    )
    [(_, fields)] = redis_client.xrange(f"{redis_prefix}events")
    assert fields["event"] == "call.ringing"
    assert json.loads(fields["data"])["caller_name"] == "ACME \ufffd CORP \ufffd"
    calls = client.get("/api/telnyx/calls/pending", headers=agent.headers).get_json()["calls"]
    assert calls[0]["caller_name"] == "ACME \ufffd CORP \ufffd"


@pytest.mark.parametrize("field", ["id", "event_type"])
@pytest.mark.parametrize("bad", ["\\u0000", "\\ud800"])
def test_nul_or_lone_surrogate_in_event_id_or_type_is_400(
    client, db_rows, field, bad, no_storage_errors
):
    body = load_fixture("11_missed.call.initiated.json")
    raw = encode(body).replace(
        f'"{field}": "{body["data"][field]}"'.encode(), f'"{field}": "x{bad}"'.encode()
    )
    error = assert_error(post_raw_webhook(client, raw), 400, "malformed_webhook")
    assert f"data.{field}" in error["message"]
    assert db_rows("SELECT * FROM webhook_events") == []


@pytest.mark.parametrize("depth", [101, 900, 50_000])
def test_deeply_nested_signed_webhook_is_400(client, db_rows, depth, no_storage_errors):
    # Past a few thousand levels PostgreSQL's json parser runs out of stack: a 503, as if it
    # were down, for a body no retry can fix. Python's parser stops at a depth its version sets.
    body = load_fixture("20_unhandled.call.dtmf.received.json")
    body["data"]["payload"]["client_state"] = "NESTED"
    raw = encode(body).replace(b'"NESTED"', b"[" * depth + b"]" * depth)
    error = assert_error(post_raw_webhook(client, raw), 400, "malformed_webhook")
    assert "nested" in error["message"]
    assert db_rows("SELECT * FROM webhook_events") == []


def test_nesting_up_to_the_limit_is_stored(client, db_rows):
    body = load_fixture("20_unhandled.call.dtmf.received.json")
    body["data"]["payload"]["client_state"] = "NESTED"
    raw = encode(body).replace(b'"NESTED"', b"[" * 97 + b"]" * 97)
    assert post_raw_webhook(client, raw).status_code == 200
    [event] = db_rows("SELECT payload::text AS payload FROM webhook_events")
    assert event["payload"].encode() == raw


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_in_a_signed_webhook_is_400(client, db_rows, constant, no_storage_errors):
    # Python reads these; PostgreSQL's json type, which keeps the raw body, does not.
    raw = encode(load_fixture("11_missed.call.initiated.json")).replace(
        b'"attempt": 1', b'"attempt": ' + constant
    )
    error = assert_error(post_raw_webhook(client, raw), 400, "malformed_webhook")
    assert f"{constant.decode()} is not JSON" in error["message"]
    assert db_rows("SELECT * FROM webhook_events") == []


def test_nan_in_a_login_body_is_400(client):
    response = post_json_text(client, "/api/auth/login", '{"email": NaN, "password": "x"}')
    error = assert_error(response, 400, "invalid_body")
    assert "NaN is not JSON" in error["message"]


def test_occurred_at_decades_from_now_is_400(client, db_rows, no_storage_errors):
    body = load_fixture("03_call.answered.json")
    body["data"]["occurred_at"] = "0001-01-01T00:00:00Z"
    error = assert_error(post_raw_webhook(client, encode(body)), 400, "malformed_webhook")
    assert "data.occurred_at" in error["message"]


def test_end_time_decades_from_now_is_ignored_not_a_500(client, db_rows, no_storage_errors):
    # A talk time from an answer now to an end in 9999 overflows PostgreSQL's integer seconds.
    events = answered_call_events()
    hangup = next(event for event in events if event["data"]["event_type"] == "call.hangup")
    hangup["data"]["payload"]["end_time"] = "9999-12-31T23:59:59Z"
    for event in events:
        assert post_raw_webhook(client, encode(event)).status_code == 200
    [log] = db_rows("SELECT ended_at, duration FROM call_logs")
    assert log["ended_at"].isoformat() == "2026-11-20T15:06:47.816307+00:00"  # occurred_at
    assert log["duration"] == 155


def test_webhook_times_at_any_offset_are_stored_in_utc(client, db_rows):
    body = load_fixture("11_missed.call.initiated.json")
    body["data"]["occurred_at"] = "2026-11-21T12:10:00.000001+20:00"
    body["data"]["payload"]["start_time"] = "2026-11-21T12:10:00.000001+20:00"
    assert post_raw_webhook(client, encode(body)).status_code == 200
    [call] = db_rows("SELECT started_at, ringing_since FROM inbound_calls")
    assert call["started_at"].isoformat() == "2026-11-20T16:10:00.000001+00:00"
    assert call["ringing_since"] == call["started_at"]


# --- The fuzzer: every route, with and without an agent's token ---

ODD_PIECES = [
    "\x00",
    "\ud800",
    "\udc80",
    "\udfff",
    "\ufffd",
    "\u202e",
    "\U0001f600",
    "\u0661",
    "²",
    "é",
    "%",
    "%00",
    "'",
    '"',
    "\\",
    "/",
    "..",
    "+",
    " ",
    "\t",
    "{",
    "}",
    "-",
]
odd_text = st.lists(
    st.one_of(st.characters(exclude_categories=()), st.sampled_from(ODD_PIECES)), max_size=30
).map("".join)
long_text = st.builds(
    lambda piece, times: piece * times,
    st.sampled_from(["a", "\x00", "\ud800", "9", "é", "[", "\U0001f600"]),
    st.integers(min_value=200, max_value=5_000),
)
plausible_values = st.sampled_from(
    [
        "",
        "0",
        "-1",
        "9" * 400,
        SOME_UUID,
        MISSED_CALLER,
        "2024-01-01T00:00:00+20:00",
        "2024-01-01T00:00:00-23:59",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59.999999-14:00",
        "2024-01-01T00:00:00+05:30:15.123456",
        "+12025550188",
        "answered",
        "inbound",
        "CALL_REJECTED",
        "1-1",
        "²-1",
        "\u0661-\u0661",
        "18446744073709551616-0",
        "bytes=0-",
        "Bearer x",
    ]
)
hostile_text = st.one_of(odd_text, long_text, plausible_values)


@dataclass(frozen=True)
class RawJson:
    """JSON text written as is: numbers Python would refuse to write, or nesting it can't read."""

    text: str


raw_json = st.one_of(
    st.sampled_from(["1" * 5000, "1e999999", "-0", "NaN", "-Infinity", "1.5e-400", "9" * 400]),
    st.integers(min_value=50, max_value=60_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=50, max_value=60_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
).map(RawJson)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    hostile_text,
    raw_json,
)
KNOWN_KEYS = ["email", "password", "cause", "from", "to", "data", "id", "event_type", "payload"]
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KNOWN_KEYS), hostile_text), children, max_size=4),
    ),
    max_leaves=12,
)


def to_json(value) -> str:
    """JSON text for a value; lone surrogates come out as \\udxxx escapes, as a sender may write."""
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, dict):
        items = (f"{json.dumps(key)}: {to_json(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    return json.dumps(value)


login_bodies = st.fixed_dictionaries(
    {
        "email": st.one_of(hostile_text, st.just("alice@example.test"), json_scalars),
        "password": st.one_of(hostile_text, st.just("correct horse battery"), json_scalars),
    }
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.builds(lambda value: to_json(value).encode("utf-8", "surrogatepass"), json_values),
)
# Sign-in is where odd text goes furthest (rate limits, the users table), so it gets its share.
request_bodies = st.one_of(
    bodies,
    st.builds(lambda value: to_json(value).encode("utf-8", "surrogatepass"), login_bodies),
)


def percent_encoded(text: str, safe: str = "") -> str:
    """Text as it travels in a URL; lone surrogates become the (invalid UTF-8) bytes they'd be."""
    return quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe=safe)


# A server decodes header bytes as latin-1, and no header value holds a line break.
header_values = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=60),
    plausible_values,
    st.builds(lambda n: "9" * n, st.integers(min_value=1, max_value=5000)),
)
HEADER_NAMES = [
    "Authorization",
    "Cookie",
    "Origin",
    "Referer",
    "Range",
    "Last-Event-ID",
    "X-Request-ID",
    "X-Forwarded-For",
    "Content-Type",
    "Accept",
    "telnyx-timestamp",
    "telnyx-signature-ed25519",
]
header_sets = st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=4)
QUERY_NAMES = [
    "limit",
    "before",
    "outcome",
    "direction",
    "agent",
    "phone",
    "since",
    "until",
    "last_event_id",
]
query_strings = st.lists(
    st.tuples(st.one_of(st.sampled_from(QUERY_NAMES), hostile_text), hostile_text), max_size=4
).map(lambda pairs: "&".join(f"{percent_encoded(k)}={percent_encoded(v)}" for k, v in pairs))
CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


@dataclass(frozen=True)
class HostileRequest:
    """One request's worth of odd input, sent to every route in turn."""

    segment: str
    query_string: str
    headers: dict[str, str]
    body: bytes | None
    who: str
    token: str
    remote_addr: str


hostile_requests = st.builds(
    HostileRequest,
    segment=st.one_of(hostile_text, st.just(MISSED_CALLER)),
    query_string=query_strings,
    headers=header_sets,
    body=request_bodies,
    who=st.sampled_from(["anyone", "agent", "bad token"]),
    token=header_values,
    remote_addr=st.ip_addresses().map(str),
)


def routes(app) -> list[tuple[str, str]]:
    """Every (rule, method) the app serves."""
    return sorted(
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"OPTIONS"}
    )


def fill(rule: str, segment: str) -> str:
    """The rule's path with every <variable> replaced by the segment, percent-encoded."""

    def one(match: re.Match) -> str:
        return percent_encoded(segment, safe="/" if match.group(1) == "path" else "")

    return CONVERTER.sub(one, rule)


def assert_not_5xx(response, method: str, path: str) -> None:
    assert response.status_code < 500, (method, path, response.get_data(as_text=True)[:300])


def fresh_token_headers(app, agent) -> dict[str, str]:
    """A new bearer token for the agent: an earlier example may have signed the last one out."""
    with app.app_context():
        token = issue_token(Agent(agent.id, agent.email, agent.name, None))
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow  # ~9 s: `make test` runs it, the pre-commit tier does not
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(hostile=hostile_requests)
def test_no_route_answers_5xx_to_hostile_requests(
    client, agent, post_webhook, no_storage_errors, generation_marker_as_found, hostile
):
    # A call ringing, so that answer, decline and end sometimes reach a real call.
    post_webhook(load_fixture("11_missed.call.initiated.json"))
    app = client.application
    for rule, method in routes(app):
        path = fill(rule, hostile.segment)
        headers = dict(hostile.headers)
        if hostile.who == "agent":
            # A token of its own for each request: the one before may have been logout's.
            headers.update(fresh_token_headers(app, agent))
        elif hostile.who == "bad token":
            headers["Authorization"] = f"Bearer {hostile.token}"
        sends = [headers]
        if rule == WEBHOOK and hostile.body is not None:
            sends.append({**headers, **signed_headers(hostile.body)})
        for sent in sends:
            response = client.open(
                path,
                method=method,
                query_string=hostile.query_string,
                headers=sent,
                data=hostile.body,
                environ_base={"REMOTE_ADDR": hostile.remote_addr},
                buffered=False,
            )
            try:
                assert_not_5xx(response, method, path)
                if rule != EVENT_STREAM:
                    response.get_data()
            finally:
                response.close()


WEBHOOK_FIXTURES = sorted(path.name for path in FIXTURES.glob("*.json"))
WEBHOOK_FIELDS = [
    ("data", "id"),
    ("data", "event_type"),
    ("data", "occurred_at"),
    ("data", "payload"),
    ("meta", "attempt"),
    ("meta",),
    ("data",),
]
PAYLOAD_FIELDS = [
    "call_control_id",
    "call_leg_id",
    "call_session_id",
    "connection_id",
    "caller_id_name",
    "from",
    "to",
    "direction",
    "state",
    "start_time",
    "end_time",
    "hangup_cause",
    "hangup_source",
    "sip_hangup_cause",
    "recording_urls",
    "public_recording_urls",
]
CALL_IDS = ("call_control_id", "call_leg_id", "call_session_id")
timestamps = st.one_of(
    plausible_values,
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
)
suffixes = st.text(alphabet="abcdef0123456789", min_size=12, max_size=12).map(lambda s: f"-{s}")


@st.composite
def hostile_webhooks(draw) -> bytes:
    """A realistic Telnyx body with a few fields replaced by hostile values, or any odd body.

    Each body's ids get a suffix of their own, as Telnyx's are unique: two calls that claim one
    call_control_id are conflicting input, not odd input, and not what this looks for.
    """
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(bodies) or b""
    suffix = draw(suffixes)
    [body] = renamed([load_fixture(draw(st.sampled_from(WEBHOOK_FIXTURES)))], suffix)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if draw(st.booleans()):
            *parents, key = ("data", "payload", draw(st.sampled_from(PAYLOAD_FIELDS)))
        else:
            *parents, key = draw(st.sampled_from(WEBHOOK_FIELDS))
        where = body
        for parent in parents:
            # An earlier replacement may have made a parent something other than an object.
            where = where[parent] if isinstance(where.get(parent), dict) else {}
        if key.endswith("time") or key == "occurred_at":
            value = draw(st.one_of(timestamps, json_values))
        elif key.endswith("recording_urls"):
            value = {"mp3": draw(json_values), "wav": draw(json_values)}
        else:
            value = draw(json_values)
        if key in CALL_IDS and isinstance(value, str | int | float) and not isinstance(value, bool):
            value = f"{value}{suffix}"
        where[key] = value
    return to_json(body).encode("utf-8", "surrogatepass")


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=hostile_webhooks())
def test_signed_hostile_webhooks_never_get_a_5xx(client, no_storage_errors, raw):
    response = post_raw_webhook(client, raw)
    assert_not_5xx(response, "POST", WEBHOOK)


@pytest.mark.parametrize(
    "value", ["\u00b2-1", "\u0661-\u0661", "1-\u0663", "-1", "1-", "1" * 21 + "-0"]
)
def test_stream_ids_in_other_digits_or_too_long_are_malformed(value):
    from telnyx_flask.event_stream import parse_stream_id

    assert parse_stream_id(value) is None


def test_a_resume_point_in_other_digits_gets_a_reset_not_a_broken_stream(app, agent):
    from telnyx_flask.push import StreamSettings, event_stream

    with app.app_context():
        frames = event_stream(app.extensions["push"], "²-1", StreamSettings())
        first = [next(frames) for _ in range(3)]
        frames.close()
    assert b"event: reset" in first[1]
    assert b"event: snapshot" in first[2]
