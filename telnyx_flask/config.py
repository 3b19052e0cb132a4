"""Settings read from the environment, checked once at startup."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple, overload
from urllib.parse import parse_qs, quote, urlsplit

from dotenv import dotenv_values

from .redis_store import CLUSTER_SCHEMES, is_cluster_url
from .team_time import time_zone

APP_ENVS = ("production", "development")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("TEXT", "JSON")
# Where `npm ci` (make run) puts the pinned Telnyx WebRTC SDK the page loads.
DEFAULT_WEBRTC_SDK_PATH = (
    Path(__file__).resolve().parent.parent / "node_modules/@telnyx/webrtc/lib/bundle.mjs"
)
# A .env file fills in settings; it never chooses the mode or where another .env is.
DOTENV_IGNORED = ("APP_ENV", "DOTENV_PATH")
MIN_SECRET_KEY_BYTES = 32
MIN_SECRET_KEY_CHARACTERS = 10
DEVELOPMENT_SECRET_KEY = "development-only-secret-key"
# Keys copied from examples and tutorials (compared without case or punctuation).
PLACEHOLDER_SECRET_WORDS = (
    "changeme",
    "secret",
    "placeholder",
    "replaceme",
    "example",
    "password",
    "developmentonly",
    "yoursecretkey",
    "insecure",
)
# Where Telnyx keeps call recordings: its docs' call.recording.saved example links to
# https://s3.amazonaws.com/telephony-recorder-prod/..., and regional accounts get
# https://s3.<region>.amazonaws.com/telephony-recorder-prod-<site>/...; the virtual-hosted
# spelling of the same buckets and Telnyx's own hosts are allowed too.
DEFAULT_RECORDING_HOSTS = (
    "s3.amazonaws.com/telephony-recorder-prod",
    "s3.*.amazonaws.com/telephony-recorder-prod",
    "telephony-recorder-prod*.s3.amazonaws.com",
    "telephony-recorder-prod*.s3.*.amazonaws.com",
    "*.telnyx.com",
)
DEFAULT_PORTS = {"http": 80, "https": 443}
# The +cluster schemes select Redis Cluster (redis_store.create_redis).
REDIS_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)
# One hash tag for every key: the same code then runs on one server and on a Redis Cluster.
DEFAULT_REDIS_PREFIX = "{telnyx-flask}:"
DEFAULT_DISPOSITIONS = "resolved,follow-up,sale,wrong number,spam"
DEFAULT_VOICEMAIL_GREETING = (
    "Sorry, nobody can take your call right now. Please leave a message after the tone."
)


class ConfigError(Exception):
    """A required setting is missing or malformed; the message names it."""


def load_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the given settings, or the process environment plus `.env` in development."""
    if environ is not None:
        return dict(environ)
    environ = dict(os.environ)
    # Only the real environment selects development: a stray .env next to a production process
    # must not turn verification off or weaken its key, so production never reads the file.
    if _text(environ, "APP_ENV") != "development":
        return environ
    dotenv_path = Path(environ.get("DOTENV_PATH", ".env"))
    if dotenv_path.is_file():
        values = {
            k: v
            for k, v in dotenv_values(dotenv_path).items()
            if v is not None and k not in DOTENV_IGNORED
        }
        environ = {**values, **environ}
    return environ


@overload
def _text(env: Mapping[str, str], name: str) -> str | None: ...
@overload
def _text(env: Mapping[str, str], name: str, default: str) -> str: ...
@overload
def _text(env: Mapping[str, str], name: str, default: str | None) -> str | None: ...
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


def _time_zone(env: Mapping[str, str], name: str, default: str) -> str:
    """An IANA time zone name (Europe/Berlin, America/New_York, UTC)."""
    value = _text(env, name, default) or default
    try:
        time_zone(value)
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None
    return value


def _words(env: Mapping[str, str], name: str, default: str, longest: int) -> tuple[str, ...]:
    """A comma-separated list of distinct, non-empty words of at most `longest` characters."""
    words = [item.strip() for item in (_text(env, name) or default).split(",")]
    words = [word for word in words if word]
    if not words:
        raise ConfigError(f"{name} must list at least one item, separated by commas")
    for word in words:
        if len(word) > longest:
            raise ConfigError(f"{name} items must be at most {longest} characters, got {word!r}")
    if len({word.lower() for word in words}) != len(words):
        raise ConfigError(f"{name} lists an item twice: {', '.join(words)}")
    return tuple(words)


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


