"""The DHT's brain: Kademlia as pure state machines (SPEC 6), no sockets, no asyncio, no clock.

Events go in (a request received, an answer, a connection failure, `tick(now)`), actions come
out (a message to send, a finished lookup); time is always an argument. The peer-link adapter
owns the sockets and the timers and feeds this package; `chrnode.testing.dhtsim` feeds it a
simulated network instead.

Modules, lowest first (imports only go up this list):

- `ids`: 160-bit ids, XOR distance, bucket indices, `Contact`;
- `rtt`: round-trip estimators (RFC 6298) that give each query its soft timeout;
- `routing`: the routing table (k-buckets, replacement caches, ping-before-evict, pending contacts);
- `store`: the held signed objects (highest seq wins, expiry);
- `lookup`: FIND_NODE / FIND_VALUE lookups, event-driven, alpha in flight;
- `lockstep`: the round-based lookup of PyPI `kademlia`, kept as the benchmarks' baseline;
- `maintenance`: bucket refresh, republish and expiry timers;
- `messages`: the requests and answers of SPEC 4 (0x20-0x23) and their msgpack payload shapes;
- `node_lookups`: the node's lookups (lookup, join, refresh, publish), a mixin of `node`'s machine;
- `node`: the node-level machine that ties them together.

Errors::

    DhtError
    └── DhtProtocolError   a peer's request or answer breaks SPEC 4/6 (has a `code`)
"""

from __future__ import annotations


class DhtError(Exception):
    """Root of the DHT's errors."""


class DhtProtocolError(DhtError):
    """A peer's message breaks SPEC 4/6; `code` is the snake_case error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
