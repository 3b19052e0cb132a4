"""Facts kept in more than one language agree with their one source: the call status order
(call_status.STATUS_RANK, against SQL's call_status_rank() and the Lua scripts' rank table) and
the fields of a webhook event (WebhookEvent, against SQL's webhook_event composite)."""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

import psycopg2
import psycopg2.extras
import pytest

from telnyx_flask.call_records import event_fields
from telnyx_flask.call_status import STATUS_RANK
from telnyx_flask.webhook_events import WebhookEvent, parse_webhook

from .helpers import encode, load_fixture

LUA_RANK = re.compile(r"local rank = \{([^}]*)\}")


def lua_ranks(script: str) -> dict[str, int]:
    text = resources.files("telnyx_flask").joinpath("lua", script).read_text()
    found = LUA_RANK.findall(text)
    assert len(found) == 1, f"{script} should spell the rank table once"
    pairs = (item.split("=") for item in found[0].split(","))
    return {name.strip(): int(rank) for name, rank in pairs}


def lua_scripts_with_ranks() -> list[str]:
    folder = resources.files("telnyx_flask").joinpath("lua")
    return sorted(p.name for p in folder.iterdir() if LUA_RANK.search(p.read_text()))


def test_the_statuses_rank_in_a_strict_forward_order():
    assert list(STATUS_RANK) == ["ringing", "answering", "answered", "ended"]
    assert list(STATUS_RANK.values()) == [1, 2, 3, 4]


@pytest.mark.parametrize("script", lua_scripts_with_ranks())
def test_the_lua_rank_table_is_status_rank(script):
    assert lua_ranks(script) == STATUS_RANK


def test_a_lua_script_ranks_statuses():
    assert "apply_call_states.lua" in lua_scripts_with_ranks()


def test_sql_call_status_rank_is_status_rank(database_url):
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        ranks = {}
        for status in [*STATUS_RANK, "unknown"]:
            cur.execute("SELECT call_status_rank(%s)", (status,))
            ranks[status] = cur.fetchone()[0]
    conn.close()
    assert ranks == {**STATUS_RANK, "unknown": 0}


def test_the_webhook_event_composite_has_the_dataclass_fields(database_url):
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid ="
            " (SELECT typrelid FROM pg_type WHERE oid = 'webhook_event'::regtype)"
            " AND attnum > 0 AND NOT attisdropped"
        )
        composite = {row[0] for row in cur.fetchall()}
    conn.close()
    stored = {field.name for field in dataclasses.fields(WebhookEvent)} - {"attempt"}
    assert composite == stored | {"effect"}


def test_every_field_of_a_parsed_event_reaches_postgresql_by_name(database_url):
    event = parse_webhook(encode(load_fixture("05_call.hangup.json")))
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT to_jsonb(jsonb_populate_record(NULL::webhook_event, %s))",
            (psycopg2.extras.Json(event_fields(event)),),
        )
        read = cur.fetchone()[0]
    conn.close()
    assert read["event_id"] == event.event_id
    assert read["effect"] == event.effect
    assert read["hangup_cause"] == event.hangup_cause
    assert read["call_session_id"] == event.call_session_id
    for name, value in event_fields(event).items():
        if name not in ("attempt", "occurred_at", "start_time", "end_time"):
            assert read[name] == value, name
