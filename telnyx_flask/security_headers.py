"""Headers every response carries: HSTS over HTTPS, and no content-type sniffing.

HSTS goes only on a response to a request that came over HTTPS (directly, or through a proxy the
service trusts: TRUSTED_PROXY_COUNT): sent over plain HTTP it could be injected or stripped by
anyone on the path, and browsers ignore it there anyway.
"""

from __future__ import annotations

from flask import Flask, Response, request

HSTS = "max-age=31536000; includeSubDomains"


def add_security_headers(response: Response) -> Response:
    """HSTS on HTTPS requests; nosniff everywhere unless a view set it already."""
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response, errors included."""
    app.after_request(add_security_headers)
