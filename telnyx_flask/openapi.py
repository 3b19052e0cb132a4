"""Serves the OpenAPI 3.1 description of the HTTP API at GET /api/openapi.json.

The document is written by hand in openapi.yaml next to this module; this module owns loading it
and choosing what each process serves (production leaves out the development-only paths).
tests/test_openapi.py checks that every route is described and runs schemathesis against the app.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml
from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("openapi", __name__)

# Paths create_app registers only with APP_ENV=development; production's document leaves them out.
DEVELOPMENT_ONLY_PATHS = frozenset({"/api/dev/simulated-calls"})


def load_document() -> dict[str, Any]:
    """openapi.yaml, parsed (safe_load: plain data, no YAML tags that build Python objects)."""
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or "paths" not in document:
        raise ValueError("telnyx_flask/openapi.yaml is not an OpenAPI document (no paths)")
    return document


# Parsed once, at import: a missing or malformed file stops the app starting, not a request.
DOCUMENT: dict[str, Any] = load_document()


def document_for(development: bool) -> dict[str, Any]:
    """The document for a process in development (every path) or production (not the dev ones)."""
    if development:
        return DOCUMENT
    paths = {
        path: item for path, item in DOCUMENT["paths"].items() if path not in DEVELOPMENT_ONLY_PATHS
    }
    return {**DOCUMENT, "paths": paths}


@bp.get("/api/openapi.json")
def openapi_document() -> Response:
    """This API's OpenAPI 3.1 description, as this process serves it."""
    return jsonify(document_for(current_app.config["APP_ENV"] == "development"))
