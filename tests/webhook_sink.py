"""Local servers for the simulator tests: any WSGI app in a thread, and a webhook sink."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # one access-log line per request would only clutter test output


class ThreadedServer:
    """Serves a WSGI app on a free 127.0.0.1 port from a daemon thread."""

    def __init__(self, app: Any, name: str = "test-server") -> None:
        self._server = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        # A short poll interval lets stop() return quickly.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=name,
            daemon=True,
        )

    def start(self) -> ThreadedServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class ReceivedWebhook:
    """One POST the sink received, with the exact bytes and the status it answered."""

    headers: Headers  # case-insensitive, as HTTP's are
    body: bytes
    status: int
    received_at: float

    @property
    def json(self) -> dict[str, Any]:
        """The body, parsed."""
        return json.loads(self.body)

    @property
    def event_type(self) -> str:
        """data.event_type."""
        return self.json["data"]["event_type"]

    @property
    def payload(self) -> dict[str, Any]:
        """data.payload."""
        return self.json["data"]["payload"]


class WebhookSink:
    """Records webhooks POSTed to /webhook; answers 200, or a scripted status for the next ones."""

    def __init__(self) -> None:
        self.received: list[ReceivedWebhook] = []
        self._statuses: deque[int] = deque()
        self._changed = threading.Condition()
        self._server = ThreadedServer(self._wsgi, name="webhook-sink")

    @property
    def url(self) -> str:
        """Where to send webhooks."""
        return f"{self._server.url}/webhook"

    def start(self) -> WebhookSink:
        """Start serving."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.stop()

    def answer_next(self, status: int, times: int = 1) -> None:
        """Answer the next `times` webhooks with `status` instead of 200."""
        with self._changed:
            self._statuses.extend([status] * times)

    def reset(self) -> None:
        """Forget received webhooks and scripted statuses."""
        with self._changed:
            self.received.clear()
            self._statuses.clear()

    def webhooks(self, session_id: str | None = None) -> list[ReceivedWebhook]:
        """Received webhooks in arrival order, optionally of one call_session_id."""
        with self._changed:
            return [
                hook
                for hook in self.received
                if session_id is None or hook.payload.get("call_session_id") == session_id
            ]

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        if request.method != "POST" or request.path != "/webhook":
            return Response(status=404)(environ, start_response)
        body = request.get_data()
        with self._changed:
            status = self._statuses.popleft() if self._statuses else 200
            self.received.append(
                ReceivedWebhook(Headers(request.headers), body, status, time.time())
            )
            self._changed.notify_all()
        return Response(b"{}", status=status, mimetype="application/json")(environ, start_response)
