"""Reading JSON request bodies the same way on every endpoint, and the text in them that
PostgreSQL cannot take."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from .errors import ApiError

# PostgreSQL text cannot hold NUL, and a lone surrogate (a valid "\udc80" JSON escape) cannot be
# encoded as UTF-8 at all: either would fail deep in storage instead of at the door.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
SURROGATE = re.compile("[\ud800-\udfff]")


def is_storable_text(text: str) -> bool:
    """True when the text can be encoded as UTF-8 and stored in PostgreSQL as it is."""
    return UNSTORABLE.search(text) is None


def storable_text(text: str) -> str:
    """The text with NULs dropped and lone surrogates replaced by U+FFFD, for fields whose
    sender cannot be asked again (a caller's SIP display name)."""
    if is_storable_text(text):
        return text
    return SURROGATE.sub("\ufffd", text.replace("\x00", ""))


# Far deeper than anything Telnyx or the page sends. PostgreSQL's json parser runs out of stack
# somewhere past a few thousand levels (a 503, as if it were down), and how deep Python's own
# parser goes depends on its version.
MAX_JSON_DEPTH = 100


def _refuse_constant(name: str) -> Any:
    # Python reads NaN and Infinity; JSON (and PostgreSQL's json type) has no such values.
    raise ValueError(f"{name} is not JSON")


def _too_deep(document: Any) -> bool:
    """True when arrays and objects nest more than MAX_JSON_DEPTH levels."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(raw: str | bytes) -> Any:
    """The JSON document in `raw`; ValueError (UnicodeDecodeError is one) for anything else."""
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    if _too_deep(document):
        raise ValueError(f"JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    return document


def json_object(required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; {} for an empty optional body; 400/413 for anything else."""
    raw = request.get_data(cache=True)  # werkzeug answers 413 past MAX_CONTENT_LENGTH
    if not raw:
        if required:
            raise ApiError("body must be a JSON object", code="invalid_body")
        return {}
    try:
        body = parse_json(raw)
    except ValueError as error:
        raise ApiError(f"body is not valid JSON: {error}", code="invalid_body") from None
    if not isinstance(body, dict):
        raise ApiError("body must be a JSON object", code="invalid_body")
    return body
