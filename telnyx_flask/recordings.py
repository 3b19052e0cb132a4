"""GET /api/calls/<id>/recording: a call's recording, streamed through the service.

The page plays recordings from here rather than from Telnyx's links: those are pre-signed, expire
after about 10 minutes, and would hand every browser a URL that needs no sign-in.
"""

from __future__ import annotations

from collections.abc import Iterator

import requests
from flask import Blueprint, Response, request

from .auth import agent_required
from .errors import ApiError
from .history import CallNotFound, call_by_id

bp = Blueprint("recordings", __name__)

FORWARDED_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges")
CHUNK_BYTES = 64 * 1024
TIMEOUT = (3.05, 15)


class RecordingUnavailable(ApiError):
    """The recording's source refused or did not answer."""

    status = 502
    code = "recording_unavailable"


@bp.get("/api/calls/<call_id>/recording")
@agent_required
def recording(call_id: str) -> Response:
    """The recording's audio; Range requests pass through so the player can seek."""
    call = call_by_id(call_id)
    if not call["recording_url"]:
        raise CallNotFound("this call has no recording", code="no_recording")
    headers = {"Range": request.headers["Range"]} if "Range" in request.headers else {}
    try:
        upstream = requests.get(
            call["recording_url"], headers=headers, stream=True, timeout=TIMEOUT
        )
    except requests.RequestException as exc:
        reason = f"the recording could not be fetched ({type(exc).__name__})"
        raise RecordingUnavailable(reason) from exc
    if upstream.status_code not in (200, 206):
        upstream.close()
        if upstream.status_code in (403, 404, 410):
            raise RecordingUnavailable(
                "the recording's link has expired or it was deleted "
                "(Telnyx's recording links last about 10 minutes)",
                status=410,
            )
        raise RecordingUnavailable(f"the recording's source answered HTTP {upstream.status_code}")

    def body() -> Iterator[bytes]:
        try:
            yield from upstream.iter_content(CHUNK_BYTES)
        finally:
            upstream.close()

    response = Response(body(), status=upstream.status_code)
    for name in FORWARDED_HEADERS:
        if name in upstream.headers:
            response.headers[name] = upstream.headers[name]
    if "Content-Encoding" in upstream.headers:
        # requests decodes gzip and the like, so the upstream length no longer applies.
        response.headers.pop("Content-Length", None)
    response.headers["Cache-Control"] = "private, no-store"
    return response
