"""Agent accounts: who an agent is, the rules an account obeys, and the `users` CLI group
(create, list, set-phone, set-role, set-password, deactivate)."""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass
from typing import Any

import click
import psycopg2
import psycopg2.errors
from flask import Flask
from flask.cli import AppGroup

from .db import get_db, one_row
from .passwords import hash_password
from .request_body import is_storable_text
from .sessions import end_agent_sessions

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Telnyx SIP usernames: letters, digits and a few marks, not starting with a digit.
SIP_USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{2,63}$")
MIN_PASSWORD_LENGTH = 8
# Telnyx ids are uuids or long digit strings; anything printable without spaces is let through.
CREDENTIAL_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
# A supervisor can do everything an agent can, and also watch the floor and read the reports.
AGENT, SUPERVISOR = "agent", "supervisor"
ROLES = (AGENT, SUPERVISOR)


@dataclass(frozen=True)
class Agent:
    """A signed-in agent."""

    id: str
    email: str
    name: str
    sip_username: str | None
    role: str = AGENT

    @property
    def is_supervisor(self) -> bool:
        """True for a supervisor."""
        return self.role == SUPERVISOR

    def public(self) -> dict[str, Any]:
        """What the API shows of an agent."""
        return asdict(self)


def _check_storable(**fields: str | None) -> None:
    """ValueError naming the first field PostgreSQL could not take (a NUL, a lone surrogate)."""
    for label, value in fields.items():
        if value is not None and not is_storable_text(value):
            raise ValueError(f"{label} must not contain NUL or unpaired surrogate characters")


def _storable_argument(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # A command-line argument that is not valid UTF-8 reaches Python as lone surrogates.
    try:
        _check_storable(**{param.name or "value": value})
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


def _check_phone(sip_username: str | None, credential_id: str | None) -> None:
    if sip_username is not None and not SIP_USERNAME.match(sip_username):
        raise ValueError("sip username must start with a letter (letters, digits, _ . -)")
    if credential_id is not None and not CREDENTIAL_ID.match(credential_id):
        raise ValueError("telephony credential id must be 1-128 letters, digits, _ or -")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")


def set_role(email: str, role: str) -> str:
    """Make the agent with this email an agent or a supervisor; returns their id. ValueError
    for an unknown role or email. Takes effect on their next request (sessions.py's cache)."""
    _check_storable(email=email)
    _check_role(role)
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE users SET role = %s, updated_at = now()"
            " WHERE lower(email) = lower(%s) RETURNING id::text",
            (role, email),
        )
        found = cur.fetchone()
    if found is None:
        raise ValueError(f"no agent with email {email}")
    return found[0]


def create_user(
    email: str,
    name: str,
    password: str,
    sip_username: str | None,
    telephony_credential_id: str | None = None,
    role: str = AGENT,
) -> str:
    """Insert an agent (or supervisor) and return its id; ValueError for bad input or a taken
    email."""
    _check_storable(email=email, name=name, password=password)
    if not EMAIL.match(email):
        raise ValueError(f"not an email address: {email!r}")
    if not name.strip():
        raise ValueError("name must not be empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    _check_phone(sip_username, telephony_credential_id)
    _check_role(role)
    try:
        with get_db().connection() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO users (email, name, password_hash, sip_username,"
                " telephony_credential_id, role) VALUES (%s, %s, %s, %s, %s, %s)"
                " RETURNING id::text",
                (
                    email.strip(),
                    name.strip(),
                    hash_password(password),
                    sip_username,
                    telephony_credential_id,
                    role,
                ),
            )
            return one_row(cur)[0]
    except psycopg2.errors.UniqueViolation:
        raise ValueError(f"an agent with email {email} already exists") from None


def set_phone(email: str, sip_username: str | None, telephony_credential_id: str | None) -> None:
    """Change where an agent's calls go; None leaves a field as it is, "" clears it."""
    sip = sip_username or None
    credential_id = telephony_credential_id or None
    _check_storable(email=email)
    _check_phone(sip, credential_id)
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE users SET"
            " sip_username = CASE WHEN %(set_sip)s THEN %(sip)s ELSE sip_username END,"
            " telephony_credential_id = CASE WHEN %(set_cred)s THEN %(cred)s"
            "  ELSE telephony_credential_id END,"
            " updated_at = now()"
            " WHERE lower(email) = lower(%(email)s) RETURNING id",
            {
                "set_sip": sip_username is not None,
                "sip": sip,
                "set_cred": telephony_credential_id is not None,
                "cred": credential_id,
                "email": email,
            },
        )
        if cur.fetchone() is None:
            raise ValueError(f"no agent with email {email}")


