"""Settings read from the environment, checked once at startup."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit

from dotenv import dotenv_values

APP_ENVS = ("production", "development")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("TEXT", "JSON")
# Where `npm ci` (make run) puts the pinned Telnyx WebRTC SDK the page loads.
DEFAULT_WEBRTC_SDK_PATH = (
    Path(__file__).resolve().parent.parent / "node_modules/@telnyx/webrtc/lib/bundle.mjs"
)


class ConfigError(Exception):
    """A required setting is missing or malformed; the message names it."""


def load_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the given settings, or the process environment plus `.env` in development."""
    if environ is not None:
        return dict(environ)
    environ = dict(os.environ)
    dotenv_path = Path(environ.get("DOTENV_PATH", ".env"))
    if dotenv_path.is_file():
        values = {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None}
        # Decide on the real environment first so a stray .env cannot turn production into dev.
        if environ.get("APP_ENV", values.get("APP_ENV", "production")) == "development":
            environ = {**values, **environ}
    return environ


def _text(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _text(env, name)
    if value is None:
        return default
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _integer(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    value = _text(env, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {number}")
    return number


def _number(
    env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float
) -> float:
    value = _text(env, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}, got {number:g}")
    return number


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_text(env, name) or default).upper()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    origins = []
    for item in (_text(env, name) or "").split(","):
        item = item.strip().rstrip("/")
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(
                f"{name} must list origins like https://calls.example.com, got {item!r}"
            )
        origins.append(item)
    return tuple(origins)


def _url(env: Mapping[str, str], name: str, default: str | None, schemes: tuple[str, ...]) -> str:
    value = _text(env, name, default)
    if value is None:
        raise ConfigError(f"{name} is required")
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.hostname or parts.path):
        raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL, got {value!r}")
    return value


def _optional_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    if _text(env, name) is None:
        return None
    return _url(env, name, None, schemes).rstrip("/")


def parse_public_key(value: str, name: str = "TELNYX_PUBLIC_KEY") -> bytes:
    """Decode a base64 Ed25519 public key, naming the setting when it is malformed."""
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} must be base64, got {value[:12]!r}...") from None
    if len(key) != 32:
        raise ConfigError(f"{name} must decode to 32 bytes (an Ed25519 public key), got {len(key)}")
    return key


def database_url_from(env: Mapping[str, str]) -> str:
    """DATABASE_URL, or one built from the seed's DB_* parts."""
    if _text(env, "DATABASE_URL"):
        return _url(env, "DATABASE_URL", None, ("postgres", "postgresql"))
    # The seed's DB_* parts keep working when DATABASE_URL is not set.
    host = _text(env, "DB_HOST", "127.0.0.1")
    port = _integer(env, "DB_PORT", 5432, 1, 65535)
    name = _text(env, "DB_NAME", "telnyx_flask")
    user = _text(env, "DB_USER", "postgres")
    password = _text(env, "DB_PASSWORD")
    credentials = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"postgresql://{credentials}@{host}:{port}/{quote(name, safe='')}"


