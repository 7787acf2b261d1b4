"""The routing table (SPEC 6): k-buckets by XOR distance, ping-before-evict, replacement caches,
and contacts learned second-hand kept apart until they answer themselves.

Layout: a fixed 160-bucket table, bucket i holding the contacts at distance [2**i, 2**(i + 1))
from this node, stored only when non-empty. It is what "split the bucket that holds our own id"
converges to, but a contact's bucket is a pure function of two ids instead of the table's split
history, so the table's shape never depends on the order contacts arrived (simpler invariants,
one rule to test), and the near buckets, sparse in any network, still hold k each.

Rules (Kademlia section 2.2 and 4.1):
- `heard_from`: the contact spoke to us itself (answered a request, or sent one over a link
  whose peer hello proved its address). It moves to the most-recent end of its bucket; into a
  full bucket it goes to the bucket's replacement cache and the least recently seen contact is
  probed (a `Probe` action): its answer keeps it, its failure evicts it for the newest
  replacement. A bucket probes one contact at a time, at most once per `fresh_for` seconds,
  and never one heard from within `fresh_for`: probing on every newcomer makes each request to
  a full bucket cost a ping, and the ping, itself a request from a sender the pinged node may
  not know, another one, in a cascade through the network (measured in the simulator: ten
  times the lookup traffic). Dead contacts are also found by this node's own traffic: a
  failed request evicts at once when a replacement waits (`failed`), which costs nothing.
- `learned`: the contact was named by someone else (a FIND_NODE answer). It never enters the
  table from that alone; when its bucket has room it becomes pending and is probed, and enters
  when it answers (`heard_from`). Pending contacts are bounded, so a peer that answers with fake
  contacts costs at most that many probes.
- `failed`: a request to the contact failed (hard timeout, reset). A probed contact is evicted;
  another is evicted once a replacement waits or after `max_failures` failures in a row (a node
  whose own network is down keeps its table, section 4.1).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from chrnode.dht.ids import ID_BITS, Contact, K, as_int, bucket_index

log = logging.getLogger("chrnode.dht")


@dataclass(frozen=True)
class Probe:
    """Action: PING this contact; report the answer with `heard_from`, a failure with `failed`."""

    contact: Contact
    purpose: str  # "evict_check": the bucket's least recently seen; "verify": a pending contact


@dataclass
class _Entry:
    contact: Contact
    id: int
    last_seen: float
    failures: int = 0


@dataclass
class _Bucket:
    contacts: OrderedDict[bytes, _Entry] = field(default_factory=OrderedDict)  # least recent first
    replacements: OrderedDict[bytes, Contact] = field(default_factory=OrderedDict)
    probing: bytes | None = None
    probed_at: float = float("-inf")


class RoutingTable:
    def __init__(
        self,
        own: bytes,
        *,
        k: int = K,
        max_failures: int = 5,
        max_pending: int = 2 * K,
        fresh_for: float = 60.0,
        started: float = 0.0,
    ) -> None:
        if k < 1 or max_failures < 1 or max_pending < 0:
            raise ValueError("k and max_failures must be at least 1, max_pending at least 0")
        self.own, self.k, self.max_failures, self.max_pending = own, k, max_failures, max_pending
        self._own_int = as_int(own)
        self._buckets: dict[int, _Bucket] = {}
        self._pending: dict[bytes, Contact] = {}
        self._touched: dict[int, float] = {}
        self._started = started
        self.fresh_for = fresh_for
        self._size = 0

    # -- events --------------------------------------------------------------------------------

    def heard_from(self, contact: Contact, now: float) -> list[Probe]:
        """The contact spoke to us itself: it is verified (see the module docstring)."""
        address = contact.address
        if address == self.own:
            return []
        self._pending.pop(address, None)
        number = as_int(address)
        index = (number ^ self._own_int).bit_length() - 1
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket()
        entry = bucket.contacts.get(address)
        if entry is not None:
            entry.contact, entry.last_seen, entry.failures = contact, now, 0
            bucket.contacts.move_to_end(address)
            if bucket.probing == address:
                bucket.probing = None
            return []
        if len(bucket.contacts) < self.k:
            if bucket.replacements:
                bucket.replacements.pop(address, None)
            bucket.contacts[address] = _Entry(contact, number, now)
            self._size += 1
            return []
        bucket.replacements[address] = contact
        bucket.replacements.move_to_end(address)
        while len(bucket.replacements) > self.k:
            bucket.replacements.popitem(last=False)
        oldest = next(iter(bucket.contacts.values()))
        if (
            bucket.probing is not None
            or now - oldest.last_seen < self.fresh_for
            or now - bucket.probed_at < self.fresh_for
        ):
            return []
        bucket.probing, bucket.probed_at = oldest.contact.address, now
        return [Probe(oldest.contact, "evict_check")]

    def learned(self, contact: Contact, now: float) -> list[Probe]:
        """The contact was named by another node: pending until it answers a probe itself."""
        address = contact.address
        if address == self.own or address in self._pending:
            return []
        bucket = self._buckets.get(bucket_index(self.own, address))
        if bucket is not None and (
            address in bucket.contacts or address in bucket.replacements or len(bucket.contacts) >= self.k
        ):
            return []
        if len(self._pending) >= self.max_pending:
            return []
        self._pending[address] = contact
        return [Probe(contact, "verify")]

    def failed(self, address: bytes, now: float) -> list[Probe]:
        """A request to `address` failed (hard timeout or connection reset)."""
        if address == self.own:
            return []
        if self._pending.pop(address, None) is not None:
            return []
        index = bucket_index(self.own, address)
        bucket = self._buckets.get(index)
        if bucket is None:
            return []
        bucket.replacements.pop(address, None)
        entry = bucket.contacts.get(address)
        if entry is None:
            return []
        entry.failures += 1
        probed = bucket.probing == address
        if probed or bucket.replacements or entry.failures >= self.max_failures:
            self._evict(index, bucket, address, now)
        return []

    def touch(self, target: bytes, now: float) -> None:
        """A lookup for `target` ran: its bucket needs no refresh for a while (Kademlia 2.3)."""
        if target != self.own:
            self._touched[bucket_index(self.own, target)] = now

    # -- queries -------------------------------------------------------------------------------

    def closest(self, target: bytes, n: int | None = None) -> list[Contact]:
        """The verified contacts closest to `target`, closest first, at most `n` (default k).

        Bucket j = index(target) holds every contact nearer than 2**j to the target, the buckets
        below j together come next, then the buckets above j in order, so only as many buckets
        as needed are sorted.
        """
        count = self.k if n is None else n
        t = as_int(target)
        j = (t ^ self._own_int).bit_length() - 1
        groups: list[list[_Entry]] = []
        if j in self._buckets:
            groups.append(list(self._buckets[j].contacts.values()))
        below = [e for i, b in self._buckets.items() if i < j for e in b.contacts.values()]
        if below:
            groups.append(below)
        groups.extend(list(self._buckets[i].contacts.values()) for i in sorted(self._buckets) if i > j)
        found: list[_Entry] = []
        for group in groups:
            if len(found) >= count:
                break
            found.extend(sorted(group, key=lambda e: e.id ^ t))
        return [e.contact for e in found[:count]]

    def get(self, address: bytes) -> Contact | None:
        if address == self.own:
            return None
        bucket = self._buckets.get(bucket_index(self.own, address))
        entry = bucket.contacts.get(address) if bucket else None
        return entry.contact if entry else None

    def __contains__(self, address: object) -> bool:
        return isinstance(address, bytes) and len(address) == len(self.own) and self.get(address) is not None

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Contact]:
        for bucket in self._buckets.values():
            for entry in bucket.contacts.values():
                yield entry.contact

    def pending(self) -> list[Contact]:
        return list(self._pending.values())

    def bucket_contents(self) -> dict[int, tuple[list[Contact], list[Contact]]]:
        """Bucket index -> (contacts least recently seen first, replacements oldest first)."""
        return {
            i: ([e.contact for e in b.contacts.values()], list(b.replacements.values()))
            for i, b in sorted(self._buckets.items())
            if b.contacts or b.replacements
        }

    def failures(self, address: bytes) -> int:
        bucket = self._buckets.get(bucket_index(self.own, address))
        entry = bucket.contacts.get(address) if bucket else None
        return entry.failures if entry else 0

    def stale_buckets(self, now: float, interval: float) -> list[int]:
        """Buckets from the nearest populated one outwards not looked up for `interval`."""
        populated = [i for i, b in self._buckets.items() if b.contacts]
        if not populated:
            return []
        return [
            i for i in range(min(populated), ID_BITS) if now - self._touched.get(i, self._started) >= interval
        ]

    # -- internals -----------------------------------------------------------------------------

    def _evict(self, index: int, bucket: _Bucket, address: bytes, now: float) -> None:
        del bucket.contacts[address]
        self._size -= 1
        if bucket.probing == address:
            bucket.probing = None
        if bucket.replacements:
            _, newest = bucket.replacements.popitem(last=True)
            bucket.contacts[newest.address] = _Entry(newest, as_int(newest.address), now)
            self._size += 1
        log.debug("evicted %s from bucket %d", address.hex(), index)
