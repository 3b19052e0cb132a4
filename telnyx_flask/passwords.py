"""Agents' passwords: argon2id hashes (older werkzeug hashes still verify and are upgraded),
computed off the event loop so that a worker's open streams keep flowing meanwhile."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from werkzeug.security import check_password_hash

# OWASP's argon2id parameters (19 MiB, 2 passes, 1 lane): ~20-40 ms on one core.
PASSWORD_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

T = TypeVar("T")


def off_the_loop(work: Callable[..., T], *args: Any) -> T:
    """Run CPU-heavy work in a native thread when gevent runs this process, so that the
    worker's other greenlets (open event streams) keep being served meanwhile."""
    try:
        from gevent import monkey
    except ImportError:
        return work(*args)
    if not monkey.is_module_patched("socket"):
        return work(*args)
    import gevent

    return gevent.get_hub().threadpool.apply(work, args)


def hash_password(password: str) -> str:
    """An argon2id hash of the password (computed off the event loop)."""
    return off_the_loop(PASSWORD_HASHER.hash, password)


def _verify(password_hash: str, password: str) -> tuple[bool, bool]:
    """(matches, should be rehashed): argon2id hashes, and werkzeug's older ones."""
    if password_hash.startswith("$argon2"):
        try:
            PASSWORD_HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False, False
        return True, PASSWORD_HASHER.check_needs_rehash(password_hash)
    try:
        matches = check_password_hash(password_hash, password)
    except ValueError:  # not a hash werkzeug knows
        return False, False
    return matches, matches


def verify_password(password_hash: str, password: str) -> tuple[bool, bool]:
    """(matches, should be rehashed), computed off the event loop."""
    return off_the_loop(_verify, password_hash, password)


@functools.cache
def dummy_hash() -> str:
    """A hash no password matches, so an unknown email costs as much as a known one."""
    return hash_password(uuid.uuid4().hex)
