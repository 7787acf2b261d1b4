"""Kademlia ids (SPEC 6): a node's id is its 20-byte address, distance is XOR of the ids."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ID_BYTES = 20
ID_BITS = ID_BYTES * 8
K = 20  # SPEC 6: bucket size and replication
ALPHA = 3  # SPEC 6: queries in flight per lookup


def as_int(node_id: bytes) -> int:
    return int.from_bytes(node_id, "big")


def as_id(value: int) -> bytes:
    return value.to_bytes(ID_BYTES, "big")


def distance(a: bytes, b: bytes) -> int:
    """XOR distance of two ids, as an integer."""
    return as_int(a) ^ as_int(b)


def bucket_index(own: bytes, other: bytes) -> int:
    """The bucket of `other` in `own`'s table: i such that 2**i <= distance < 2**(i + 1).

    Raises ValueError for `own` itself, which belongs to no bucket.
    """
    d = distance(own, other)
    if d == 0:
        raise ValueError("a node's own id is in none of its buckets")
    return d.bit_length() - 1


def random_id_in_bucket(own: bytes, index: int, rng: random.Random) -> bytes:
    """A random id whose distance from `own` lies in bucket `index` (for refresh lookups)."""
    if not 0 <= index < ID_BITS:
        raise ValueError(f"bucket index {index} is outside 0..{ID_BITS - 1}")
    offset = (1 << index) | rng.getrandbits(index) if index else 1
    return as_id(as_int(own) ^ offset)


def check_id(value: object, what: str) -> bytes:
    """`value` as an id, or ValueError naming `what`."""
    if not isinstance(value, bytes) or len(value) != ID_BYTES:
        raise ValueError(f"{what} must be {ID_BYTES} bytes")
    return value


@dataclass(frozen=True)
class Contact:
    """A node as the DHT knows it: its address and where to reach it.

    `record` is the node's signed `node` object (SPEC 6) exactly as received; the DHT never
    looks inside it, it passes it on in FIND_NODE answers. Two contacts are the same node when
    their addresses match, whatever their endpoints.
    """

    address: bytes
    host: str = field(default="", compare=False)
    peer_port: int = field(default=0, compare=False)
    record: object = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_id(self.address, "a contact's address")
