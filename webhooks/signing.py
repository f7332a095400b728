"""Webhook signatures: ``X-Pelletseg-Signature: t=<unix seconds>, v1=<hex HMAC-SHA256(secret,
"<t>." + raw body)>``, the scheme of Stripe's webhooks. A receiver recomputes it over the raw
body with the shared secret (``PELLETSEG_WEBHOOK_SECRET``) and rejects stale timestamps
(replays): :func:`verify` does both.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["DEFAULT_TOLERANCE_S", "DELIVERY_HEADER", "EVENT_HEADER", "SIGNATURE_HEADER", "sign",
           "verify"]

SIGNATURE_HEADER = "X-Pelletseg-Signature"
EVENT_HEADER = "X-Pelletseg-Event"
DELIVERY_HEADER = "X-Pelletseg-Delivery"
#: Largest accepted difference between a signature's timestamp and the receiver's clock (s).
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Pelletseg-Signature`` value of ``body``: ``t=<unix s>,v1=<hex HMAC-SHA256>``
    over ``b"<t>." + body`` with key ``secret`` (UTF-8)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True if ``header`` (an ``X-Pelletseg-Signature`` value) signs the raw ``body`` with
    ``secret`` and its timestamp is within ``tolerance_s`` of ``now`` (default: the clock).
    Compares in constant time."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        ts = int(fields["t"])
        given = fields["v1"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)