def redis_settings(env: Mapping[str, str]) -> tuple[str, str]:
    """REDIS_URL and REDIS_PREFIX; on a Redis Cluster the prefix must hold a hash tag."""
    url = _url(env, "REDIS_URL", "redis://127.0.0.1:6379/0", REDIS_SCHEMES)
    prefix = _text(env, "REDIS_PREFIX", DEFAULT_REDIS_PREFIX)
    cluster = is_cluster_url(url)
    if parse_qs(urlsplit(url).query).get("protocol", ["2"]) != ["2"]:
        # The stream reader and the scripts' replies are read in RESP2's shapes.
        raise ConfigError(f"REDIS_URL: only protocol=2 (RESP2) is supported, got {url!r}")
    if cluster and urlsplit(url).path.strip("/") not in ("", "0"):
        raise ConfigError(f"REDIS_URL: a Redis Cluster has only database 0, got {url!r}")
    if cluster and not _hash_tag(prefix):
        # Without one, a script's keys spread over slots and the cluster refuses it (CROSSSLOT).
        raise ConfigError(
            f"REDIS_PREFIX must contain a hash tag such as {DEFAULT_REDIS_PREFIX!r} when "
            f"REDIS_URL is a Redis Cluster, so that every key is in one slot; got {prefix!r}"
        )
    return url, prefix


def sentinel_settings(env: Mapping[str, str], redis_url: str) -> tuple[tuple[str, int], ...]:
    """REDIS_SENTINELS as (host, port) pairs; empty when Sentinel is not used. With sentinels,
    REDIS_SENTINEL_MASTER names the monitored primary, and REDIS_URL gives only what the
    connections to it need (its database number, password, TLS): its host is the sentinels'
    to say."""
    listed = _text(env, "REDIS_SENTINELS")
    if listed is None:
        if _text(env, "REDIS_SENTINEL_MASTER") is not None:
            raise ConfigError("REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not")
        return ()
    sentinels = []
    for item in listed.split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"REDIS_SENTINELS must be host:port[,host:port...], got {item.strip()!r}"
            )
        sentinels.append((host, int(port)))
    if _text(env, "REDIS_SENTINEL_MASTER") is None:
        raise ConfigError("REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the primary")
    if urlsplit(redis_url).scheme not in ("redis", "rediss"):
        raise ConfigError(
            "REDIS_SENTINELS works with a redis:// or rediss:// REDIS_URL (for the database, "
            f"password and TLS), got {redis_url!r}"
        )
    return tuple(sentinels)


