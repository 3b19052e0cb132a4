"""Who may use the agent endpoints."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any


def agent_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an agent endpoint. Accounts and sign-in arrive with the agents issue (#3): until
    then this lets every request through, and it is the one place that will check them."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return view(*args, **kwargs)

    return wrapped
