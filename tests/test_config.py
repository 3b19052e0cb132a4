"""Configuration: defaults, the seed's names, and one clear line for a bad setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from telnyx_flask.config import (
    DEFAULT_RECORDING_HOSTS,
    ConfigError,
    RecordingSource,
    config_from_environment,
)

from .helpers import PUBLIC_KEY, TEST_SECRET_KEY

PRODUCTION = {
    "TELNYX_PUBLIC_KEY": PUBLIC_KEY,
    "TELNYX_API_KEY": "KEY",
    "SECRET_KEY": TEST_SECRET_KEY,
}


def test_production_defaults():
    config = config_from_environment(PRODUCTION)
    assert config["APP_ENV"] == "production"
    assert config["TELNYX_API_BASE"] == "https://api.telnyx.com/v2"
    assert config["TELNYX_SIP_DOMAIN"] == "sip.telnyx.com"
    assert config["TELNYX_WEBHOOK_VERIFY"] is True
    assert config["RECORD_CALLS"] is True
    assert config["RING_TIMEOUT_SECONDS"] == 30
    assert config["REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert config["REDIS_PREFIX"] == "{telnyx-flask}:"
    assert config["WEBHOOK_BATCH_WINDOW_MS"] == 2.0
    assert config["WEBHOOK_BATCH_MAX_EVENTS"] == 64
    assert config["REDIS_SENTINELS"] == ()


def test_pgbouncer_is_off_unless_said():
    assert config_from_environment(PRODUCTION)["DB_PGBOUNCER"] is False
    assert config_from_environment({**PRODUCTION, "DB_PGBOUNCER": "true"})["DB_PGBOUNCER"] is True


def test_sentinels_are_read_as_addresses():
    config = config_from_environment(
        {
            **PRODUCTION,
            "REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380,[::1]:26381",
            "REDIS_SENTINEL_MASTER": "telnyx",
        }
    )
    assert config["REDIS_SENTINELS"] == (
        ("10.0.0.1", 26379),
        ("sentinel-b", 26380),
        ("::1", 26381),
    )
    assert config["REDIS_SENTINEL_MASTER"] == "telnyx"


@pytest.mark.parametrize("url", ["redis+cluster://10.0.0.5:6379", "rediss+cluster://h:6380/0"])
def test_cluster_url_is_accepted_with_the_default_hash_tag(url):
    config = config_from_environment({**PRODUCTION, "REDIS_URL": url})
    assert (config["REDIS_URL"], config["REDIS_PREFIX"]) == (url, "{telnyx-flask}:")


def test_seed_db_parts_build_the_database_url():
    config = config_from_environment(
        {
            **PRODUCTION,
            "DB_HOST": "db.internal",
            "DB_PORT": "6543",
            "DB_NAME": "calls",
            "DB_USER": "app",
            "DB_PASSWORD": "p@ss/word",
        }
    )
    assert config["DATABASE_URL"] == "postgresql://app:p%40ss%2Fword@db.internal:6543/calls"


def test_database_url_wins_over_db_parts():
    config = config_from_environment(
        {**PRODUCTION, "DB_HOST": "ignored", "DATABASE_URL": "postgresql://u@h/d"}
    )
    assert config["DATABASE_URL"] == "postgresql://u@h/d"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"TELNYX_PUBLIC_KEY": ""}, "TELNYX_PUBLIC_KEY is required"),
        ({"TELNYX_PUBLIC_KEY": "not-base64!"}, "TELNYX_PUBLIC_KEY must be base64"),
        ({"TELNYX_PUBLIC_KEY": "c2hvcnQ="}, "TELNYX_PUBLIC_KEY must decode to 32 bytes"),
        ({"TELNYX_API_KEY": ""}, "TELNYX_API_KEY is required"),
        ({"SECRET_KEY": ""}, "SECRET_KEY is required"),
        ({"TELNYX_WEBHOOK_VERIFY": "false"}, "TELNYX_WEBHOOK_VERIFY=false is refused"),
        ({"TELNYX_WEBHOOK_VERIFY": "maybe"}, "TELNYX_WEBHOOK_VERIFY must be true or false"),
        ({"APP_ENV": "staging"}, "APP_ENV must be one of"),
        ({"RING_TIMEOUT_SECONDS": "soon"}, "RING_TIMEOUT_SECONDS must be a whole number"),
        ({"RING_TIMEOUT_SECONDS": "0"}, "RING_TIMEOUT_SECONDS must be between"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must be a postgres/postgresql URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL must be a redis/rediss/unix/redis"),
        (
            {"REDIS_URL": "redis+cluster://10.0.0.5:6379", "REDIS_PREFIX": "tf:"},
            "REDIS_PREFIX must contain a hash tag",
        ),
        (
            {"REDIS_URL": "redis+cluster://10.0.0.5:6379", "REDIS_PREFIX": "{}:tf:"},
            "REDIS_PREFIX must contain a hash tag",
        ),
        ({"REDIS_URL": "redis+cluster://10.0.0.5:6379/2"}, "a Redis Cluster has only database 0"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/0?protocol=3"}, "only protocol=2 \\(RESP2\\)"),
        ({"TELNYX_API_BASE": "ftp://x"}, "TELNYX_API_BASE must be a http/https URL"),
        ({"RECORD_CALLS": "sometimes"}, "RECORD_CALLS must be true or false"),
        ({"DB_PGBOUNCER": "transaction"}, "DB_PGBOUNCER must be true or false"),
        ({"REDIS_SENTINELS": "10.0.0.1:26379"}, "REDIS_SENTINEL_MASTER must name the primary"),
        ({"REDIS_SENTINEL_MASTER": "main"}, "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS"),
        (
            {"REDIS_SENTINELS": "10.0.0.1", "REDIS_SENTINEL_MASTER": "main"},
            "REDIS_SENTINELS must be host:port",
        ),
        (
            {
                "REDIS_SENTINELS": "10.0.0.1:26379",
                "REDIS_SENTINEL_MASTER": "main",
                "REDIS_URL": "redis+cluster://10.0.0.5:6379",
            },
            "REDIS_SENTINELS works with a redis:// or rediss:// REDIS_URL",
        ),
        ({"WEBHOOK_BATCH_WINDOW_MS": "-1"}, "WEBHOOK_BATCH_WINDOW_MS must be between 0"),
        ({"WEBHOOK_BATCH_WINDOW_MS": "soon"}, "WEBHOOK_BATCH_WINDOW_MS must be a number"),
        ({"WEBHOOK_BATCH_MAX_EVENTS": "0"}, "WEBHOOK_BATCH_MAX_EVENTS must be between 1"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL must be one of"),
        ({"CALL_DISPOSITIONS": " , ,"}, "CALL_DISPOSITIONS must list at least one item"),
        ({"CALL_DISPOSITIONS": "sale,Sale"}, "CALL_DISPOSITIONS lists an item twice"),
        ({"CALL_DISPOSITIONS": "x" * 41}, "CALL_DISPOSITIONS items must be at most 40"),
        ({"VOICEMAIL": "maybe"}, "VOICEMAIL must be true or false"),
        ({"VOICEMAIL_GREETING_URL": "http://x.example/a.mp3"}, "VOICEMAIL_GREETING_URL must be"),
        ({"VOICEMAIL_MAX_SECONDS": "4"}, "VOICEMAIL_MAX_SECONDS must be between 5"),
        ({"PRESENCE_AWAY_AFTER_SECONDS": "1"}, "PRESENCE_AWAY_AFTER_SECONDS must be between 5"),
        ({"TRANSFER_RING_SECONDS": "601"}, "TRANSFER_RING_SECONDS must be between 5"),
        ({"TEAM_TIMEZONE": "Mars/Olympus_Mons"}, "TEAM_TIMEZONE: not an IANA time zone"),
        ({"TEAM_TIMEZONE": "America"}, "TEAM_TIMEZONE: not an IANA time zone"),
        ({"TEAM_TIMEZONE": "../../etc/passwd"}, "TEAM_TIMEZONE: not an IANA time zone"),
        ({"SERVICE_LEVEL_SECONDS": "0"}, "SERVICE_LEVEL_SECONDS must be between 1"),
    ],
)
def test_bad_setting_is_named(overrides, named):
    with pytest.raises(ConfigError, match=named):
        config_from_environment({**PRODUCTION, **overrides})


def test_development_needs_no_keys():
    config = config_from_environment({"APP_ENV": "development"})
    assert config["TELNYX_PUBLIC_KEY"] is None
    assert config["TELNYX_API_KEY"] is None


def test_dotenv_is_read_only_in_development(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("APP_ENV=development\nRING_TIMEOUT_SECONDS=45\n")
    monkeypatch.chdir(tmp_path)
    for name in ("RING_TIMEOUT_SECONDS", "DOTENV_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APP_ENV", "development")
    assert config_from_environment()["RING_TIMEOUT_SECONDS"] == 45
    # The real environment decides the mode: production ignores the file.
    for name, value in {**PRODUCTION, "APP_ENV": "production"}.items():
        monkeypatch.setenv(name, value)
    assert config_from_environment()["RING_TIMEOUT_SECONDS"] == 30


def test_a_dotenv_cannot_select_development(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("APP_ENV=development\nTELNYX_WEBHOOK_VERIFY=false\nSECRET_KEY=change-me\n")
    monkeypatch.setenv("DOTENV_PATH", str(dotenv))
    monkeypatch.delenv("APP_ENV", raising=False)
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    config = config_from_environment()
    assert config["APP_ENV"] == "production"
    assert config["TELNYX_WEBHOOK_VERIFY"] is True
    assert config["SECRET_KEY"] == TEST_SECRET_KEY
    # Without a key of its own, the process stops: the file's key is never used.
    monkeypatch.delenv("SECRET_KEY")
    with pytest.raises(ConfigError, match="SECRET_KEY is required"):
        config_from_environment()


def test_development_takes_other_settings_from_the_dotenv_but_not_the_mode(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("APP_ENV=production\nRING_TIMEOUT_SECONDS=45\n")
    monkeypatch.setenv("DOTENV_PATH", str(dotenv))
    monkeypatch.setenv("APP_ENV", "development")
    config = config_from_environment()
    assert (config["APP_ENV"], config["RING_TIMEOUT_SECONDS"]) == ("development", 45)


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("change-me", "SECRET_KEY is too short"),
        ("secret", "SECRET_KEY is too short"),
        ("x" * 31, "SECRET_KEY is too short"),
        ("0123456789abcdef", "SECRET_KEY is too short"),
        ("change-me-change-me-change-me-change-me", "SECRET_KEY is a placeholder"),
        ("CHANGEME_please_0123456789_abcdefghij", "SECRET_KEY is a placeholder"),
        ("development-only-secret-key-for-real-now", "SECRET_KEY is a placeholder"),
        ("my-super-secret-signing-key-1234567890", "SECRET_KEY is a placeholder"),
        ("a" * 64, "SECRET_KEY does not look random"),
        ("abababababababababababababababababab", "SECRET_KEY does not look random"),
        ("abcdefghijabcdefghijabcdefghijabcdefghij", "SECRET_KEY does not look random"),
        ("1122334455112233445511223344551122334455", "SECRET_KEY does not look random"),
    ],
)
def test_production_refuses_a_weak_or_placeholder_secret_key(key, named):
    with pytest.raises(ConfigError, match=named) as refused:
        config_from_environment({**PRODUCTION, "SECRET_KEY": key})
    assert key not in str(refused.value)  # the line names the setting, never echoes the key


def test_the_example_env_key_is_refused_in_production():
    example = Path(__file__).parent.parent / ".env.example"
    key = next(
        line.split("=", 1)[1]
        for line in example.read_text().splitlines()
        if line.startswith("SECRET_KEY=")
    )
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        config_from_environment({**PRODUCTION, "SECRET_KEY": key or "change-me"})


@pytest.mark.parametrize(
    "key",
    [
        TEST_SECRET_KEY,
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # openssl rand -hex 32
        "Zp0d0GJmGk7Q2mX1y3Sx0n7V_tL8wq5rBfA9cEiHuKo",  # secrets.token_urlsafe(32)
    ],
)
def test_production_accepts_a_strong_secret_key(key):
    assert config_from_environment({**PRODUCTION, "SECRET_KEY": key})["SECRET_KEY"] == key


def test_development_without_a_secret_key_still_starts():
    config = config_from_environment({"APP_ENV": "development"})
    assert config["SECRET_KEY"]
    assert config_from_environment({"APP_ENV": "development", "SECRET_KEY": "dev"})["SECRET_KEY"]


def test_recording_hosts_default_to_telnyx_and_take_explicit_origins():
    default = config_from_environment(PRODUCTION)["RECORDING_SOURCES"]
    assert len(default) == len(DEFAULT_RECORDING_HOSTS)
    assert RecordingSource("https", "s3.amazonaws.com", 443, "/telephony-recorder-prod") in default
    configured = config_from_environment(
        {**PRODUCTION, "RECORDING_HOSTS": "media.example.com/calls, http://127.0.0.1:8080"}
    )["RECORDING_SOURCES"]
    assert configured == (
        RecordingSource("https", "media.example.com", 443, "/calls"),
        RecordingSource("http", "127.0.0.1", 8080, ""),
    )


def test_the_simulator_is_a_recording_source_in_development_only():
    simulator = {"TELNYX_SIMULATOR_URL": "http://127.0.0.1:8710"}
    production = config_from_environment({**PRODUCTION, **simulator})["RECORDING_SOURCES"]
    development = config_from_environment({"APP_ENV": "development", **simulator})
    assert RecordingSource("http", "127.0.0.1", 8710, "") not in production
    assert RecordingSource("http", "127.0.0.1", 8710, "") in development["RECORDING_SOURCES"]


@pytest.mark.parametrize("hosts", ["*", "*.com", "ftp://files.example.com", "a.example.com:0x"])
def test_a_bad_recording_host_is_named(hosts):
    with pytest.raises(ConfigError, match="RECORDING_HOSTS must list hosts"):
        config_from_environment({**PRODUCTION, "RECORDING_HOSTS": hosts})


def test_startup_with_a_missing_setting_prints_one_line_naming_it(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TELNYX_", "APP_ENV", "SECRET_KEY"))
    }
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"],
        cwd=Path(__file__).parent.parent,
        env={**env, "SECRET_KEY": TEST_SECRET_KEY, "TELNYX_API_KEY": "k"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "telnyx-flask: configuration error: TELNYX_PUBLIC_KEY is required "
        "(base64 Ed25519 key from Telnyx)"
    ]


def test_reliability_defaults():
    config = config_from_environment(PRODUCTION)
    assert config["TELNYX_ACTION_DEADLINE_SECONDS"] == 8.0
    assert config["CLAIM_LEASE_SECONDS"] == 60
    assert config["TELNYX_BREAKER_FAILURES"] == 5
    assert config["TELNYX_BREAKER_COOLDOWN_SECONDS"] == 30.0
    assert (config["OUTBOX_BACKOFF_SECONDS"], config["OUTBOX_MAX_BACKOFF_SECONDS"]) == (1.0, 300.0)
    assert config["OUTBOX_LEASE_SECONDS"] == 30.0
    # A ringing call is asked about two minutes after it should have timed out.
    assert config["SILENT_RINGING_CALL_SECONDS"] == 30 + 120
    assert config["SILENT_ANSWERED_CALL_SECONDS"] == 4 * 3600
    assert config["BACKGROUND_TASKS"] is True


def test_silent_ringing_bound_follows_the_ring_timeout():
    config = config_from_environment({**PRODUCTION, "RING_TIMEOUT_SECONDS": "45"})
    assert config["SILENT_RINGING_CALL_SECONDS"] == 165


def test_a_deadline_longer_than_the_claim_lease_is_refused():
    with pytest.raises(ConfigError, match=r"TELNYX_ACTION_DEADLINE_SECONDS .* CLAIM_LEASE_SECONDS"):
        config_from_environment(
            {**PRODUCTION, "TELNYX_ACTION_DEADLINE_SECONDS": "30", "CLAIM_LEASE_SECONDS": "20"}
        )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OUTBOX_BACKOFF_SECONDS", "soon", "OUTBOX_BACKOFF_SECONDS must be a number"),
        ("OUTBOX_LEASE_SECONDS", "0", "OUTBOX_LEASE_SECONDS must be between 1 and 3600"),
        ("TELNYX_BREAKER_FAILURES", "0", "TELNYX_BREAKER_FAILURES must be between 1 and 1000"),
        ("BACKGROUND_TASKS", "maybe", "BACKGROUND_TASKS must be true or false"),
    ],
)
def test_bad_reliability_settings_name_themselves(name, value, message):
    with pytest.raises(ConfigError, match=message):
        config_from_environment({**PRODUCTION, name: value})


def test_the_agents_floor_settings_have_their_defaults_and_read_on_and_off():
    config = config_from_environment(PRODUCTION)
    assert config["CALL_DISPOSITIONS"] == (
        "resolved",
        "follow-up",
        "sale",
        "wrong number",
        "spam",
    )
    assert config["VOICEMAIL"] is True
    assert config["VOICEMAIL_GREETING_URL"] is None
    assert config["PRESENCE_AWAY_AFTER_SECONDS"] == 60
    assert config["TRANSFER_RING_SECONDS"] == 30
    assert config["TEAM_TIMEZONE"] == "UTC"
    assert config["SERVICE_LEVEL_SECONDS"] == 20
    custom = config_from_environment(
        {**PRODUCTION, "VOICEMAIL": "off", "CALL_DISPOSITIONS": " callback , closed won "}
    )
    assert custom["VOICEMAIL"] is False
    assert custom["CALL_DISPOSITIONS"] == ("callback", "closed won")
