"""A round-robin TCP balancer on loopback, standing in for nginx or a cloud load balancer.

Each new connection goes to the next backend in turn that accepts a connect; a backend that
refuses it (its process is gone) is skipped, so when a host dies new connections go to the
others. Open connections are never moved: when a backend dies, its clients see their connection
close, as they would behind a real balancer. With one backend it is a plain proxy.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class TcpBalancer:
    """Listens on 127.0.0.1:<port> and spreads connections over backends on 127.0.0.1."""

    def __init__(self, backends: list[int], tap: Callable[[int, bytes], None] | None = None):
        """`backends` are ports; `tap(backend, chunk)`, if given, sees what clients send."""
        self.backends = list(backends)
        self.tap = tap
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The backend each client connection went to, by the client's (host, port).
        self.routes: dict[tuple[str, int], int] = {}
        self._next = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

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
            with self._lock:
                self.routes[address[:2]] = backend
                self._open.update((client, upstream))
            threading.Thread(
                target=self._pipe, args=(client, upstream, backend), daemon=True
            ).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

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

    def _pipe(self, source: socket.socket, sink: socket.socket, backend: int | None) -> None:
        try:
            while chunk := source.recv(65536):
                if backend is not None and self.tap is not None:
                    self.tap(backend, chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            self._drop(source)
            self._drop(sink)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            self._drop(sock)
