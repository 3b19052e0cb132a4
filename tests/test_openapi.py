"""The OpenAPI document: every route is in it, and the running app keeps to it (schemathesis)."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from telnyx_flask.auth import Agent, issue_token
from telnyx_flask.openapi import DOCUMENT

from .conftest import app_settings
from .servers import Gunicorn

# Not part of the API: Flask's static files, whose paths are the page's own business.
UNDOCUMENTED = {"/static/<path:filename>"}
# The event stream never ends by design; its own tests (test_push) check it.
ENDLESS = "/api/telnyx/events"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: <path:call_id> -> {call_id}."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_route_is_documented_with_its_methods(app):
    documented = {
        (path, method.upper()) for path, item in DOCUMENT["paths"].items() for method in item
    }
    routes = {
        (openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.rule not in UNDOCUMENTED
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented routes the app does not have"


def test_the_document_is_served(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json["openapi"] == "3.1.0"


@pytest.fixture(scope="module")
def live(database_url, redis_prefix, fake_telnyx):
    """The app under gunicorn (2 gevent workers), Telnyx played by the fake."""
    server = Gunicorn(app_settings(database_url, redis_prefix, fake_telnyx.base_url), workers=2)
    with server:
        yield server


# Built from the document itself, so the test's cases exist at collection time; the requests go
# to the live server.
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path=ENDLESS)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_live_app_keeps_to_its_openapi_document(case, live, app, agent, clean_storage):
    """No 5xx, and every status, content type and body as documented, for generated requests
    sent by a signed-in agent (a fresh token each time: logout revokes the one it is sent)."""
    with app.app_context():
        token = issue_token(Agent(agent.id, agent.email, agent.name, "agentalice"))
    case.call_and_validate(
        base_url=live.url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )
