"""GET /api/calls/<id>/recording: a call's recording, streamed through the service.

The page plays recordings from here rather than from Telnyx's links: those are pre-signed, expire
after about 10 minutes, and would hand every browser a URL that needs no sign-in. The service
fetches only from the places RECORDING_HOSTS allows (Telnyx's recording buckets by default, and
the simulator in development), and follows a redirect only to another such place: a stored URL
must not make it a proxy to anywhere else (an internal address, a metadata service).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from fnmatch import fnmatchcase
from urllib.parse import unquote, urljoin, urlsplit

import requests
from flask import Blueprint, Response, current_app, request

from .auth import agent_required
from .config import DEFAULT_PORTS, RecordingSource
from .errors import ApiError, CallNotFound
from .history import call_by_id

log = logging.getLogger(__name__)

bp = Blueprint("recordings", __name__)

FORWARDED_HEADERS = ("Content-Length", "Content-Range", "Accept-Ranges")
CHUNK_BYTES = 64 * 1024
TIMEOUT = (3.05, 15)
# S3 answers a request to the wrong region with a redirect to the right one; nothing needs more.
MAX_REDIRECTS = 3


class RecordingUnavailable(ApiError):
    """The recording's source refused or did not answer."""

    status = 502
    code = "recording_unavailable"


class RecordingSourceRefused(ApiError):
    """The recording's URL (or a redirect) names a place RECORDING_HOSTS does not allow."""

    status = 502
    code = "recording_source_refused"


def allowed_recording_url(url: str, sources: Iterable[RecordingSource]) -> bool:
    """True when `url` is on one of the allowed sources: scheme, host pattern, port, path."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if parts.scheme not in DEFAULT_PORTS or not host or parts.username is not None:
        return False
    # The client would resolve "/bucket/../other-bucket" to another bucket than the prefix names.
    if {".", ".."} & set(unquote(parts.path).split("/")):
        return False
    port = port or DEFAULT_PORTS[parts.scheme]
    return any(
        source.scheme == parts.scheme
        and source.port == port
        and fnmatchcase(host, source.host)
        and parts.path.startswith(source.path)
        for source in sources
    )


def fetch_recording(url: str, headers: dict[str, str]) -> requests.Response:
    """The upstream response for an allowed URL, following redirects only to allowed ones."""
    sources = current_app.config["RECORDING_SOURCES"]
    for _ in range(MAX_REDIRECTS + 1):
        if not allowed_recording_url(url, sources):
            # The URL is pre-signed: log where it points, never the signature.
            log.warning("refused to fetch a recording from %s", urlsplit(url).hostname)
            raise RecordingSourceRefused(
                "the recording is not on an allowed recording host (RECORDING_HOSTS)"
            )
        try:
            upstream = requests.get(
                url, headers=headers, stream=True, timeout=TIMEOUT, allow_redirects=False
            )
        except requests.RequestException as exc:
            reason = f"the recording could not be fetched ({type(exc).__name__})"
            raise RecordingUnavailable(reason) from exc
        if not upstream.is_redirect:
            return upstream
        upstream.close()
        url = urljoin(url, upstream.headers["Location"])
    raise RecordingUnavailable("the recording's source redirected too many times")


@bp.get("/api/calls/<call_id>/recording")
@agent_required
def recording(call_id: str) -> Response:
    """The recording's audio; Range requests pass through so the player can seek."""
    call = call_by_id(call_id, include_recording_url=True)
    if not call["recording_url"]:
        raise CallNotFound("this call has no recording", code="no_recording")
    headers = {"Range": request.headers["Range"]} if "Range" in request.headers else {}
    upstream = fetch_recording(call["recording_url"], headers)
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
    # Only audio goes out as what it says it is; anything else is a download, never a page.
    content_type = upstream.headers.get("Content-Type", "")
    if content_type.lower().startswith("audio/"):
        response.headers["Content-Type"] = content_type
    else:
        response.headers["Content-Type"] = "application/octet-stream"
    for name in FORWARDED_HEADERS:
        if name in upstream.headers:
            response.headers[name] = upstream.headers[name]
    if "Content-Encoding" in upstream.headers:
        # requests decodes gzip and the like, so the upstream length no longer applies.
        response.headers.pop("Content-Length", None)
    response.headers["Cache-Control"] = "private, no-store"
    # X-Content-Type-Options: nosniff comes with every response (security_headers.py).
    return response