def _hash_tag(prefix: str) -> str:
    """What Redis Cluster hashes a key under this prefix by: the text inside the first `{...}`
    when it is not empty (else the whole key, so there is no shared tag)."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start != -1 else -1
    return prefix[start + 1 : end] if end > start + 1 else ""


def check_secret_key(value: str) -> str:
    """The key, if it could sign production cookies; ConfigError naming SECRET_KEY if not.

    Whoever knows the key can forge a session for any agent, so a short, copied or patterned
    key is refused rather than warned about.
    """
    advice = "use at least 32 random bytes, e.g. `openssl rand -hex 32`"
    size = len(value.encode())
    if size < MIN_SECRET_KEY_BYTES:
        raise ConfigError(f"SECRET_KEY is too short ({size} bytes): {advice}")
    folded = "".join(ch for ch in value.lower() if ch.isalnum())
    if any(word in folded for word in PLACEHOLDER_SECRET_WORDS):
        raise ConfigError(f"SECRET_KEY is a placeholder from an example: {advice}")
    if len(set(value)) < MIN_SECRET_KEY_CHARACTERS or _repeats(value):
        raise ConfigError(f"SECRET_KEY does not look random: {advice}")
    return value


def _repeats(value: str) -> bool:
    """True when the text is a shorter piece repeated ("abcdefghijabcdefghij...")."""
    return any(
        value == (value[:period] * (len(value) // period + 1))[: len(value)]
        for period in range(1, len(value) // 2 + 1)
    )


class RecordingSource(NamedTuple):
    """One allowed place for recordings: scheme, host pattern (`*` wildcards), port, path prefix."""

    scheme: str
    host: str
    port: int
    path: str


def parse_recording_source(item: str, name: str = "RECORDING_HOSTS") -> RecordingSource:
    """`host[:port][/path-prefix]` (https), or an explicit `http(s)://host[:port][/prefix]`."""
    text = item.strip()
    explicit = "://" in text
    parts = urlsplit(text if explicit else f"https://{text}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    host = (parts.hostname or "").lower()
    # A wildcard may not stand for a whole domain ("*.com", "*"): it names hosts of one.
    labels = host.split(".")
    if (
        parts.scheme not in DEFAULT_PORTS
        or port == -1
        or not host
        or parts.username is not None
        or parts.query
        or parts.fragment
        or ("*" in host and (len(labels) < 3 or "*" in "".join(labels[-2:])))
    ):
        raise ConfigError(
            f"{name} must list hosts like s3.amazonaws.com/telephony-recorder-prod or "
            f"*.telnyx.com, got {item.strip()!r}"
        )
    return RecordingSource(
        parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], parts.path.rstrip("/")
    )


def _recording_sources(
    env: Mapping[str, str], development: bool, simulator_url: str | None
) -> tuple[RecordingSource, ...]:
    items = (_text(env, "RECORDING_HOSTS") or ",".join(DEFAULT_RECORDING_HOSTS)).split(",")
    sources = [parse_recording_source(item) for item in items if item.strip()]
    if development and simulator_url is not None:
        # The simulator serves its recordings itself, over plain http on this machine.
        sources.append(parse_recording_source(simulator_url, "TELNYX_SIMULATOR_URL"))
    return tuple(sources)


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
        secret_key = DEVELOPMENT_SECRET_KEY
    elif not development:
        check_secret_key(secret_key)
    simulator_url = _optional_url(env, "TELNYX_SIMULATOR_URL", ("http", "https"))

    ring_timeout = _integer(env, "RING_TIMEOUT_SECONDS", 30, 5, 600)
    claim_lease = _integer(env, "CLAIM_LEASE_SECONDS", 60, 5, 3600)
    action_deadline = _number(env, "TELNYX_ACTION_DEADLINE_SECONDS", 8.0, 1.0, 60.0)
    if action_deadline >= claim_lease:
        # A claim must outlive the agent's request that holds it (invariant 11).
        raise ConfigError(
            f"TELNYX_ACTION_DEADLINE_SECONDS ({action_deadline:g}) must be shorter than "
            f"CLAIM_LEASE_SECONDS ({claim_lease})"
        )

    redis_url, redis_prefix = redis_settings(env)

    return {
        "APP_ENV": app_env,
        "SECRET_KEY": secret_key,
        "DATABASE_URL": database_url_from(env),
        "DB_POOL_SIZE": _integer(env, "DB_POOL_SIZE", 10, 1, 500),
        "DB_POOL_TIMEOUT": _integer(env, "DB_POOL_TIMEOUT", 5, 1, 300),
        "DB_STATEMENT_TIMEOUT_MS": _integer(env, "DB_STATEMENT_TIMEOUT_MS", 5000, 100, 600_000),
        # DATABASE_URL names PgBouncer in transaction mode: no session settings at connect.
        "DB_PGBOUNCER": _boolean(env, "DB_PGBOUNCER", False),
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "REDIS_SENTINELS": sentinel_settings(env, redis_url),
        "REDIS_SENTINEL_MASTER": _text(env, "REDIS_SENTINEL_MASTER"),
        "REDIS_SENTINEL_PASSWORD": _text(env, "REDIS_SENTINEL_PASSWORD"),
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
        "TELNYX_SIMULATOR_URL": simulator_url,
        "RECORDING_SOURCES": _recording_sources(env, development, simulator_url),
        "WEBRTC_ENABLED": _boolean(env, "WEBRTC_ENABLED", True),
        "WEBRTC_SHARED_CREDENTIAL": _boolean(env, "WEBRTC_SHARED_CREDENTIAL", False),
        "WEBRTC_SDK_PATH": Path(_text(env, "WEBRTC_SDK_PATH", str(DEFAULT_WEBRTC_SDK_PATH))),
        "RECORD_CALLS": _boolean(env, "RECORD_CALLS", True),
        "WEBHOOK_BATCH_WINDOW_MS": _number(env, "WEBHOOK_BATCH_WINDOW_MS", 2.0, 0.0, 100.0),
        "WEBHOOK_BATCH_MAX_EVENTS": _integer(env, "WEBHOOK_BATCH_MAX_EVENTS", 64, 1, 1000),
        "RING_TIMEOUT_SECONDS": ring_timeout,
        # The agents' floor (issue 16): presence, after-call dispositions, transfers, voicemail.
        "PRESENCE_AWAY_AFTER_SECONDS": _integer(env, "PRESENCE_AWAY_AFTER_SECONDS", 60, 5, 3600),
        "CALL_DISPOSITIONS": _words(env, "CALL_DISPOSITIONS", DEFAULT_DISPOSITIONS, 40),
        "CALL_NOTE_MAX_CHARS": _integer(env, "CALL_NOTE_MAX_CHARS", 2000, 1, 20_000),
        "TRANSFER_RING_SECONDS": _integer(env, "TRANSFER_RING_SECONDS", 30, 5, 600),
        "VOICEMAIL": _boolean(env, "VOICEMAIL", True),
        "VOICEMAIL_GREETING": _text(env, "VOICEMAIL_GREETING", DEFAULT_VOICEMAIL_GREETING),
        "VOICEMAIL_GREETING_URL": _optional_url(env, "VOICEMAIL_GREETING_URL", ("https",)),
        "VOICEMAIL_VOICE": _text(env, "VOICEMAIL_VOICE", "female"),
        "VOICEMAIL_LANGUAGE": _text(env, "VOICEMAIL_LANGUAGE", "en-US"),
        "VOICEMAIL_MAX_SECONDS": _integer(env, "VOICEMAIL_MAX_SECONDS", 120, 5, 600),
        # The supervisor's view and reports (issue 17).
        "TEAM_TIMEZONE": _time_zone(env, "TEAM_TIMEZONE", "UTC"),
        "SERVICE_LEVEL_SECONDS": _integer(env, "SERVICE_LEVEL_SECONDS", 20, 1, 3600),
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
        "SSE_MAX_STREAMS_PER_AGENT": _integer(env, "SSE_MAX_STREAMS_PER_AGENT", 10, 1, 1000),
        "AGENT_ACTIONS_PER_MINUTE": _integer(env, "AGENT_ACTIONS_PER_MINUTE", 60, 1, 100_000),
        "WEBRTC_TOKENS_PER_HOUR": _integer(env, "WEBRTC_TOKENS_PER_HOUR", 30, 1, 100_000),
        "API_PORT": _integer(env, "API_PORT", 3000, 1, 65535),
        "LOG_LEVEL": _choice(env, "LOG_LEVEL", "INFO", LOG_LEVELS),
        "LOG_FORMAT": _choice(env, "LOG_FORMAT", "TEXT", LOG_FORMATS).lower(),
        "AUTH_TOKEN_TTL_SECONDS": _integer(
            env, "AUTH_TOKEN_TTL_SECONDS", 12 * 3600, 60, 30 * 86400
        ),
        "AUTH_SESSION_CACHE_SECONDS": _number(env, "AUTH_SESSION_CACHE_SECONDS", 2.0, 0.0, 2.0),
        "LOGIN_WINDOW_SECONDS": _integer(env, "LOGIN_WINDOW_SECONDS", 300, 1, 86400),
        "LOGIN_MAX_PER_IP": _integer(env, "LOGIN_MAX_PER_IP", 50, 1, 1_000_000),
        "LOGIN_MAX_PER_EMAIL": _integer(env, "LOGIN_MAX_PER_EMAIL", 10, 1, 1_000_000),
        "ALLOWED_ORIGINS": _origins(env, "ALLOWED_ORIGINS"),
        "TRUSTED_PROXY_COUNT": _integer(env, "TRUSTED_PROXY_COUNT", 0, 0, 10),
    }