def config_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """Build the Flask config from environment variables; raise ConfigError naming a bad one."""
    env = load_environment(environ)
    app_env = _text(env, "APP_ENV", "production")
    if app_env not in APP_ENVS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(APP_ENVS)}, got {app_env!r}")
    development = app_env == "development"

    verify = _boolean(env, "TELNYX_WEBHOOK_VERIFY", True)
    if not verify and not development:
        raise ConfigError("TELNYX_WEBHOOK_VERIFY=false is refused unless APP_ENV=development")
    public_key_text = _text(env, "TELNYX_PUBLIC_KEY")
    public_key = parse_public_key(public_key_text) if public_key_text else None
    if verify and public_key is None and not development:
        raise ConfigError("TELNYX_PUBLIC_KEY is required (base64 Ed25519 key from Telnyx)")

    api_key = _text(env, "TELNYX_API_KEY")
    if api_key is None and not development:
        raise ConfigError("TELNYX_API_KEY is required")
    secret_key = _text(env, "SECRET_KEY")
    if secret_key is None:
        if not development:
            raise ConfigError("SECRET_KEY is required")
        secret_key = "development-only-secret-key"

    ring_timeout = _integer(env, "RING_TIMEOUT_SECONDS", 30, 5, 600)
    claim_lease = _integer(env, "CLAIM_LEASE_SECONDS", 60, 5, 3600)
    action_deadline = _number(env, "TELNYX_ACTION_DEADLINE_SECONDS", 8.0, 1.0, 60.0)
    if action_deadline >= claim_lease:
        # A claim must outlive the agent's request that holds it (invariant 11).
        raise ConfigError(
            f"TELNYX_ACTION_DEADLINE_SECONDS ({action_deadline:g}) must be shorter than "
            f"CLAIM_LEASE_SECONDS ({claim_lease})"
        )

    return {
        "APP_ENV": app_env,
        "SECRET_KEY": secret_key,
        "DATABASE_URL": database_url_from(env),
        "DB_POOL_SIZE": _integer(env, "DB_POOL_SIZE", 10, 1, 500),
        "DB_POOL_TIMEOUT": _integer(env, "DB_POOL_TIMEOUT", 5, 1, 300),
        "DB_STATEMENT_TIMEOUT_MS": _integer(env, "DB_STATEMENT_TIMEOUT_MS", 5000, 100, 600_000),
        "REDIS_URL": _url(
            env, "REDIS_URL", "redis://127.0.0.1:6379/0", ("redis", "rediss", "unix")
        ),
        "REDIS_PREFIX": _text(env, "REDIS_PREFIX", "telnyx-flask:"),
        "REDIS_POOL_SIZE": _integer(env, "REDIS_POOL_SIZE", 50, 2, 10_000),
        "REDIS_STREAM_MAXLEN": _integer(env, "REDIS_STREAM_MAXLEN", 10_000, 100, 10_000_000),
        "TELNYX_API_KEY": api_key,
        "TELNYX_API_BASE": _url(
            env, "TELNYX_API_BASE", "https://api.telnyx.com/v2", ("http", "https")
        ).rstrip("/"),
        "TELNYX_PUBLIC_KEY": public_key,
        "TELNYX_WEBHOOK_VERIFY": verify,
        "TELNYX_SIP_USERNAME": _text(env, "TELNYX_SIP_USERNAME"),
        "TELNYX_SIP_PASSWORD": _text(env, "TELNYX_SIP_PASSWORD"),
        "TELNYX_SIP_DOMAIN": _text(env, "TELNYX_SIP_DOMAIN", "sip.telnyx.com"),
        "TELNYX_CALLER_ID": _text(env, "TELNYX_CALLER_ID"),
        "TELNYX_CREDENTIAL_ID": _text(env, "TELNYX_CREDENTIAL_ID"),
        "TELNYX_SIMULATOR_URL": _optional_url(env, "TELNYX_SIMULATOR_URL", ("http", "https")),
        "WEBRTC_ENABLED": _boolean(env, "WEBRTC_ENABLED", True),
        "WEBRTC_SDK_PATH": Path(_text(env, "WEBRTC_SDK_PATH", str(DEFAULT_WEBRTC_SDK_PATH))),
        "RECORD_CALLS": _boolean(env, "RECORD_CALLS", True),
        "RING_TIMEOUT_SECONDS": ring_timeout,
        "BACKGROUND_TASKS": _boolean(env, "BACKGROUND_TASKS", True),
        "CLAIM_LEASE_SECONDS": claim_lease,
        "TELNYX_ACTION_DEADLINE_SECONDS": action_deadline,
        "TELNYX_BREAKER_FAILURES": _integer(env, "TELNYX_BREAKER_FAILURES", 5, 1, 1000),
        "TELNYX_BREAKER_COOLDOWN_SECONDS": _number(
            env, "TELNYX_BREAKER_COOLDOWN_SECONDS", 30.0, 0.1, 3600.0
        ),
        "OUTBOX_BACKOFF_SECONDS": _number(env, "OUTBOX_BACKOFF_SECONDS", 1.0, 0.01, 3600.0),
        "OUTBOX_MAX_BACKOFF_SECONDS": _number(
            env, "OUTBOX_MAX_BACKOFF_SECONDS", 300.0, 0.01, 86400.0
        ),
        "OUTBOX_LEASE_SECONDS": _number(env, "OUTBOX_LEASE_SECONDS", 30.0, 1.0, 3600.0),
        "SILENT_RINGING_CALL_SECONDS": _integer(
            env, "SILENT_RINGING_CALL_SECONDS", ring_timeout + 120, 10, 86400
        ),
        "SILENT_ANSWERED_CALL_SECONDS": _integer(
            env, "SILENT_ANSWERED_CALL_SECONDS", 4 * 3600, 10, 7 * 86400
        ),
        "SILENT_CALL_CHECK_SECONDS": _number(env, "SILENT_CALL_CHECK_SECONDS", 30.0, 0.1, 3600.0),
        "SSE_HEARTBEAT_SECONDS": _integer(env, "SSE_HEARTBEAT_SECONDS", 15, 1, 300),
        "SSE_LIFETIME_SECONDS": _integer(env, "SSE_LIFETIME_SECONDS", 3600, 5, 86400),
        "SSE_QUEUE_SIZE": _integer(env, "SSE_QUEUE_SIZE", 256, 8, 100_000),
        "SSE_RETRY_MS": _integer(env, "SSE_RETRY_MS", 3000, 100, 600_000),
        "API_PORT": _integer(env, "API_PORT", 3000, 1, 65535),
        "LOG_LEVEL": _choice(env, "LOG_LEVEL", "INFO", LOG_LEVELS),
        "LOG_FORMAT": _choice(env, "LOG_FORMAT", "TEXT", LOG_FORMATS).lower(),
        "AUTH_TOKEN_TTL_SECONDS": _integer(
            env, "AUTH_TOKEN_TTL_SECONDS", 12 * 3600, 60, 30 * 86400
        ),
        "LOGIN_WINDOW_SECONDS": _integer(env, "LOGIN_WINDOW_SECONDS", 300, 1, 86400),
        "LOGIN_MAX_PER_IP": _integer(env, "LOGIN_MAX_PER_IP", 50, 1, 1_000_000),
        "LOGIN_MAX_PER_EMAIL": _integer(env, "LOGIN_MAX_PER_EMAIL", 10, 1, 1_000_000),
        "ALLOWED_ORIGINS": _origins(env, "ALLOWED_ORIGINS"),
        "TRUSTED_PROXY_COUNT": _integer(env, "TRUSTED_PROXY_COUNT", 0, 0, 10),
    }
