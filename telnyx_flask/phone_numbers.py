"""Phone numbers: the one set of rules for reading them (E.164), for the prospects import, the
history's phone filter and the test calls' numbers."""

from __future__ import annotations

import re

# Longest text taken as a phone number from a query string or a request body.
MAX_PHONE_LENGTH = 32
# What a typed phone number may contain: digits, +, brackets, dots, dashes and spaces.
PHONE_CHARACTERS = re.compile(r"[0-9+().\-\s]+")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def to_e164(raw: str) -> str:
    """Normalise a phone number to E.164; ValueError if it cannot be.

    Punctuation and spaces are dropped; a leading 00 becomes +; ten digits with no country code
    are taken as North American (+1), as the seed's numbers are.
    """
    text = raw.strip()
    digits = re.sub(r"[^0-9]", "", text)
    if text.startswith("+"):
        candidate = f"+{digits}"
    elif text.startswith("00"):
        candidate = f"+{digits[2:]}"
    elif len(digits) == 10:
        candidate = f"+1{digits}"
    elif len(digits) == 11 and digits.startswith("1"):
        candidate = f"+{digits}"
    else:
        raise ValueError(f"cannot read {raw!r} as a phone number with a country code")
    if not E164.match(candidate):
        raise ValueError(f"{raw!r} is not a valid E.164 number")
    return candidate


def normalise_phone(value: str) -> str:
    """The E.164 form of a phone filter: what to_e164 makes of it, else + and its digits.

    An unencoded + in a query string arrives as a space, so "+44..." comes in as " 44...": taking
    the digits as already carrying their country code finds the number all the same.
    """
    if len(value) > MAX_PHONE_LENGTH or not PHONE_CHARACTERS.fullmatch(value):
        raise ValueError("not a phone number")
    try:
        return to_e164(value)
    except ValueError:
        candidate = "+" + re.sub(r"\D", "", value)
    if not E164.match(candidate):
        raise ValueError("not a phone number")
    return candidate
