"""Telnyx-shaped errors for the simulated Call Control API.

Codes marked "documented" appear in Telnyx's published API error list; the others are explained
where they are defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    """A Telnyx error code and its title."""

    code: str
    title: str


# Documented general API codes.
MISSING_PARAMETER = ErrorCode("10004", "Missing required parameter")
RESOURCE_NOT_FOUND = ErrorCode("10005", "Resource not found")
UNEXPECTED_ERROR = ErrorCode("10007", "Unexpected error")
AUTHENTICATION_FAILED = ErrorCode("10009", "Authentication failed")
BAD_REQUEST = ErrorCode("10015", "Bad Request")
INVALID_JSON = ErrorCode("10023", "Invalid JSON")

# Documented Call Control code.
INVALID_CALL_CONTROL_ID = ErrorCode("90015", "Invalid Call Control ID")
# What Telnyx answers for a command on a finished call (the service's client relies on it).
CALL_ALREADY_ENDED = ErrorCode("90018", "Call has already ended")
# The code the service's client expects for "answer the call first"; not in the published list.
CALL_NOT_ANSWERED = ErrorCode("90034", "Call not answered yet")
# The simulator's own choice for a command the leg's state does not allow (reject after answer,
# a second answer or transfer, record_start while recording). Telnyx publishes no code for it.
INVALID_CALL_STATE = ErrorCode("90035", "Invalid call state")


class TelnyxApiError(Exception):
    """A refusal with an HTTP status and a Telnyx error body."""

    def __init__(self, status: int, error: ErrorCode, detail: str, pointer: str | None = None):
        super().__init__(f"{error.code} {error.title}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.pointer = pointer

    @property
    def code(self) -> str:
        """The Telnyx error code."""
        return self.error.code

    def body(self) -> dict[str, Any]:
        """The JSON body Telnyx sends with this error."""
        entry: dict[str, Any] = {
            "code": self.error.code,
            "title": self.error.title,
            "detail": self.detail,
        }
        if self.pointer is not None:
            entry["source"] = {"pointer": self.pointer}
        return {"errors": [entry]}


def invalid_parameter(name: str, detail: str) -> TelnyxApiError:
    """422 for a parameter with a value Telnyx would not accept."""
    return TelnyxApiError(422, BAD_REQUEST, detail, pointer=f"/{name}")


def missing_parameter(name: str) -> TelnyxApiError:
    """422 for a required parameter that was not sent."""
    return TelnyxApiError(422, MISSING_PARAMETER, f"'{name}' is required", pointer=f"/{name}")
