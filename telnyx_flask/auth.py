"""Agents signing in and out: the session cookie and the bearer token (the sessions themselves
are sessions.py's, the password hashes passwords.py's), sign-in limits and cross-site refusal."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, jsonify, request, session
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .db import get_db
from .errors import ApiError, StorageUnavailable
from .live_calls import LiveCalls, get_live
from .passwords import dummy_hash, hash_password, verify_password
from .rate_limits import RateLimited
from .redis_store import REDIS_ERRORS
from .request_body import SURROGATE, is_storable_text, json_object
from .sessions import (
    NotAuthenticated,
    SessionClaims,
    SessionStore,
    announce_revoked,
    end_agent_sessions,
    get_sessions,
)
from .users import Agent

log = logging.getLogger(__name__)

TOKEN_SALT = "telnyx-flask.bearer"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
WRONG_CREDENTIALS = "email or password is wrong"
TRUE_WORDS = {"1", "true", "yes"}
FALSE_WORDS = {"", "0", "false", "no"}

bp = Blueprint("auth", __name__)
_warned_about_forwarded_for = False


class Forbidden(ApiError):
    """Authenticated, but not allowed."""

    status = 403
    code = "forbidden"


class UnsupportedMediaType(ApiError):
    """The body is not of the one content type the endpoint takes."""

    status = 415
    code = "unsupported_media_type"


class TooManyAttempts(RateLimited):
    """Too many sign-in attempts; try again after `retry_after` seconds."""

    code = "too_many_attempts"

    def __init__(self, retry_after: int):
        super().__init__(f"too many sign-in attempts; try again in {retry_after} s", retry_after)


@dataclass(frozen=True)
class StreamGuard:
    """What an open event stream needs to know whether its agent may still receive events."""

    agent_id: str
    session_id: str | None
    still_valid: Callable[[], bool]


def stream_guard() -> StreamGuard:
    """The guard for this request's event stream (call after agent_required)."""
    agent = current_agent()
    claims: SessionClaims = g.session_claims
    check = functools.partial(get_sessions().still_valid, claims)
    return StreamGuard(agent.id, claims.session_id, check)


# --- Credentials on a request ---


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=TOKEN_SALT)


def issue_token(agent: Agent, claims: SessionClaims | None = None) -> str:
    """A signed bearer token for a session of the agent (a new session unless one is given)."""
    if claims is None:
        claims = get_sessions().start(agent.id, current_app.config["AUTH_TOKEN_TTL_SECONDS"])
    return _serializer().dumps(
        {"uid": claims.user_id, "sid": claims.session_id, "gen": claims.generation}
    )


def _claims(payload: Any) -> SessionClaims | None:
    if not isinstance(payload, dict):
        return None
    user_id, session_id, generation = payload.get("uid"), payload.get("sid"), payload.get("gen")
    if not (isinstance(user_id, str) and isinstance(session_id, str)):
        return None
    if not isinstance(generation, int) or isinstance(generation, bool):
        return None
    return SessionClaims(user_id, session_id, generation)


def _token_claims(token: str) -> SessionClaims:
    try:
        payload = _serializer().loads(token, max_age=current_app.config["AUTH_TOKEN_TTL_SECONDS"])
    except SignatureExpired:
        raise NotAuthenticated("token has expired") from None
    except BadSignature:
        raise NotAuthenticated("token is not valid") from None
    claims = _claims(payload)
    if claims is None:
        raise NotAuthenticated("token is not valid")
    return claims


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("Authorization must be 'Bearer <token>'")
    return token.strip()


