"""python -m telnyx_flask.simulator [--port 8710] [--webhook-url URL] [--signing-key-file PATH]

Environment: SIM_PORT, SIM_WEBHOOK_URL, SIM_SIGNING_SEED (base64 of 32 bytes), SIM_PUBLIC_URL,
SIM_API_KEY. Options win over the environment.
"""

from __future__ import annotations

import argparse
import os
import sys

from .server import (
    DEFAULT_HOST,
    DEFAULT_KEY_FILE,
    DEFAULT_PORT,
    DEFAULT_WEBHOOK_URL,
    configure_logging,
    serve,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options, with defaults from the SIM_* environment variables."""
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m telnyx_flask.simulator",
        description="A local stand-in for Telnyx Call Control: its API and its signed webhooks.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    # argparse converts a string default with `type`, so a bad SIM_PORT gets a usage error.
    parser.add_argument("--port", type=int, default=env.get("SIM_PORT", str(DEFAULT_PORT)))
    parser.add_argument(
        "--webhook-url",
        default=env.get("SIM_WEBHOOK_URL", DEFAULT_WEBHOOK_URL),
        help="where webhooks are sent (the service's /api/telnyx/webhook)",
    )
    parser.add_argument(
        "--signing-key-file",
        default=DEFAULT_KEY_FILE,
        help="kept signing key, created (mode 0600) if missing; ignored with SIM_SIGNING_SEED",
    )
    parser.add_argument(
        "--public-url",
        default=env.get("SIM_PUBLIC_URL") or None,
        help="base of recording URLs (default: the address each request came to)",
    )
    parser.add_argument("--api-key", default=env.get("SIM_API_KEY") or None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until stopped."""
    args = parse_args(argv)
    configure_logging()
    try:
        serve(
            host=args.host,
            port=args.port,
            webhook_url=args.webhook_url or None,
            signing_seed=os.environ.get("SIM_SIGNING_SEED") or None,
            signing_key_file=args.signing_key_file,
            public_url=args.public_url,
            api_key=args.api_key,
        )
    except (ValueError, OSError) as error:
        print(f"telnyx simulator: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
