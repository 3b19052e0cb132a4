"""A TCP proxy on loopback that a test can cut, to make PostgreSQL or Redis unreachable.

The target is a TCP address, or a Unix socket (the embedded PostgreSQL listens on one).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class Forwarder:
    """What the proxy and tests/tcp_balancer.py share: a listener on 127.0.0.1:<port>, bytes
    piped both ways between each client and its upstream, and dropping connections."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        raise NotImplementedError

    def _forward(
        self,
        client: socket.socket,
        upstream: socket.socket,
        tap: Callable[[bytes], None] | None = None,
    ) -> None:
        """Pipe bytes both ways (call with the lock held); `tap` sees what the client sends."""
        self._open.update((client, upstream))
        threading.Thread(target=self._pipe, args=(client, upstream, tap), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def _pipe(
        self, source: socket.socket, sink: socket.socket, tap: Callable[[bytes], None] | None
    ) -> None:
        try:
            while chunk := source.recv(65536):
                if tap is not None:
                    tap(chunk)
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

    def _drop_all(self) -> None:
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            self._drop(sock)


class TcpProxy(Forwarder):
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops every connection until `restore()`."""

    def __init__(self, target: tuple[str, int] | str):
        self.target = target
        self._cut = False
        super().__init__()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    client.close()
                    continue
                try:
                    upstream = self._connect()
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self._forward(client, upstream)

    @classmethod
    def for_url(cls, url: str, default_port: int) -> TcpProxy:
        """A proxy to the server a postgresql:// or redis:// URL names."""
        parts = urlsplit(url)
        socket_dir = dict(parse_qsl(parts.query)).get("host", "")
        if socket_dir.startswith("/"):
            return cls(f"{socket_dir}/.s.PGSQL.{parts.port or default_port}")
        return cls((parts.hostname or "127.0.0.1", parts.port or default_port))

    def _connect(self) -> socket.socket:
        if isinstance(self.target, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.settimeout(5)
            upstream.connect(self.target)
            return upstream
        return socket.create_connection(self.target, timeout=5)

    def cut(self) -> None:
        """Close every open connection and refuse new ones."""
        with self._lock:
            self._cut = True
        self._drop_all()

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Stop listening and drop everything."""
        self._closed = True
        self.cut()
        self._listener.close()


def through_proxy(url: str, proxy: TcpProxy) -> str:
    """The same URL, pointed at the proxy (over TCP, even if the server's socket is Unix)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
    return urlunsplit(
        parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host, query=query)
    )