CREDENTIAL_HELP = (
    "The Telnyx telephony credential the page's in-browser phone signs in with; "
    "--sip-username must then be that credential's SIP username."
)

users_cli = AppGroup("users", help="Agent accounts.")


@users_cli.command("create")
@click.option("--email", required=True, callback=_storable_argument)
@click.option("--name", required=True, callback=_storable_argument)
@click.option("--sip-username", default=None, help="The Telnyx SIP user the agent's phone uses.")
@click.option("--telephony-credential-id", default=None, help=CREDENTIAL_HELP)
@click.option("--role", type=click.Choice(ROLES), default=AGENT, show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_command(
    email: str,
    name: str,
    sip_username: str | None,
    telephony_credential_id: str | None,
    role: str,
    password_stdin: bool,
) -> None:
    """Create an agent or a supervisor (the password is prompted for unless --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user_id = create_user(email, name, password, sip_username, telephony_credential_id, role)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"created {role} {email} ({user_id})")


@users_cli.command("list")
def list_command() -> None:
    """List agents: email, name, SIP username, role, active or deactivated."""
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT email, name, coalesce(sip_username, '-'), role, active FROM users"
            " ORDER BY email"
        )
        rows = cur.fetchall()
    for email, name, sip_username, role, active in rows:
        state = "active" if active else "deactivated"
        click.echo(f"{email}\t{name}\t{sip_username}\t{role}\t{state}")


@users_cli.command("set-phone")
@click.argument("email", callback=_storable_argument)
@click.option("--sip-username", default=None, help="New SIP username ('' clears it).")
@click.option("--telephony-credential-id", default=None, help=CREDENTIAL_HELP + " ('' clears it)")
def set_phone_command(
    email: str, sip_username: str | None, telephony_credential_id: str | None
) -> None:
    """Change an agent's SIP username and/or telephony credential."""
    if sip_username is None and telephony_credential_id is None:
        raise click.UsageError("give --sip-username and/or --telephony-credential-id")
    try:
        set_phone(email, sip_username, telephony_credential_id)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"updated {email}")


@users_cli.command("set-role")
@click.argument("email", callback=_storable_argument)
@click.argument("role", type=click.Choice(ROLES))
def set_role_command(email: str, role: str) -> None:
    """Make an agent a supervisor, or a supervisor an agent again."""
    try:
        set_role(email, role)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{email} is now {'a supervisor' if role == SUPERVISOR else 'an agent'}")


def _change_and_end_sessions(email: str, assignment: str, *values: str) -> None:
    """Change one agent's account (`assignment`: this module's own SQL, never user input), then
    end every session of theirs; ClickException when no agent has that email."""
    with get_db().connection() as conn, conn.cursor() as cur:
        cur.execute(
            f"UPDATE users SET {assignment}, updated_at = now()"
            " WHERE lower(email) = lower(%s) RETURNING id::text",
            (*values, email),
        )
        found = cur.fetchone()
    if found is None:
        raise click.ClickException(f"no agent with email {email}")
    end_agent_sessions(found[0])


@users_cli.command("set-password")
@click.argument("email", callback=_storable_argument)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_password_command(email: str, password_stdin: bool) -> None:
    """Give an agent a new password (prompted for unless --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.ClickException(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    # Whoever knew the old password may be signed in with it.
    _change_and_end_sessions(email, "password_hash = %s", hash_password(password))
    click.echo(f"new password set for {email}; every session of the agent has ended")


@users_cli.command("deactivate")
@click.argument("email", callback=_storable_argument)
def deactivate_command(email: str) -> None:
    """Deactivate an agent: sign-in is refused and every session ends."""
    _change_and_end_sessions(email, "active = false")
    click.echo(f"deactivated {email}; every session of the agent has ended")


def init_app(app: Flask) -> None:
    """Register the CLI group."""
    app.cli.add_command(users_cli)
