"""`flask sim ...`: start the simulator, or place a simulated inbound call through it."""

from __future__ import annotations

import click
import requests
from flask.cli import AppGroup

from .server import DEFAULT_HOST, DEFAULT_KEY_FILE, DEFAULT_PORT, DEFAULT_WEBHOOK_URL

DEFAULT_SIM_URL = f"http://127.0.0.1:{DEFAULT_PORT}"

sim_cli = AppGroup("sim", help="The local Telnyx simulator.")


@sim_cli.command("call", with_appcontext=False)
@click.option("--from", "from_", required=True, help="Caller number, E.164 (+13125550147).")
@click.option("--to", required=True, help="The number dialled, E.164.")
@click.option("--name", default=None, help="Caller ID name.")
@click.option(
    "--sim-url", envvar="SIM_URL", default=DEFAULT_SIM_URL, show_default=True, help="Or SIM_URL."
)
def call(from_: str, to: str, name: str | None, sim_url: str) -> None:
    """Place an inbound call through the simulator and print its call_control_id."""
    body = {"from": from_, "to": to}
    if name is not None:
        body["caller_name"] = name
    try:
        response = requests.post(f"{sim_url.rstrip('/')}/sim/calls", json=body, timeout=10)
    except requests.RequestException as error:
        raise click.ClickException(f"cannot reach the simulator at {sim_url}: {error}") from None
    if response.status_code != 201:
        try:
            reason = response.json().get("error")
        except ValueError:
            reason = None
        raise click.ClickException(
            f"the simulator refused the call (HTTP {response.status_code}): "
            f"{reason or response.text[:200]}"
        )
    click.echo(response.json()["call_control_id"])


@sim_cli.command("serve", with_appcontext=False)
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", envvar="SIM_PORT", type=int, default=DEFAULT_PORT, show_default=True)
@click.option(
    "--webhook-url", envvar="SIM_WEBHOOK_URL", default=DEFAULT_WEBHOOK_URL, show_default=True
)
@click.option("--signing-key-file", default=DEFAULT_KEY_FILE, show_default=True)
@click.option("--public-url", envvar="SIM_PUBLIC_URL", default=None)
@click.option("--api-key", envvar="SIM_API_KEY", default=None)
@click.option("--signing-seed", envvar="SIM_SIGNING_SEED", default=None, hidden=True)
def serve_command(
    host: str,
    port: int,
    webhook_url: str,
    signing_key_file: str,
    public_url: str | None,
    api_key: str | None,
    signing_seed: str | None,
) -> None:
    """Run the simulator in the foreground (as python -m telnyx_flask.simulator does)."""
    from .server import configure_logging, serve

    configure_logging()
    try:
        serve(
            host=host,
            port=port,
            webhook_url=webhook_url or None,
            signing_seed=signing_seed,
            signing_key_file=signing_key_file,
            public_url=public_url,
            api_key=api_key,
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from None
