"""The OpenAPI document: it is openapi.yaml as written, valid OpenAPI 3.1, every route is in it,
and the running app keeps to it (schemathesis)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import telnyx_flask
from telnyx_flask import create_app
from telnyx_flask.auth import issue_token
from telnyx_flask.openapi import DEVELOPMENT_ONLY_PATHS, DOCUMENT, document_for, load_document
from telnyx_flask.users import Agent, set_role

from .helpers import app_settings, close_app
from .servers import Gunicorn

# Read here straight from the source tree, not through the module's loader, so the tests below
# compare what is served with the file a person edits.
YAML_FILE = Path(telnyx_flask.__file__).with_name("openapi.yaml")
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


def nodes(node) -> list[dict]:
    """Every mapping in a part of the document, itself included."""
    if isinstance(node, dict):
        return [node, *(found for value in node.values() for found in nodes(value))]
    if isinstance(node, list):
        return [found for value in node for found in nodes(value)]
    return []


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


@pytest.mark.parametrize("app_env", ["production", "development"])
def test_the_served_document_is_openapi_yaml(settings, app_env):
    """GET /api/openapi.json answers the YAML file as JSON, less the development-only paths in
    production."""
    written = yaml.safe_load(YAML_FILE.read_text(encoding="utf-8"))
    if app_env == "production":
        written["paths"] = {
            path: item
            for path, item in written["paths"].items()
            if path not in DEVELOPMENT_ONLY_PATHS
        }
    app = create_app({**settings, "APP_ENV": app_env})
    try:
        response = app.test_client().get("/api/openapi.json")
    finally:
        close_app(app)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json["openapi"] == "3.1.0"
    assert response.json == written
    served_paths = set(response.json["paths"])
    if app_env == "production":
        assert DEVELOPMENT_ONLY_PATHS.isdisjoint(served_paths)
    else:
        assert served_paths >= DEVELOPMENT_ONLY_PATHS


def test_the_document_is_json_as_written():
    """YAML reads some unquoted scalars as other types (200 as an int, yes as a boolean, a date as
    a datetime): the document must come back unchanged from JSON, as clients will read it."""
    # Parsed afresh: schemathesis turns int status codes into strings in the dict it is given.
    document = load_document()
    assert json.loads(json.dumps(document)) == document
    for item in document["paths"].values():
        for operation in item.values():
            assert all(isinstance(status, str) for status in operation["responses"])
    # Round-tripping does not catch an unquoted yes or 1 in a string's enum: it stays a bool or int.
    for schema in nodes(document):
        if schema.get("type") == "string" and "enum" in schema:
            assert all(isinstance(value, str) for value in schema["enum"]), schema


def test_the_document_is_valid_openapi_and_every_ref_resolves():
    schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT)).validate()
    refs = [node["$ref"] for node in nodes(DOCUMENT) if "$ref" in node]
    assert refs, "the document shares its Error schema and agent errors through $ref"
    for ref in refs:
        assert ref.startswith("#/"), ref
        node = DOCUMENT
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]
    # Every shared piece is used: a component nothing refers to is probably a typo'd $ref.
    for section, items in DOCUMENT["components"].items():
        if section != "securitySchemes":
            for name in items:
                assert f"#/components/{section}/{name}" in refs, f"{section}/{name} is unused"


@pytest.fixture(scope="module")
def live(database_url, redis_prefix, fake_telnyx):
    """The app under gunicorn (2 gevent workers), Telnyx played by the fake."""
    server = Gunicorn(app_settings(database_url, redis_prefix, fake_telnyx.base_url), workers=2)
    with server:
        yield server


# Built from the document itself (as production serves it: the server below runs in production),
# so the test's cases exist at collection time; the requests go to the live server. A copy, as
# schemathesis rewrites parts of the dict it is given, and this process serves the original.
schema = schemathesis.openapi.from_dict(copy.deepcopy(document_for(development=False))).exclude(
    path=ENDLESS
)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_live_app_keeps_to_its_openapi_document(case, live, app, agent, clean_storage):
    """No 5xx, and every status, content type and body as documented, for generated requests
    sent by a signed-in supervisor, who may do all an agent may and read the reports too (a
    fresh token each time: logout revokes the one it is sent)."""
    with app.app_context():
        set_role(agent.email, "supervisor")
        token = issue_token(Agent(agent.id, agent.email, agent.name, "agentalice", "supervisor"))
    case.call_and_validate(
        base_url=live.url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )
