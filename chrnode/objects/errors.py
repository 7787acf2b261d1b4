"""Why a signed object was refused (SPEC 4 STORE answers, SPEC 6 rules).

``code`` is the wire error code a STORE answer carries; the message says what was wrong.
"""

from __future__ import annotations

from chrnode.errors import ChrError

__all__ = ["BAD_PAYLOAD", "BAD_SIGNATURE", "EXPIRED", "MIS_KEYED", "STALE", "STORE_FULL", "ObjectError"]

BAD_PAYLOAD = "bad_payload"  # not a map of the SPEC 6 fields and types
BAD_SIGNATURE = "bad_signature"  # the signature does not recover to `signer`
MIS_KEYED = "mis_keyed"  # key, signer and data do not agree for this kind
STALE = "stale"  # a newer (higher seq) object is held for this key
EXPIRED = "expired"  # expires is in the past, or too far in the future to accept
STORE_FULL = "busy"  # the store holds as many objects as it may


class ObjectError(ChrError):
    """A signed object failed a check; ``code`` is the wire code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)
