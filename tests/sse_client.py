"""A small Server-Sent Events client for tests: a raw socket, frames parsed as they arrive."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Frame:
    """One SSE frame: an event, a comment (ping), or a retry hint."""

    id: str | None
    event: str | None
    data: str | None
    comment: str | None = None
    retry: int | None = None

    @property
    def json(self) -> dict:
        """The data as JSON."""
        return json.loads(self.data or "null")


class SseClient:
    """GET an event stream and read its frames; every read has a deadline."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._buffer = b""
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode().split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self._body = b""
        self.last_event_id: str | None = None

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("stream closed")
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _more_body(self) -> None:
        if not self.chunked:
            chunk = self._buffer or self.sock.recv(65536)
            self._buffer = b""
            if not chunk:
                raise ConnectionError("stream closed")
            self._body += chunk
            return
        size = int(self._read_until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            self._read_until(b"\r\n")  # the (empty) trailer's end: the response is over
            raise ConnectionError("stream ended")
        while len(self._buffer) < size + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("stream closed")
            self._buffer += chunk
        self._body += self._buffer[:size]
        self._buffer = self._buffer[size + 2 :]

    def next_frame(self) -> Frame:
        """The next frame; socket.timeout if none arrives in time, ConnectionError at the end."""
        while b"\n\n" not in self._body:
            self._more_body()
        raw, _, self._body = self._body.partition(b"\n\n")
        fields: dict[str, str] = {}
        comment = None
        for line in raw.decode().split("\n"):
            if line.startswith(":"):
                comment = line[1:].strip()
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        frame = Frame(
            fields.get("id"),
            fields.get("event"),
            fields.get("data"),
            comment,
            int(fields["retry"]) if "retry" in fields else None,
        )
        if frame.id:
            self.last_event_id = frame.id
        return frame

    def next_event(self, within: float = 15.0) -> Frame:
        """The next frame that is an event (pings and retry hints skipped), within `within` s."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            frame = self.next_frame()
            if frame.event:
                return frame
        raise TimeoutError("no event arrived, only heartbeats")

    def events(self, count: int) -> list[Frame]:
        """The next `count` events."""
        return [self.next_event() for _ in range(count)]

    def frames_until_end(self) -> list[Frame]:
        """Every frame until the server ends the stream (socket.timeout if it does not)."""
        frames = []
        while True:
            try:
                frames.append(self.next_frame())
            except ConnectionError:
                return frames

    def server_closed(self) -> bool:
        """True when the server closes the connection (within the read timeout), sending nothing."""
        if self._buffer:
            return False
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def serving_pid(self, candidates: list[int]) -> int | None:
        """Which of these processes holds the server end of this connection (Linux /proc)."""
        local_port = self.sock.getsockname()[1]
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                cols = row.split()
                if int(cols[2].rsplit(":", 1)[1], 16) == local_port:
                    inodes.add(cols[9])
        for pid in candidates:
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return pid
            except OSError:
                continue
        return None

    def close(self) -> None:
        """Hang up."""
        self.sock.close()
