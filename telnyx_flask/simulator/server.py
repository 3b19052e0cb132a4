"""Running the simulator as its own process, on werkzeug's threaded server."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from . import EXTENSION, create_simulator_app
from .signing_key import load_or_create_seed, seed_from_base64

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8710
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:3000/api/telnyx/webhook"
DEFAULT_KEY_FILE = "var/simulator.key"


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    webhook_url: str | None = DEFAULT_WEBHOOK_URL,
    signing_seed: str | None = None,
    signing_key_file: str = DEFAULT_KEY_FILE,
    public_url: str | None = None,
    api_key: str | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C, after printing one line: the URL and the public key.

    The key comes from `signing_seed` (base64) if given, else from `signing_key_file`, which is
    created on first use so the service's TELNYX_PUBLIC_KEY stays valid across restarts.
    """
    seed = (
        seed_from_base64(signing_seed)
        if signing_seed
        else load_or_create_seed(Path(signing_key_file))
    )
    app = create_simulator_app(
        {
            "webhook_url": webhook_url,
            "signing_seed": seed,
            "public_url": public_url,
            "api_key": api_key,
        }
    )
    server = make_server(host, port, app, threaded=True)
    url = f"http://{host}:{server.server_port}"
    simulator = app.extensions[EXTENSION]
    print(
        f"Telnyx simulator on {url}  TELNYX_API_BASE={url}/v2  "
        f"TELNYX_PUBLIC_KEY={simulator.public_key}  webhooks to {webhook_url or '(not set)'}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        simulator.close()


def configure_logging() -> None:
    """Delivery problems and the access log go to stderr; stdout keeps the one start line."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
