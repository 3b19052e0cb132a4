"""What keeps an open stream small (docs/bench/stream-memory.md) still behaves as before.

A Subscriber is a list and an Event rather than a queue.Queue; an open stream's Redis and
PostgreSQL calls run on a short-lived greenlet of their own under gevent (push._shallow).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from telnyx_flask.push import Message, Subscriber


def message(n: int) -> Message:
    return Message.build(f"{n}-0", "call.ringing", "{}")


def test_frames_come_out_in_the_order_offered():
    subscriber = Subscriber(8)
    for n in range(1, 6):
        assert subscriber.offer(message(n))
    assert [subscriber.next_frame(1).id for _ in range(5)] == [f"{n}-0" for n in range(1, 6)]


def test_a_subscriber_with_nothing_queued_gets_none():
    assert Subscriber(8).next_frame(0.01) is None


def test_a_full_subscriber_is_dropped_and_ended():
    subscriber = Subscriber(2)
    assert subscriber.offer(message(1)) and subscriber.offer(message(2))
    assert not subscriber.offer(message(3))
    assert subscriber.dropped and subscriber.ended
    # An ended stream writes nothing more, whatever is still queued.
    assert subscriber.next_frame(1) is None


def test_ending_wakes_a_waiting_stream_with_its_farewell():
    subscriber = Subscriber(8)
    woke: list[Message | None] = []
    waiting = threading.Thread(target=lambda: woke.append(subscriber.next_frame(60)))
    waiting.start()
    subscriber.end(b"retry: 1000\n\n")
    waiting.join(30)
    assert not waiting.is_alive()
    assert woke == [None]
    assert subscriber.ended and subscriber.farewell == b"retry: 1000\n\n"


def test_a_frame_offered_to_a_waiting_stream_wakes_it():
    subscriber = Subscriber(8)
    woke: list[Message | None] = []
    waiting = threading.Thread(target=lambda: woke.append(subscriber.next_frame(60)))
    waiting.start()
    subscriber.offer(message(7))
    waiting.join(30)
    assert not waiting.is_alive()
    assert [frame.id for frame in woke if frame] == ["7-0"]


def test_a_farewell_given_earlier_is_kept_when_the_stream_is_then_dropped():
    subscriber = Subscriber(1)
    subscriber.end(b"retry: 900\n\n")
    subscriber.offer(message(1))
    subscriber.offer(message(2))  # full: dropped, with no farewell of its own
    assert subscriber.dropped and subscriber.farewell == b"retry: 900\n\n"


SHALLOW_UNDER_GEVENT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import contextvars

    import gevent
    import greenlet

    from telnyx_flask.push import _shallow

    request_id = contextvars.ContextVar("request_id")

    def where(value):
        gevent.sleep(0)  # blocks, as a Redis call does
        return value, request_id.get(), greenlet.getcurrent()

    def fails():
        gevent.sleep(0)
        raise LookupError("from the helper")

    def stream():
        request_id.set("r-1")
        value, seen, ran_on = _shallow(where, 42)
        assert (value, seen) == (42, "r-1")
        assert ran_on is not greenlet.getcurrent()
        try:
            _shallow(fails)
        except LookupError as error:
            assert str(error) == "from the helper"
        else:
            raise AssertionError("the helper's exception was not raised in the caller")
        return "ok"

    print(gevent.spawn(stream).get())
    """
)


def test_shallow_calls_return_raise_and_see_the_callers_context_under_gevent():
    result = subprocess.run(
        [sys.executable, "-c", SHALLOW_UNDER_GEVENT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    # A failing call is the caller's to handle: gevent prints no traceback of its own.
    assert "Traceback" not in result.stderr
