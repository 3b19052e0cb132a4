"""telnyx-flask: take Telnyx inbound calls in the browser."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import psycopg2
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from . import logs
from .config import ConfigError, config_from_environment
from .package_files import static_dir
from .signature import WebhookVerifier

log = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application.

    Settings come from the environment (and `.env` in development). Tests pass `config`: the
    same variable names, read instead of the environment, through the same checks; keys that are
    not settings (TESTING, say) go to app.config as they are.
    """
    if config is None:
        try:
            settings = config_from_environment()
        except ConfigError as error:
            exit_with_config_error(error)
    else:
        settings = config_from_environment({k: v for k, v in config.items() if isinstance(v, str)})
    app = Flask(__name__, static_folder=static_dir(), static_url_path="/static")
    app.config.update(settings)
    if config is not None:
        app.config.update({k: v for k, v in config.items() if not isinstance(v, str)})
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    assert isinstance(app.json, DefaultJSONProvider)  # Flask's own; nothing replaces it
    app.json.sort_keys = False
    # The webhook has its own, smaller limit; this bounds every other body.
    if app.config["MAX_CONTENT_LENGTH"] is None:
        app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024

    if app.config["TELNYX_WEBHOOK_VERIFY"]:
        app.extensions["webhook_verifier"] = WebhookVerifier(app.config["TELNYX_PUBLIC_KEY"])
        if app.config["TELNYX_PUBLIC_KEY"] is None:
            log.warning("TELNYX_PUBLIC_KEY is not set: every webhook will be refused with 401")
    else:
        app.extensions["webhook_verifier"] = None
        log.warning("TELNYX_WEBHOOK_VERIFY is off: webhooks are NOT verified (development only)")

    from . import (
        agent_api,
        auth,
        background,
        call_notes,
        caller_context,
        db,
        errors,
        history,
        lifecycle,
        live_calls,
        metrics,
        migrations,
        openapi,
        ops,
        outbox,
        presence,
        presence_api,
        prospects,
        push,
        rate_limits,
        recordings,
        reports,
        security_headers,
        softphone,
        supervisor,
        telnyx_api,
        transfer_api,
        users,
        voicemail,
        webhook_intake,
    )

    if app.config["TRUSTED_PROXY_COUNT"]:
        # Behind nginx: take the client address and scheme from the proxy's headers.
        count = app.config["TRUSTED_PROXY_COUNT"]
        # Flask's documented way to wrap the WSGI app; mypy sees only a method being replaced.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=count, x_proto=count, x_host=count
        )

    db.init_app(app)
    migrations.init_app(app)
    live_calls.init_app(app, app.config.get("REDIS_CLIENT"))
    lifecycle.init_app(app)
    telnyx_api.init_app(app)
    outbox.init_app(app)
    transfer_api.init_app(app)
    presence.init_app(app)
    background.init_app(app)
    push.init_app(app)
    rate_limits.init_app(app)
    errors.init_app(app)
    logs.init_app(app)
    security_headers.init_app(app)
    auth.init_app(app)
    users.init_app(app)
    prospects.init_app(app)
    reports.init_app(app)
    webhook_intake.init_app(app)
    app.register_blueprint(agent_api.bp)
    app.register_blueprint(presence_api.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(caller_context.bp)
    app.register_blueprint(call_notes.bp)
    app.register_blueprint(recordings.bp)
    app.register_blueprint(softphone.bp)
    app.register_blueprint(voicemail.bp)
    app.register_blueprint(supervisor.bp)
    app.register_blueprint(reports.bp)
    if app.config["APP_ENV"] == "development":
        # Test calls exist only in development, whatever TELNYX_SIMULATOR_URL says.
        app.register_blueprint(softphone.dev_bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)
    return app


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send the service's logs to stderr (JSON lines with fmt="json") unless already set up."""
    logs.configure(level, fmt)


def require_current_schema(app: Flask) -> None:
    """Refuse to serve (exit 3) when migrations in sql/ have not been applied to the database.

    An unreachable database is not refused here: /readyz says so, and it may come back.
    """
    from .migrations import pending_migrations

    try:
        pending = pending_migrations(app.config["DATABASE_URL"])
    except psycopg2.Error as exc:
        log.warning("could not check the database schema: %s", str(exc).strip())
        return
    if pending:
        print(
            f"telnyx-flask: the database schema is behind the code ({len(pending)} migration(s) "
            f"pending: {', '.join(pending)}); run `flask --app telnyx_flask db upgrade` "
            "(the Procfile's release step) first",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(3)


# gunicorn's WORKER_BOOT_ERROR: with it the master stops, instead of restarting workers that can
# only fail again (any other code makes it respawn them forever, printing the line each time).
CONFIG_ERROR_EXIT_CODE = 3


def exit_with_config_error(error: ConfigError) -> None:
    """Print a configuration error as the one line an operator needs, and exit."""
    print(f"telnyx-flask: configuration error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_ERROR_EXIT_CODE)
