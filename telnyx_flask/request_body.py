"""Reading JSON request bodies the same way on every endpoint."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from .errors import ApiError


def json_object(required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; {} for an empty optional body; 400/413 for anything else."""
    raw = request.get_data(cache=True)  # werkzeug answers 413 past MAX_CONTENT_LENGTH
    if not raw:
        if required:
            raise ApiError("body must be a JSON object", code="invalid_body")
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ApiError("body is not valid JSON", code="invalid_body") from None
    if not isinstance(body, dict):
        raise ApiError("body must be a JSON object", code="invalid_body")
    return body
