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

from telnyx_flask import create_app
from telnyx_flask.auth import Agent, issue_token
from telnyx_flask.openapi import DEVELOPMENT_ONLY_PATHS, DOCUMENT, document_for

from .helpers import app_settings, close_app
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


def documented_routes(document: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item}


def app_routes(app) -> set[tuple[str, str]]:
    return {
        (openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.rule not in UNDOCUMENTED
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


@pytest.mark.parametrize("app_env", ["production", "development"])
def test_every_route_is_documented_with_its_methods(settings, app_env):
    """Production has every documented route but the development-only ones; development all."""
    app = create_app({**settings, "APP_ENV": app_env})
    try:
        documented = documented_routes(document_for(app_env == "development"))
        routes = app_routes(app)
    finally:
        close_app(app)
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented routes the app does not have"
    assert {path for path, _ in documented_routes(DOCUMENT)} - {path for path, _ in routes} == (
        set() if app_env == "development" else set(DEVELOPMENT_ONLY_PATHS)
    )


def test_the_document_is_served_without_development_only_paths(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json["openapi"] == "3.1.0"
    assert DEVELOPMENT_ONLY_PATHS.isdisjoint(response.json["paths"])


@pytest.fixture(scope="module")
def live(database_url, redis_prefix, fake_telnyx):
    """The app under gunicorn (2 gevent workers), Telnyx played by the fake."""
    server = Gunicorn(app_settings(database_url, redis_prefix, fake_telnyx.base_url), workers=2)
    with server:
        yield server


# Built from the document itself (as production serves it: the server below runs in production),
# so the test's cases exist at collection time; the requests go to the live server.
schema = schemathesis.openapi.from_dict(document_for(development=False)).exclude(path=ENDLESS)


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
