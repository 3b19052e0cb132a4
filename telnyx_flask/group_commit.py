"""Group commit: requests that arrive together in one worker share one trip to storage.

A request hands its item to `GroupCommit.submit` and waits for its own outcome. When nothing is
in flight, the item goes at once, alone: under light load there is no window to wait out. When a
batch is already in flight, items that arrive meanwhile gather in the next batch, which leaves
as soon as the one in flight is done, when it holds `max_items`, or `window` seconds after it
opened, whichever comes first. The request that opened a batch runs it, in its own greenlet (or
thread), and then wakes the others, each with its own outcome.

`apply` takes the batch's items and returns one outcome per item, in order: a result, or an
exception for that item alone. An exception `apply` raises fails every item of the batch.
Nothing here knows about webhooks (webhook_intake.py supplies `apply`). Under gevent the lock
and events are gevent's (threading is monkey-patched before they are made); nothing is held
across a wait for storage.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Waiter(Generic[Item, Result]):
    """One request's place in a batch: its item, and its outcome once the batch has run."""

    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: Item):
        self.item = item
        self.done = threading.Event()
        self.result: Result | None = None
        self.error: BaseException | None = None

    def outcome(self) -> Result:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class _Batch(Generic[Item, Result]):
    """Items gathering to go together; `full` is set when the batch should leave."""

    __slots__ = ("full", "waiters")

    def __init__(self) -> None:
        self.waiters: list[_Waiter[Item, Result]] = []
        self.full = threading.Event()


class GroupCommit(Generic[Item, Result]):
    """Run `apply` over the items that arrive together, at most `max_items` at a time."""

    def __init__(
        self,
        apply: Callable[[list[Item]], Sequence[Result | Exception]],
        window: float,
        max_items: int,
    ):
        if window <= 0 or max_items < 1:
            raise ValueError("a group commit needs a window > 0 and max_items >= 1")
        self.apply = apply
        self.window = window
        self.max_items = max_items
        self._pid = -1
        self._lock = threading.Lock()
        self._gathering: _Batch[Item, Result] | None = None
        self._in_flight = 0
        self.batches = 0
        self.items = 0

    def submit(self, item: Item) -> Result:
        """Apply `item` with whatever arrives alongside it; its own result, or its own error."""
        self._after_fork()
        waiter: _Waiter[Item, Result] = _Waiter(item)
        with self._lock:
            batch = self._gathering
            leads = batch is None
            if batch is None:
                batch = _Batch()
                if self._in_flight:
                    self._gathering = batch  # a batch is in flight: gather behind it
                else:
                    batch.full.set()  # nothing in flight: go at once
            batch.waiters.append(waiter)
            if len(batch.waiters) >= self.max_items:
                self._close(batch)
        if leads:
            self._lead(batch)
        return waiter.outcome()

    def gathering(self) -> int:
        """How many items wait in the batch that is gathering (0 when none is)."""
        with self._lock:
            return len(self._gathering.waiters) if self._gathering is not None else 0

    def _lead(self, batch: _Batch[Item, Result]) -> None:
        deadline = time.monotonic() + self.window
        batch.full.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._close(batch)
            self._in_flight += 1
        waiters = batch.waiters
        try:
            outcomes = self.apply([waiter.item for waiter in waiters])
            if len(outcomes) != len(waiters):
                raise RuntimeError(f"apply gave {len(outcomes)} outcomes for {len(waiters)} items")
            for waiter, outcome in zip(waiters, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    waiter.error = outcome
                else:
                    waiter.result = outcome
        except BaseException as failure:  # every waiter must wake, whatever happened
            for waiter in waiters:
                waiter.error = failure
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
                self.batches += 1
                self.items += len(waiters)
                if not self._in_flight and self._gathering is not None:
                    self._close(self._gathering)  # the way is clear: the next batch goes now
            for waiter in waiters:
                waiter.done.set()

    def _close(self, batch: _Batch[Item, Result]) -> None:
        """Take no more items into `batch` and let it go (call with the lock held)."""
        if self._gathering is batch:
            self._gathering = None
        batch.full.set()

    def _after_fork(self) -> None:
        # A lock made before gunicorn forks (and before gevent patched threading) stays behind.
        if self._pid != os.getpid():
            self._lock = threading.Lock()
            self._gathering = None
            self._in_flight = 0
            self._pid = os.getpid()
