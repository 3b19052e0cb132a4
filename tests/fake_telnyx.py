"""A real local HTTP server that imitates the Telnyx Call Control v2 API for tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

OK_BODY = {"data": {"result": "ok"}}
FAKE_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJpc3MiOiJmYWtlLXRlbG55eCIsInN1YiI6ImZha2UtY3JlZGVudGlhbCJ9."
    "ZmFrZS1zaWduYXR1cmU"
)

# Error bodies Telnyx sends for common statuses, used when a scripted error has no body.
DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    401: ("10009", "Authentication failed"),
    403: ("10010", "Authorization failed"),
    404: ("10005", "Resource not found"),
    422: ("90018", "Call has already ended"),
    429: ("10011", "Too many requests"),
    500: ("10007", "Unexpected error"),
    503: ("10007", "Unexpected error"),
}


def error_body(code: str | int, title: str, detail: str = "") -> dict[str, Any]:
    """Return a body in Telnyx's error shape."""
    return {"errors": [{"code": code, "title": title, "detail": detail or title, "source": {}}]}


@dataclass(frozen=True)
class ReceivedCommand:
    """One Call Control command the fake received."""

    action: str
    call_control_id: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class _Scripted:
    status: Any  # an int HTTP status, or FakeTelnyx.DROP
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a slow Telnyx)


class _Drop:
    def __repr__(self) -> str:
        return "FakeTelnyx.DROP"


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # one access-log line per request would only clutter test output


class FakeTelnyx:
    """Serves /v2/calls/<id>/actions/<action> on 127.0.0.1, recording and scripting answers."""

    DROP = _Drop()

    def __init__(self) -> None:
        self.commands: list[ReceivedCommand] = []
        self.token_requests: list[str] = []
        self._scripts: dict[str, deque[_Scripted]] = defaultdict(deque)
        self._changed = threading.Condition()
        self._urls = Map(
            [
                Rule("/v2/calls/<path:call_control_id>/actions/<action>", endpoint="command"),
                Rule("/v2/calls/<path:call_control_id>", endpoint="status"),
                Rule("/v2/telephony_credentials/<credential_id>/token", endpoint="token"),
            ]
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The API root to give a client, like http://127.0.0.1:PORT/v2."""
        if self._server is None:
            raise RuntimeError("FakeTelnyx is not started")
        return f"http://127.0.0.1:{self._server.server_port}/v2"

    def start(self) -> FakeTelnyx:
        """Start serving in a daemon thread on a free port."""
        if self._server is not None:
            return self
        self._server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        # A short poll interval lets stop() return quickly instead of after up to half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-telnyx",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeTelnyx:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def script(
        self,
        action: str,
        status: int | _Drop,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """Queue the next `times` answers for `action`: a status (or DROP), body and headers,
        sent after `delay` seconds. The call status lookup (GET /v2/calls/<id>) is "status".

        body may be a dict/list (sent as JSON), str/bytes (sent as text/plain), or None: then an
        error status gets a Telnyx-shaped error body and a 2xx gets {"data": {"result": "ok"}}.
        """
        with self._changed:
            for _ in range(times):
                self._scripts[action].append(_Scripted(status, body, dict(headers or {}), delay))

    def reset(self) -> None:
        """Forget all scripted answers and received commands."""
        with self._changed:
            self._scripts.clear()
            self.commands.clear()
            self.token_requests.clear()
            self._changed.notify_all()

    def received(self, action: str | None = None) -> list[ReceivedCommand]:
        """Return a snapshot of the commands received so far, optionally for one action."""
        with self._changed:
            return [c for c in self.commands if action is None or c.action == action]

    def wait_for_commands(
        self, n: int, action: str | None = None, timeout: float = 5.0
    ) -> list[ReceivedCommand]:
        """Block until at least n commands (of `action`, if given) arrived; return them."""

        def matching() -> list[ReceivedCommand]:
            return [c for c in self.commands if action is None or c.action == action]

        with self._changed:
            if not self._changed.wait_for(lambda: len(matching()) >= n, timeout=timeout):
                got = [(c.action, c.call_control_id) for c in self.commands]
                what = f"{action!r} commands" if action else "commands"
                raise AssertionError(f"expected {n} {what} within {timeout}s, received: {got}")
            return matching()

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        adapter = self._urls.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
        except Exception:
            response = _json(404, error_body("10005", "Resource not found", request.path))
            return response(environ, start_response)
        if endpoint == "status" and request.method == "GET":
            response = self._command(request, "status", args["call_control_id"], environ)
        elif request.method != "POST":
            response = _json(405, error_body("10015", "Method not allowed", request.method))
        elif endpoint == "token":
            with self._changed:
                self.token_requests.append(args["credential_id"])
            response = Response(FAKE_JWT, status=201, mimetype="text/plain")
        else:
            response = self._command(request, args["action"], args["call_control_id"], environ)
        return response(environ, start_response)

    def _command(
        self, request: Request, action: str, call_control_id: str, environ: dict[str, Any]
    ) -> Response:
        body = request.get_json(silent=True)
        received = ReceivedCommand(
            action=action,
            call_control_id=call_control_id,
            body=body if isinstance(body, dict) else {},
            headers=dict(request.headers),
        )
        with self._changed:
            self.commands.append(received)
            scripted = self._scripts[action].popleft() if self._scripts[action] else None
            self._changed.notify_all()
        if scripted is not None and scripted.delay:
            time.sleep(scripted.delay)  # a slow Telnyx: the client's deadline is what is tested
        if scripted is None:
            return _json(200, _alive(call_control_id) if action == "status" else OK_BODY)
        if scripted.status is FakeTelnyx.DROP:
            # Shutting down (not closing) the socket makes werkzeug's write fail with a
            # BrokenPipeError, which it treats as a dropped client; the client sees EOF.
            environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
            return Response(b"", status=200)
        return _scripted_response(scripted)


def _alive(call_control_id: str) -> dict[str, Any]:
    """GET /v2/calls/<id> for a call that is up (script "status" for anything else)."""
    return {
        "data": {
            "record_type": "call",
            "call_control_id": call_control_id,
            "is_alive": True,
            "call_duration": 1,
        }
    }


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


def _scripted_response(scripted: _Scripted) -> Response:
    status, body, headers = scripted.status, scripted.body, scripted.headers
    if body is None:
        if status >= 400:
            code, title = DEFAULT_ERRORS.get(status, ("10007", "Unexpected error"))
            body = error_body(code, title)
        else:
            body = OK_BODY
    if isinstance(body, (str, bytes)):
        response = Response(body, status=status, mimetype="text/plain")
        response.headers.update(headers)
        return response
    return _json(status, body, headers)
