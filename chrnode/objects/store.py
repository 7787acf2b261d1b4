"""The rules for holding signed objects (SPEC 6), as a pure in-memory store. Time is an input.

For one key the store keeps the object with the highest ``seq`` and refuses an older or equal one
(``stale``); it never keeps an unsigned, mis-keyed or expired one. An object whose ``expires`` is
further ahead than the kind's longest lifetime is refused too (``expired``), so a forged
far-future object cannot pin a key for ever. Keys are kept sorted, so a range of the key space
(a prefix of ``bits`` bits) is a slice: :mod:`chrnode.objects.merkle` hashes those slices.

What persists the objects (Model.Sql) and what republishes them (Object.Manager) are adapters
around this; they feed it objects and clock ticks and act on what it returns.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from chrnode.objects.errors import EXPIRED, STALE, STORE_FULL, ObjectError
from chrnode.objects.kinds import LOCATION, NODE, check_kind
from chrnode.objects.signed import SignedObject

__all__ = ["DEFAULT_MAX_TTL", "ObjectStore", "key_range"]

# The longest lifetime accepted ahead of now, per kind: a node republishes its own record and its
# devices' locations well within these (docs/dht.md).
DEFAULT_MAX_TTL = {NODE: 24 * 3600, LOCATION: 2 * 3600}


def key_range(prefix: bytes, bits: int) -> tuple[bytes, bytes | None]:
    """[low, high) of the 20-byte keys whose first ``bits`` bits are those of ``prefix``.

    ``high`` is None when the range runs to the end of the key space.
    """
    if not 0 <= bits <= 160:
        raise ValueError(f"bits must be 0..160, got {bits}")
    if len(prefix) * 8 < bits:
        raise ValueError(f"prefix of {len(prefix)} bytes is shorter than {bits} bits")
    value = int.from_bytes(prefix[:20].ljust(20, b"\0"), "big") >> (160 - bits) if bits else 0
    low = (value << (160 - bits)).to_bytes(20, "big") if bits else bytes(20)
    top = (value + 1) << (160 - bits)
    high = None if top >= 1 << 160 else top.to_bytes(20, "big")
    return low, high


@dataclass
class ObjectStore:
    """Signed objects by key, newest ``seq`` wins. Not thread-safe; one owner feeds it."""

    max_objects: int = 100_000
    accept_hello: bool = True
    max_ttl: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_TTL))
    _objects: dict[bytes, SignedObject] = field(default_factory=dict)
    _keys: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._objects)

    def offer(self, obj: SignedObject, now: float) -> bool:
        """Keep ``obj`` if it is valid, fresh and newer than what is held for its key.

        Returns True if it replaced or added an object, False if it is the one already held
        (same seq and signature: a harmless repeat). Raises ObjectError with the STORE code.
        ``obj`` must come from :meth:`SignedObject.from_wire` or :meth:`SignedObject.sign`.
        """
        check_kind(obj, accept_hello=self.accept_hello)
        if obj.is_expired(now):
            raise ObjectError(EXPIRED, f"object expired at {obj.expires}, it is now {int(now)}")
        ttl = self.max_ttl.get(obj.kind, 0)
        if obj.expires > now + ttl:
            raise ObjectError(EXPIRED, f"a {obj.kind} object may live at most {ttl} s ahead, this one longer")
        held = self._objects.get(obj.key)
        if held is not None and not held.is_expired(now):
            if obj.seq == held.seq and obj.signature == held.signature:
                return False
            if obj.seq <= held.seq:
                raise ObjectError(
                    STALE, f"an object with seq {held.seq} is held for this key; got seq {obj.seq}"
                )
        if held is None:
            if len(self._objects) >= self.max_objects:
                raise ObjectError(STORE_FULL, f"this node holds its limit of {self.max_objects} objects")
            bisect.insort(self._keys, obj.key)
        self._objects[obj.key] = obj
        return True

    def get(self, key: bytes, now: float) -> SignedObject | None:
        obj = self._objects.get(key)
        return None if obj is None or obj.is_expired(now) else obj

    def remove(self, key: bytes) -> SignedObject | None:
        obj = self._objects.pop(key, None)
        if obj is not None:
            del self._keys[bisect.bisect_left(self._keys, key)]
        return obj

    def expire(self, now: float) -> list[SignedObject]:
        """Drop every expired object and return them (oldest first)."""
        gone = [obj for obj in self._objects.values() if obj.is_expired(now)]
        for obj in gone:
            self.remove(obj.key)
        return sorted(gone, key=lambda o: o.expires)

    def in_range(self, prefix: bytes, bits: int, now: float) -> Iterator[SignedObject]:
        """The live objects whose keys start with the first ``bits`` bits of ``prefix``, by key."""
        low, high = key_range(prefix, bits)
        start = bisect.bisect_left(self._keys, low)
        stop = len(self._keys) if high is None else bisect.bisect_left(self._keys, high)
        for key in self._keys[start:stop]:
            obj = self._objects[key]
            if not obj.is_expired(now):
                yield obj

    def values(self) -> Iterator[SignedObject]:
        return iter(list(self._objects.values()))
