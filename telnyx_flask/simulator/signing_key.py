"""The simulator's Ed25519 webhook signing key: from a base64 seed, or a reusable key file."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from nacl.signing import SigningKey

SEED_BYTES = 32


def seed_from_base64(text: str) -> bytes:
    """Decode a base64 32-byte seed; ValueError if it is not one."""
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the signing seed is not valid base64") from None
    if len(seed) != SEED_BYTES:
        raise ValueError(f"the signing seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return seed


def load_or_create_seed(path: Path) -> bytes:
    """The seed kept in `path`, creating the file (mode 0600) with a new seed the first time."""
    try:
        return seed_from_base64(path.read_text())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(SEED_BYTES)
    # O_EXCL: if another simulator created the file meanwhile, use its key rather than clobber it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return seed_from_base64(path.read_text())
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(seed).decode() + "\n")
    return seed


def public_key_base64(seed: bytes) -> str:
    """The base64 public key to give the service as TELNYX_PUBLIC_KEY."""
    return base64.b64encode(bytes(SigningKey(seed).verify_key)).decode()
