"""Webhook verification: Ed25519 over "{timestamp}|{raw body}", a 300 s window, fail closed."""

from __future__ import annotations

import base64
import json
import time

import pytest
from nacl.signing import SigningKey

from telnyx_flask import create_app

from .helpers import encode, load_fixture, signed_headers

BODY = encode(load_fixture("11_missed.call.initiated.json"))


def post(client, body: bytes, headers: dict):
    return client.post(
        "/api/telnyx/webhook", data=body, headers={"Content-Type": "application/json", **headers}
    )


def assert_rejected(response, db_rows):
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert db_rows("SELECT * FROM webhook_events") == []


def test_correctly_signed_webhook_is_accepted(client):
    assert post(client, BODY, signed_headers(BODY)).status_code == 200


def test_headers_are_matched_case_insensitively(client):
    headers = {name.upper(): value for name, value in signed_headers(BODY).items()}
    assert post(client, BODY, headers).status_code == 200


def test_tampered_body_is_401(client, db_rows):
    headers = signed_headers(BODY)
    tampered = BODY.replace(b"+12025550188", b"+12025550189")
    assert_rejected(post(client, tampered, headers), db_rows)


def test_reserialised_json_does_not_verify(client, db_rows):
    headers = signed_headers(BODY)
    reserialised = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert_rejected(post(client, reserialised, headers), db_rows)


def test_signature_from_another_key_is_401(client, db_rows):
    other_seed = bytes(32)
    assert_rejected(post(client, BODY, signed_headers(BODY, seed=other_seed)), db_rows)


@pytest.mark.parametrize("offset", [-301, 301, -86400])
def test_timestamp_outside_the_window_is_401(client, db_rows, offset):
    headers = signed_headers(BODY, timestamp=int(time.time()) + offset)
    response = post(client, BODY, headers)
    assert_rejected(response, db_rows)
    assert "window" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("offset", [-290, 290])
def test_timestamp_inside_the_window_is_accepted(client, offset):
    headers = signed_headers(BODY, timestamp=int(time.time()) + offset)
    assert post(client, BODY, headers).status_code == 200


def test_signature_over_a_different_timestamp_is_401(client, db_rows):
    headers = signed_headers(BODY)
    headers["telnyx-timestamp"] = str(int(headers["telnyx-timestamp"]) - 1)
    assert_rejected(post(client, BODY, headers), db_rows)


@pytest.mark.parametrize("missing", ["telnyx-signature-ed25519", "telnyx-timestamp"])
def test_missing_header_is_401(client, db_rows, missing):
    headers = signed_headers(BODY)
    del headers[missing]
    assert_rejected(post(client, BODY, headers), db_rows)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("telnyx-signature-ed25519", "not base64!"),
        ("telnyx-signature-ed25519", base64.b64encode(b"short").decode()),
        ("telnyx-timestamp", "yesterday"),
    ],
)
def test_malformed_header_is_401(client, db_rows, header, value):
    headers = signed_headers(BODY)
    headers[header] = value
    assert_rejected(post(client, BODY, headers), db_rows)


def test_signature_is_checked_before_the_body_is_parsed(client):
    # An unsigned malformed body gets 401, not 400: nothing unauthenticated is parsed.
    assert post(client, b"not json", {}).status_code == 401


def test_development_without_a_public_key_refuses_every_webhook(settings, db_rows):
    settings.update(APP_ENV="development", TELNYX_PUBLIC_KEY="")
    client = create_app(settings).test_client()
    response = post(client, BODY, signed_headers(BODY))
    assert_rejected(response, db_rows)
    assert "TELNYX_PUBLIC_KEY" in response.get_json()["error"]["message"]


def test_verification_off_in_development_accepts_unsigned_and_warns(settings, caplog):
    settings.update(APP_ENV="development", TELNYX_WEBHOOK_VERIFY="false")
    with caplog.at_level("WARNING"):
        client = create_app(settings).test_client()
    assert "NOT verified" in caplog.text
    assert post(client, BODY, {}).status_code == 200


def test_a_fresh_key_pair_round_trips(settings):
    seed = bytes([7]) * 32
    settings["TELNYX_PUBLIC_KEY"] = base64.b64encode(bytes(SigningKey(seed).verify_key)).decode()
    client = create_app(settings).test_client()
    assert post(client, BODY, signed_headers(BODY, seed=seed)).status_code == 200
    assert post(client, BODY, signed_headers(BODY)).status_code == 401