def _request_origin() -> str | None:
    """The origin a browser says the request comes from (Origin, else Referer's), or None."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return None
    try:
        parts = urlsplit(source)
    except ValueError:  # "http://[" and the like: no origin that could be allowed
        return source
    return f"{parts.scheme}://{parts.netloc}"


def _origin_allowed(origin: str) -> bool:
    allowed = {request.host_url.rstrip("/")} | set(current_app.config["ALLOWED_ORIGINS"])
    return origin in allowed


def _same_origin() -> bool:
    origin = _request_origin()
    return origin is not None and _origin_allowed(origin)


def _refuse_cross_site() -> None:
    # The cookie rides along on cross-site requests; only same-origin ones may change things.
    if request.method in UNSAFE_METHODS and not _same_origin():
        raise Forbidden("cross-site request refused (Origin does not match)")


def _presented_claims() -> tuple[SessionClaims, bool]:
    """The claims of the bearer token, else of the cookie; and whether they came from the cookie."""
    token = _bearer_token()
    if token is not None:
        return _token_claims(token), False
    claims = _claims(dict(session))
    if claims is None:
        raise NotAuthenticated("sign in first")
    return claims, True


def current_agent() -> Agent:
    """The agent making this request, from a bearer token or else the session cookie."""
    if "agent" in g:
        return g.agent
    claims, from_cookie = _presented_claims()
    if from_cookie:
        _refuse_cross_site()
    state = get_sessions().state(claims.session_id)
    if state is not None and not state.active:
        raise Forbidden("account is deactivated")
    problem = "session is not valid" if state is None else state.problem(claims)
    if problem is not None:
        if from_cookie:
            session.clear()
        raise NotAuthenticated(problem)
    assert state is not None  # a missing session is a problem, raised above
    g.agent = Agent(state.user_id, state.email, state.name, state.sip_username, state.role)
    g.session_claims = claims
    return g.agent


def agent_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let the request through only for a signed-in, active agent (401/403 otherwise)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        current_agent()
        return view(*args, **kwargs)

    return wrapped


def supervisor_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let the request through only for a signed-in, active supervisor (401, or 403 for an
    agent)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_agent().is_supervisor:
            raise Forbidden("this is for supervisors", code="supervisors_only")
        return view(*args, **kwargs)

    return wrapped


# --- Signing in ---


def client_network(address: str | None) -> str:
    """What sign-in attempts are counted per: the IPv4 address, or the IPv6 /64 around it (one
    host usually holds a whole /64, so counting single addresses would limit nothing)."""
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return (address or "unknown")[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def _email_key(live: LiveCalls, email: str) -> str:
    email_hash = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return live.keys.login_attempts("email", email_hash)


def check_login_rate(email: str) -> None:
    """Count a sign-in attempt per client network and per email; raise TooManyAttempts."""
    live = get_live()
    window = current_app.config["LOGIN_WINDOW_SECONDS"]
    limits = (
        (
            live.keys.login_attempts("ip", client_network(request.remote_addr)),
            current_app.config["LOGIN_MAX_PER_IP"],
        ),
        (_email_key(live, email), current_app.config["LOGIN_MAX_PER_EMAIL"]),
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


def _forget_failed_attempts(email: str) -> None:
    # The owner got in: their earlier typos must not leave them one wrong attempt from a lockout.
    live = get_live()
    try:
        live.client.delete(_email_key(live, email))
    except REDIS_ERRORS as error:
        log.warning("could not clear the sign-in counter: %s", error)


def _refuse_cross_site_sign_in() -> None:
    """Login CSRF: only JSON (which a cross-site form cannot send without a CORS preflight,
    never granted), and never from another site's page. Clients that name no origin (curl,
    scripts) are let through: browsers always send Origin on a cross-site POST."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("sign-in takes Content-Type: application/json")
    origin = _request_origin()
    if origin is not None and not _origin_allowed(origin):
        raise Forbidden("cross-site sign-in refused (Origin does not match)")


