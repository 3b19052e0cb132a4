"""Ed25519 verification of Telnyx webhooks, over the exact bytes received."""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from .errors import BadSignature

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_SECONDS = 300
# Unix seconds in ASCII digits. int() alone would also take "1_0", "+5" and other scripts' digits,
# and a few hundred digits overflow the float comparison with the clock.
UNIX_SECONDS = re.compile(r"[0-9]{1,15}")


class WebhookVerifier:
    """Checks `telnyx-signature-ed25519` over "{telnyx-timestamp}|{raw body}"."""

    def __init__(self, public_key: bytes | None, tolerance_seconds: int = TOLERANCE_SECONDS):
        self._key = VerifyKey(public_key) if public_key is not None else None
        self.tolerance_seconds = tolerance_seconds

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
        """Raise BadSignature unless the body is signed by Telnyx's key within the time window."""
        if self._key is None:
            # Fail closed: a development server without a key accepts nothing it cannot check.
            raise BadSignature("TELNYX_PUBLIC_KEY is not configured; webhooks cannot be verified")
        # Werkzeug's headers are case-insensitive, as HTTP's are.
        signature_text = headers.get(SIGNATURE_HEADER)
        timestamp_text = headers.get(TIMESTAMP_HEADER)
        if not signature_text or not timestamp_text:
            raise BadSignature(f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers are required")
        timestamp_text = timestamp_text.strip()
        if not UNIX_SECONDS.fullmatch(timestamp_text):
            raise BadSignature(f"{TIMESTAMP_HEADER} must be Unix seconds (up to 15 digits)")
        timestamp = int(timestamp_text)
        now = time.time() if now is None else now
        if abs(now - timestamp) > self.tolerance_seconds:
            raise BadSignature(
                f"{TIMESTAMP_HEADER} is outside the {self.tolerance_seconds} s window"
            )
        try:
            signature = base64.b64decode(signature_text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadSignature(f"{SIGNATURE_HEADER} is not base64") from None
        if len(signature) != 64:
            raise BadSignature(f"{SIGNATURE_HEADER} is not an Ed25519 signature")
        try:
            self._key.verify(timestamp_text.encode() + b"|" + body, signature)
        except BadSignatureError:
            raise BadSignature("signature does not match the body") from None


def sign(signing_key_seed: bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """Headers Telnyx would send for this body (the simulator and the tests sign with this)."""
    from nacl.signing import SigningKey

    signed = SigningKey(signing_key_seed).sign(f"{timestamp}|".encode() + body)
    return {
        SIGNATURE_HEADER: base64.b64encode(signed.signature).decode(),
        TIMESTAMP_HEADER: str(timestamp),
    }
