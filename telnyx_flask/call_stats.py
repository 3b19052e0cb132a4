"""Counts over the call log that the supervisor's view and the daily report share: one SQL
select-list, so a tile and a report row can never disagree about what a number means.

- offered: every inbound call that ended (whatever became of it), by the moment it started;
- answered / missed / abandoned / declined / voicemail: call_logs.outcome;
- answered within the service level: answered by an agent at most SERVICE_LEVEL_SECONDS after it
  started ringing; the service level is those over the offered calls (None with none offered);
- average speed of answer: the mean wait of the calls agents answered (started_at to
  answered_at, sql/015);
- talk time: call_logs.duration of the answered calls (answer to hang-up).
"""

from __future__ import annotations

from typing import Any

OUTCOMES = ("answered", "missed", "abandoned", "declined", "voicemail")

# A call's wait before an agent answered, in seconds (never below 0 when clocks disagree).
WAIT_SECONDS = "GREATEST(0, EXTRACT(EPOCH FROM cl.answered_at - cl.started_at))"
ANSWERED = "cl.outcome = 'answered'"

# The totals' select-list over `call_logs cl`; %(service_level_seconds)s is its one parameter.
TOTALS_COLUMNS = ", ".join(
    (
        "count(*)",
        *(f"count(*) FILTER (WHERE cl.outcome = '{outcome}')" for outcome in OUTCOMES),
        # A log row from before sql/015 may lack answered_at: not counted as in time, as the
        # average speed of answer leaves it out too.
        f"count(*) FILTER (WHERE {ANSWERED} AND cl.answered_at IS NOT NULL"
        f" AND {WAIT_SECONDS} <= %(service_level_seconds)s)",
        f"avg({WAIT_SECONDS}) FILTER (WHERE {ANSWERED} AND cl.answered_at IS NOT NULL)",
        f"avg(cl.duration) FILTER (WHERE {ANSWERED})",
        f"COALESCE(sum(cl.duration) FILTER (WHERE {ANSWERED}), 0)",
    )
)
# offered, each outcome, in time, the speed of answer, the average and the total talk time.
TOTALS_WIDTH = 1 + len(OUTCOMES) + 4

# Which calls count: inbound ones, by when they started (the history's sort key, whose index
# serves the range).
SORT_KEY = "COALESCE(cl.started_at, cl.created_at)"
IN_RANGE = f"cl.direction = 'inbound' AND {SORT_KEY} >= %(start)s AND {SORT_KEY} < %(end)s"


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


# The names totals() gives TOTALS_COLUMNS' values, in their order (the report's CSV columns too).
FIELDS = (
    "offered",
    *OUTCOMES,
    "answered_within_service_level",
    "service_level",
    "average_speed_of_answer_seconds",
    "average_talk_seconds",
    "talk_seconds",
)
# What TOTALS_COLUMNS gives over no calls (counts 0, averages NULL, talk time 0): a day without
# calls has no row of its own in a grouped query (tests/test_reports.py checks the two agree).
NO_CALLS_ROW = (0,) * (1 + len(OUTCOMES) + 1) + (None, None, 0)


def totals(row: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
    """TOTALS_COLUMNS' values as the API shows them."""
    offered, *by_outcome = row[: 1 + len(OUTCOMES)]
    in_time, asa, average_talk, talk = row[1 + len(OUTCOMES) : TOTALS_WIDTH]
    values = (
        int(offered),
        *(int(n) for n in by_outcome),
        int(in_time),
        round(in_time / offered, 4) if offered else None,
        _rounded(asa),
        _rounded(average_talk),
        int(talk),
    )
    return dict(zip(FIELDS, values, strict=True))
