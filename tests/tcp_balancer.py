"""A round-robin TCP balancer on loopback, standing in for nginx or a cloud load balancer.

Each new connection goes to the next backend in turn that accepts a connect; a backend that
refuses it (its process is gone) is skipped, so when a host dies new connections go to the
others. Open connections are never moved: when a backend dies, its clients see their connection
close, as they would behind a real balancer. With one backend it is a plain proxy.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable

from .tcp_proxy import Forwarder


class TcpBalancer(Forwarder):
    """Listens on 127.0.0.1:<port> and spreads connections over backends on 127.0.0.1."""

    def __init__(self, backends: list[int], tap: Callable[[int, bytes], None] | None = None):
        """`backends` are ports; `tap(backend, chunk)`, if given, sees what clients send."""
        self.backends = list(backends)
        self.tap = tap
        # The backend each client connection went to, by the client's (host, port).
        self.routes: dict[tuple[str, int], int] = {}
        self._next = 0
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"

    def backend_of(self, client: socket.socket) -> int:
        """The backend port that a client socket (connected to this balancer) was sent to."""
        return self.routes[client.getsockname()[:2]]

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, address = self._listener.accept()
            except OSError:
                return
            connected = self._connect()
            if connected is None:
                client.close()  # no backend is up: the client sees its connection closed
                continue
            backend, upstream = connected
            tap = None if self.tap is None else functools.partial(self.tap, backend)
            with self._lock:
                self.routes[address[:2]] = backend
                self._forward(client, upstream, tap)

    def _connect(self) -> tuple[int, socket.socket] | None:
        """A connection to the next backend that takes one, starting after the last one used."""
        for _ in range(len(self.backends)):
            backend = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", backend), timeout=5)
            except OSError:
                continue  # refused: that host is down, try the next
            upstream.settimeout(None)
            return backend, upstream
        return None

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._closed = True
        self._listener.close()
        self._drop_all()
