"""GroupCommit on its own: who goes at once, who gathers, and who learns what (real threads)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from telnyx_flask.group_commit import GroupCommit

from .helpers import wait_until


class Recorder:
    """An `apply` that records each batch, answers item * 10 (or the item itself when it is an
    exception), and, while `held`, keeps each batch in flight until released."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.held = False
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, items: list) -> list:
        self.batches.append(items)
        self.started.set()
        if self.held:
            assert self.release.wait(30), "the test never released the batch"
        return [item if isinstance(item, Exception) else item * 10 for item in items]


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=80) as executor:
        yield executor


def hold_first_batch(commit: GroupCommit, recorder: Recorder, pool, item) -> Future:
    """Put a batch in flight and keep it there until recorder.release is set."""
    recorder.held = True
    first = pool.submit(commit.submit, item)
    assert recorder.started.wait(10)
    return first


def test_a_lone_item_goes_at_once_without_waiting_out_the_window():
    recorder = Recorder()
    commit = GroupCommit(recorder, window=60.0, max_items=64)
    started = time.monotonic()
    assert commit.submit(7) == 70
    # Waiting out the window would have taken a minute.
    assert time.monotonic() - started < 30
    assert recorder.batches == [[7]]


def test_items_that_arrive_while_a_batch_is_in_flight_go_together_when_it_is_done(pool):
    recorder = Recorder()
    commit = GroupCommit(recorder, window=60.0, max_items=64)
    first = hold_first_batch(commit, recorder, pool, 1)
    others = [pool.submit(commit.submit, n) for n in range(2, 12)]
    wait_until(lambda: commit.gathering() == 10, interval=0.005)
    recorder.held = False
    recorder.release.set()
    assert first.result(10) == 10
    assert [future.result(10) for future in others] == [n * 10 for n in range(2, 12)]
    assert recorder.batches[0] == [1]
    assert sorted(recorder.batches[1]) == list(range(2, 12))
    assert (commit.batches, commit.items) == (2, 11)


def test_a_full_batch_leaves_without_waiting_and_the_rest_gather_behind_it(pool):
    recorder = Recorder()
    commit = GroupCommit(recorder, window=60.0, max_items=3)
    first = hold_first_batch(commit, recorder, pool, 0)
    # Three fill a batch, which leaves at once even though the first is still in flight.
    full = [pool.submit(commit.submit, n) for n in (1, 2, 3)]
    wait_until(lambda: len(recorder.batches) == 2, interval=0.005)
    assert sorted(recorder.batches[1]) == [1, 2, 3]
    late = [pool.submit(commit.submit, n) for n in (4, 5)]
    wait_until(lambda: commit.gathering() == 2, interval=0.005)
    recorder.release.set()
    assert [f.result(10) for f in [first, *full, *late]] == [0, 10, 20, 30, 40, 50]
    assert sorted(recorder.batches[2]) == [4, 5]


def test_a_gathering_batch_leaves_after_the_window_even_if_the_one_in_flight_is_stuck(pool):
    recorder = Recorder()
    commit = GroupCommit(recorder, window=0.05, max_items=64)
    first = hold_first_batch(commit, recorder, pool, 1)
    # The first batch is stuck; the second still goes once its window has passed.
    recorder.held = False
    second = pool.submit(commit.submit, 2)
    assert second.result(10) == 20
    assert not first.done()
    recorder.release.set()
    assert first.result(10) == 10


def test_an_item_that_fails_fails_alone(pool):
    recorder = Recorder()
    commit = GroupCommit(recorder, window=60.0, max_items=64)
    first = hold_first_batch(commit, recorder, pool, 1)
    refused = ValueError("this one is bad")
    futures = [pool.submit(commit.submit, item) for item in (2, refused, 3)]
    wait_until(lambda: commit.gathering() == 3, interval=0.005)
    recorder.release.set()
    assert first.result(10) == 10
    assert futures[0].result(10) == 20
    assert futures[1].exception(10) is refused
    assert futures[2].result(10) == 30
    assert len(recorder.batches) == 2


def test_when_apply_raises_every_item_of_the_batch_gets_the_error_and_the_next_batch_runs(pool):
    failing = threading.Event()
    failing.set()
    batches: list[list[int]] = []
    gate = threading.Event()

    def apply(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            gate.wait(30)
            return [n * 10 for n in items]
        if failing.is_set():
            raise ConnectionError("the store went away")
        return [n * 10 for n in items]

    commit = GroupCommit(apply, window=60.0, max_items=64)
    first = pool.submit(commit.submit, 1)
    wait_until(lambda: len(batches) == 1, interval=0.005)
    doomed = [pool.submit(commit.submit, n) for n in (2, 3, 4)]
    wait_until(lambda: commit.gathering() == 3, interval=0.005)
    gate.set()
    assert first.result(10) == 10
    assert [type(f.exception(10)) for f in doomed] == [ConnectionError] * 3
    failing.clear()
    # Nothing is left stuck: the next item goes at once and succeeds.
    assert commit.submit(5) == 50
    assert commit.gathering() == 0


def test_apply_answering_the_wrong_number_of_outcomes_fails_the_batch_instead_of_mixing_answers():
    commit = GroupCommit(lambda items: [], window=60.0, max_items=64)
    with pytest.raises(RuntimeError, match="apply gave 0 outcomes for 1 items"):
        commit.submit(0)


@pytest.mark.parametrize(("window", "max_items"), [(0.0, 64), (-1.0, 64), (0.002, 0)])
def test_a_group_commit_needs_a_window_and_room_for_one_item(window, max_items):
    with pytest.raises(ValueError, match="window > 0 and max_items >= 1"):
        GroupCommit(lambda items: items, window=window, max_items=max_items)