def _find_user_by_email(email: str) -> dict[str, Any] | None:
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id::text, email, name, sip_username, active, password_hash, role"
            " FROM users WHERE lower(email) = lower(%s)",
            (email,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    keys = ("id", "email", "name", "sip_username", "active", "password_hash", "role")
    return dict(zip(keys, row, strict=True))


def _upgrade_hash(user_id: str, old_hash: str, password: str) -> None:
    """Store an argon2id hash in place of an older one (unless the password changed meanwhile)."""
    new_hash = hash_password(password)
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE users SET password_hash = %s WHERE id = %s AND password_hash = %s",
            (new_hash, user_id, old_hash),
        )


@bp.post("/api/auth/login")
def login():
    """Check email and password; set the session cookie and return a bearer token."""
    _refuse_cross_site_sign_in()
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
    row = _find_user_by_email(email.strip())
    # Same answer, and the same hashing work, whether or not the email exists.
    password_hash = row["password_hash"] if row and row["password_hash"] else dummy_hash()
    matches, outdated = verify_password(password_hash, password)
    if not matches or row is None:
        raise NotAuthenticated(WRONG_CREDENTIALS, code="wrong_credentials")
    if not row["active"]:
        raise Forbidden("account is deactivated")
    _forget_failed_attempts(email)
    if outdated:
        _upgrade_hash(row["id"], password_hash, password)
    agent = Agent(row["id"], row["email"], row["name"], row["sip_username"], row["role"])
    claims = get_sessions().start(agent.id, current_app.config["AUTH_TOKEN_TTL_SECONDS"])
    session.clear()
    session.permanent = True
    session.update({"uid": claims.user_id, "sid": claims.session_id, "gen": claims.generation})
    return jsonify({"token": issue_token(agent, claims), "user": agent.public()})


def query_flag(name: str) -> bool:
    """A true/false query parameter (absent is false); 400 for anything else."""
    value = request.args.get(name, "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ApiError(f"{name} must be true or false", code=f"invalid_{name}")


@bp.post("/api/auth/logout")
def logout():
    """End this sign-in's session (cookie and token alike); ?everywhere=true ends them all."""
    everywhere = query_flag("everywhere")
    token = _bearer_token()
    if token is None and _claims(dict(session)) is None:
        session.clear()  # nothing left to end (no cookie, or one from before sessions)
        return jsonify({"success": True})
    if everywhere:
        agent = current_agent()  # only a session still good may end the others
        end_agent_sessions(agent.id)
    else:
        claims, from_cookie = _presented_claims()
        if from_cookie:
            _refuse_cross_site()
        # A valid signature is enough: the credential names only its own session.
        user_id = get_sessions().revoke(claims.session_id)
        if user_id is not None:
            announce_revoked(get_live(), user_id, claims.session_id)
    session.clear()
    return jsonify({"success": True})


@bp.get("/api/auth/me")
@agent_required
def me():
    """The signed-in agent."""
    return jsonify({"user": current_agent().public()})


def _warn_about_untrusted_forwarded_for() -> None:
    global _warned_about_forwarded_for
    if _warned_about_forwarded_for or "X-Forwarded-For" not in request.headers:
        return
    _warned_about_forwarded_for = True
    log.warning(
        "a request came with X-Forwarded-For but TRUSTED_PROXY_COUNT is 0: behind a proxy, "
        "every client shares the proxy's address for sign-in limits; set TRUSTED_PROXY_COUNT"
    )


def init_app(app: Flask) -> None:
    """Cookie settings, the session store and the auth routes."""
    production = app.config["APP_ENV"] == "production"
    app.config.update(
        SESSION_COOKIE_NAME="telnyx_flask_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=production,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=app.config["AUTH_TOKEN_TTL_SECONDS"],
        # The session ends at a fixed time (in PostgreSQL); the cookie must not suggest otherwise.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.extensions["sessions"] = SessionStore(
        app.extensions["database"], app.config["AUTH_SESSION_CACHE_SECONDS"]
    )
    if not app.config["TRUSTED_PROXY_COUNT"]:
        app.before_request(_warn_about_untrusted_forwarded_for)
    app.register_blueprint(bp)
