"""Agents signing in: session cookie for the page, bearer token for API clients, login limits."""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, jsonify, request, session
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

from .db import get_db
from .errors import ApiError, StorageUnavailable
from .live import REDIS_ERRORS, get_live
from .request_body import SURROGATE, is_storable_text, json_object

TOKEN_SALT = "telnyx-flask.bearer"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
WRONG_CREDENTIALS = "email or password is wrong"

bp = Blueprint("auth", __name__)


class NotAuthenticated(ApiError):
    """No valid session cookie or bearer token."""

    status = 401
    code = "unauthenticated"


class Forbidden(ApiError):
    """Authenticated, but not allowed."""

    status = 403
    code = "forbidden"


class TooManyAttempts(ApiError):
    """Too many sign-in attempts; try again after `retry_after` seconds."""

    status = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: int):
        super().__init__(f"too many sign-in attempts; try again in {retry_after} s")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True)
class Agent:
    """A signed-in agent."""

    id: str
    email: str
    name: str
    sip_username: str | None

    def public(self) -> dict[str, Any]:
        """What the API shows of an agent."""
        return asdict(self)


AGENT_COLUMNS = "id::text, email, name, sip_username, active, password_hash"


def find_user(*, user_id: str | None = None, email: str | None = None) -> dict[str, Any] | None:
    """A users row by id or by email (case-insensitive), or None."""
    if user_id is not None:
        try:
            uuid.UUID(user_id)
        except ValueError:
            return None
        where, value = "id = %s", user_id
    else:
        where, value = "lower(email) = lower(%s)", email
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {AGENT_COLUMNS} FROM users WHERE {where}", (value,))
        row = cur.fetchone()
    if row is None:
        return None
    keys = ("id", "email", "name", "sip_username", "active", "password_hash")
    return dict(zip(keys, row, strict=True))


def _agent(row: dict[str, Any]) -> Agent:
    return Agent(row["id"], row["email"], row["name"], row["sip_username"])


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=TOKEN_SALT)


def issue_token(agent: Agent) -> str:
    """A signed bearer token naming the agent, valid for AUTH_TOKEN_TTL_SECONDS."""
    return _serializer().dumps({"uid": agent.id, "jti": uuid.uuid4().hex})


def _token_claims(token: str) -> dict[str, Any]:
    try:
        claims = _serializer().loads(token, max_age=current_app.config["AUTH_TOKEN_TTL_SECONDS"])
    except SignatureExpired:
        raise NotAuthenticated("token has expired") from None
    except BadSignature:
        raise NotAuthenticated("token is not valid") from None
    if not isinstance(claims, dict) or "uid" not in claims or "jti" not in claims:
        raise NotAuthenticated("token is not valid")
    if _is_revoked(claims["jti"]):
        raise NotAuthenticated("token has been signed out")
    return claims


def _revoked_key(jti: str) -> str:
    return get_live().keys.revoked_token(jti)


def _is_revoked(jti: str) -> bool:
    try:
        return bool(get_live().client.exists(_revoked_key(jti)))
    except REDIS_ERRORS as exc:
        raise StorageUnavailable("redis", str(exc)) from exc


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("Authorization must be 'Bearer <token>'")
    return token.strip()


def _same_origin() -> bool:
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    parts = urlsplit(source)
    allowed = {request.host_url.rstrip("/")} | set(current_app.config["ALLOWED_ORIGINS"])
    return f"{parts.scheme}://{parts.netloc}" in allowed


def current_agent() -> Agent:
    """The agent making this request, from a bearer token or else the session cookie."""
    if "agent" in g:
        return g.agent
    token = _bearer_token()
    if token is not None:
        user_id = _token_claims(token)["uid"]
    else:
        user_id = session.get("uid")
        if user_id is None:
            raise NotAuthenticated("sign in first")
        # The cookie rides along on cross-site requests; only same-origin ones may change things.
        if request.method in UNSAFE_METHODS and not _same_origin():
            raise Forbidden("cross-site request refused (Origin does not match)")
    row = find_user(user_id=user_id)
    if row is None:
        session.clear()
        raise NotAuthenticated("account no longer exists")
    if not row["active"]:
        raise Forbidden("account is deactivated")
    g.agent = _agent(row)
    return g.agent


