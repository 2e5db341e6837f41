"""The ``StripeMeter-Signature`` header of an outbound webhook (Stripe's scheme, our name).

    StripeMeter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

keyed with the endpoint's secret (``whsec_…``, the whole string). Each attempt
signs anew with its own ``t``, so a receiver can refuse old replays with a
tolerance (five minutes by default). ``verify`` is what docs/webhooks.md shows
a receiver; the tests check deliveries with it.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "StripeMeter-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The header is missing, malformed, too old, or signs other bytes."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(
    header: str,
    body: bytes,
    secret: str,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """The signed timestamp, once the header is found to sign ``body`` within ``tolerance``."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("the header has no t=… and v1=… parts")
    if abs(now - timestamp) > tolerance:
        raise SignatureError("the timestamp is outside the tolerance: a replay, or a bad clock")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("no v1 signature matches the body")
    return timestamp
