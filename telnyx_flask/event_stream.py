"""The call-event stream: what pages are told, and where a page resumes (replay).

Every change a page must see is an entry of one capped Redis stream (the Lua scripts add the
state changes; `announce` adds the rest). A page opening GET /api/telnyx/events gets either a
snapshot with the stream id it was read at, or, resuming with Last-Event-ID, every entry after
that id (`events_after`) unless it has been trimmed away (`aged_out`). push.py fans the entries
out to the open pages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import redis

from .call_status import summaries
from .errors import StorageUnavailable
from .redis_store import REDIS_ERRORS, RedisClient, RedisKeys, lua_script, run_over_members, text

# Entries read per round trip when a page catches up from its Last-Event-ID.
CATCH_UP_PAGE = 200

STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


def parse_stream_id(value: str | None) -> tuple[int, int] | None:
    """A Redis stream id "ms-seq" as a comparable pair, or None when malformed.

    ASCII digits only: str.isdigit() also takes "²" and Arabic-Indic digits, which int() or
    Redis then refuse.
    """
    match = STREAM_ID.fullmatch(value) if value else None
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


class EventStream:
    """The stream's writer and readers; created once per process, shared by its requests."""

    def __init__(self, client: RedisClient, keys: RedisKeys, maxlen: int):
        self.client = client
        self.keys = keys
        self.maxlen = maxlen
        self._snapshot = client.register_script(lua_script("snapshot.lua"))

    def announce(self, event: str, data: dict[str, Any]) -> None:
        """Add one event to the call-event stream (what the Lua scripts do for state changes)."""
        try:
            self.client.xadd(
                self.keys.events,
                {"event": event, "data": json.dumps(data)},
                maxlen=self.maxlen,
                approximate=True,
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc

    def snapshot(self) -> tuple[str, list[dict[str, Any]]]:
        """(newest stream id, calls ringing or in progress), read atomically."""
        try:
            newest_id, replies = run_over_members(
                self.client, self._snapshot, self.keys.active, self.keys, (self.keys.events,)
            )
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        return text(newest_id), summaries(replies)

    def events_after(self, stream_id: str, page_size: int = CATCH_UP_PAGE) -> Iterator[Any]:
        """Stream entries after `stream_id`, up to the newest one when called.

        Read `page_size` at a time, so a page resuming from far back never holds the stream's
        whole cap in memory. Entries added later are not chased: the caller's live queue has them.
        """
        try:
            newest = self.client.xrevrange(self.keys.events, count=1)
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        if not newest:
            return
        end = text(newest[0][0])
        after = stream_id
        while True:
            try:
                page = self.client.xrange(
                    self.keys.events, min=f"({after}", max=end, count=page_size
                )
            except REDIS_ERRORS as exc:
                raise StorageUnavailable("redis", str(exc)) from exc
            if not page:  # redis-py types XRANGE's reply as optional; empty means done
                return
            yield from page
            if len(page) < page_size:
                return
            after = text(page[-1][0])

    def aged_out(self, stream_id: str) -> bool:
        """True when entries after `stream_id` were trimmed away, or the id is not this stream's."""
        try:
            info = self.client.xinfo_stream(self.keys.events)
        except redis.ResponseError:
            return True  # no stream at all: an id from before a flush or from elsewhere
        except REDIS_ERRORS as exc:
            raise StorageUnavailable("redis", str(exc)) from exc
        wanted = parse_stream_id(stream_id) or (0, 0)
        newest = parse_stream_id(text(info.get("last-generated-id"))) or (0, 0)
        deleted = parse_stream_id(text(info.get("max-deleted-entry-id"))) or (0, 0)
        first_entry = info.get("first-entry")
        first = parse_stream_id(text(first_entry[0])) if first_entry else None
        # MAXLEN trims from the head without recording what it removed (Redis 7.0): when
        # anything was trimmed and the resume point is older than the oldest entry kept, the
        # entries right after it may be gone.
        trimmed = info.get("entries-added", 0) > info.get("length", 0)
        older_than_kept = wanted < (first or newest)
        return wanted > newest or deleted > wanted or (trimmed and older_than_kept)