def agent_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let the request through only for a signed-in, active agent (401/403 otherwise)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        current_agent()
        return view(*args, **kwargs)

    return wrapped


def check_login_rate(email: str) -> None:
    """Count a sign-in attempt per client address and per email; raise TooManyAttempts."""
    live = get_live()
    window = current_app.config["LOGIN_WINDOW_SECONDS"]
    email_hash = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    limits = (
        (
            live.keys.login_attempts("ip", request.remote_addr or "unknown"),
            current_app.config["LOGIN_MAX_PER_IP"],
        ),
        (live.keys.login_attempts("email", email_hash), current_app.config["LOGIN_MAX_PER_EMAIL"]),
    )
    try:
        with live.client.pipeline(transaction=True) as pipe:
            for key, _ in limits:
                pipe.incr(key)
                pipe.expire(key, window, nx=True)
                pipe.ttl(key)
            replies = pipe.execute()
    except REDIS_ERRORS as exc:
        raise StorageUnavailable("redis", str(exc)) from exc
    for index, (_, limit) in enumerate(limits):
        count, ttl = replies[index * 3], replies[index * 3 + 2]
        if count > limit:
            raise TooManyAttempts(max(int(ttl), 1))


@bp.post("/api/auth/login")
def login():
    """Check email and password; set the session cookie and return a bearer token."""
    body = json_object()
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not email.strip() or len(email) > 320:
        raise ApiError("email is required", code="invalid_email")
    if not is_storable_text(email):
        raise ApiError(
            "email must not contain NUL or unpaired surrogate characters", code="invalid_email"
        )
    if not isinstance(password, str) or not password or len(password) > 1024:
        raise ApiError("password is required", code="invalid_password")
    # No password can be set with a lone surrogate in it (it cannot be hashed); a NUL can.
    if SURROGATE.search(password):
        raise ApiError(
            "password must not contain unpaired surrogate characters", code="invalid_password"
        )
    check_login_rate(email)
    row = find_user(email=email.strip())
    # Same answer, and the same hashing work, whether or not the email exists.
    password_hash = row["password_hash"] if row and row["password_hash"] else _dummy_hash()
    if not check_password_hash(password_hash, password) or row is None:
        raise NotAuthenticated(WRONG_CREDENTIALS, code="wrong_credentials")
    if not row["active"]:
        raise Forbidden("account is deactivated")
    agent = _agent(row)
    session.clear()
    session.permanent = True
    session["uid"] = agent.id
    return jsonify({"token": issue_token(agent), "user": agent.public()})


@bp.post("/api/auth/logout")
def logout():
    """End the session; a bearer token presented here is revoked until it would expire."""
    token = _bearer_token()
    if token is not None:
        claims = _token_claims(token)
        try:
            get_live().client.set(
                _revoked_key(claims["jti"]), "1", ex=current_app.config["AUTH_TOKEN_TTL_SECONDS"]
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
    elif session.get("uid") and not _same_origin():
        raise Forbidden("cross-site request refused (Origin does not match)")
    session.clear()
    return jsonify({"success": True})


@bp.get("/api/auth/me")
@agent_required
def me():
    """The signed-in agent."""
    return jsonify({"user": current_agent().public()})


@functools.cache
def _dummy_hash() -> str:
    """A hash no password matches, so an unknown email costs as much as a known one."""
    return generate_password_hash(uuid.uuid4().hex)


def init_app(app: Flask) -> None:
    """Cookie settings and the auth routes."""
    production = app.config["APP_ENV"] == "production"
    app.config.update(
        SESSION_COOKIE_NAME="telnyx_flask_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=production,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=app.config["AUTH_TOKEN_TTL_SECONDS"],
    )
    app.register_blueprint(bp)
