"""Write operations for the single writer (SPEC 10).

Each op is a small frozen, picklable dataclass that actors send to the Model.Sql actor in
batches; `Writer.apply` runs a batch in one transaction. Ops check their fields when built (so
the sender gets the error) and the writer checks them again before the transaction (an unpickled
op never ran `__init__`). A bad field raises StorageError naming the op, the field, the value and
what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from chrnode.errors import StorageError
from chrnode.storage.rows import NodeStatsRow

ADDRESS_LEN = 20
"""Device, fleet and node addresses are 20 bytes (SPEC 2)."""

MAX_INT = 2**63 - 1
"""SQLite INTEGER is a signed 64-bit number."""

MAX_TEXT = 1024
MAX_BLOB = 16 * 1024 * 1024
RESERVED_KV_KEYS = frozenset({"schema_version"})


def _fail(op: object, name: str, value: object, expected: str) -> StorageError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return StorageError(f"{type(op).__name__}.{name}: got {shown}; expected {expected}")


def _int(op: object, name: str, lo: int = 0) -> None:
    value = getattr(op, name)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= MAX_INT:
        raise _fail(op, name, value, f"an int from {lo} to 2**63-1")


def _num(op: object, name: str, *, optional: bool = False) -> None:
    value = getattr(op, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(op, name, value, "a finite number" + (" or None" if optional else ""))


def _text(op: object, name: str) -> None:
    value = getattr(op, name)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise _fail(op, name, value, f"a non-empty str of at most {MAX_TEXT} characters")


def _blob(op: object, name: str, length: int | None = None, *, optional: bool = False) -> None:
    value = getattr(op, name)
    if optional and value is None:
        return
    if not isinstance(value, bytes):
        raise _fail(op, name, value, "bytes" + (" or None" if optional else ""))
    if length is not None and len(value) != length:
        raise _fail(op, name, value, f"exactly {length} bytes, got {len(value)}")
    if len(value) > MAX_BLOB:
        raise _fail(op, name, value, f"at most {MAX_BLOB} bytes, got {len(value)}")


def _kv_key(op: object, key: object) -> None:
    _text(op, "key")
    if key in RESERVED_KV_KEYS:
        raise _fail(op, "key", key, "a key other than the reserved " + ", ".join(sorted(RESERVED_KV_KEYS)))


class WriteOp:
    """Base of every write op. `check()` raises StorageError on a bad field."""

    __slots__ = ()

    def check(self) -> None:
        raise NotImplementedError

    def __post_init__(self) -> None:
        self.check()


@dataclass(frozen=True, slots=True)
class KvSet(WriteOp):
    key: str
    value: bytes

    def check(self) -> None:
        _kv_key(self, self.key)
        _blob(self, "value")


@dataclass(frozen=True, slots=True)
class KvDelete(WriteOp):
    """Result: True when the key existed."""

    key: str

    def check(self) -> None:
        _kv_key(self, self.key)


@dataclass(frozen=True, slots=True)
class StatsRollup(WriteOp):
    """Insert (or replace, by timestamp) node_stats rows. Result: the number of rows written."""

    rows: tuple[NodeStatsRow, ...]

    def check(self) -> None:
        if not isinstance(self.rows, tuple):
            raise _fail(self, "rows", self.rows, "a tuple of NodeStatsRow")
        for row in self.rows:
            if not isinstance(row, NodeStatsRow):
                raise _fail(self, "rows", row, "NodeStatsRow items")
            for f in fields(row):
                _int(row, f.name)


@dataclass(frozen=True, slots=True)
class StatsPrune(WriteOp):
    """Delete node_stats rows older than `before` (retention). Result: rows deleted."""

    before: int

    def check(self) -> None:
        _int(self, "before")


@dataclass(frozen=True, slots=True)
class TicketUpsert(WriteOp):
    """Store a validated ticket if it beats the stored one (SPEC 5: the best ticket per
    (device, fleet, epoch)). Better means strictly more total_bytes; a replaced ticket is no
    longer submitted. Result: TicketUpsertResult."""

    device: bytes
    fleet: bytes
    epoch: int
    total_bytes: int
    total_connections: int
    ticket: bytes
    received_at: float

    def check(self) -> None:
        _blob(self, "device", ADDRESS_LEN)
        _blob(self, "fleet", ADDRESS_LEN)
        _int(self, "epoch")
        _int(self, "total_bytes")
        _int(self, "total_connections")
        _blob(self, "ticket")
        if not self.ticket:
            raise _fail(self, "ticket", self.ticket, "the ticket's non-empty wire encoding")
        _num(self, "received_at")


@dataclass(frozen=True, slots=True)
class TicketMarkSubmitted(WriteOp):
    """Record that the ticket with these totals went to the chain in `submit_tx` (and, once
    known, whether the chain accepted it). Only marks the row when it still holds that ticket:
    a better one that arrived meanwhile must be submitted again. Result: True when marked."""

    device: bytes
    fleet: bytes
    epoch: int
    total_bytes: int
    submitted_at: float
    submit_tx: bytes
    accepted: bool | None = None

    def check(self) -> None:
        _blob(self, "device", ADDRESS_LEN)
        _blob(self, "fleet", ADDRESS_LEN)
        _int(self, "epoch")
        _int(self, "total_bytes")
        _num(self, "submitted_at")
        _blob(self, "submit_tx")
        if self.accepted is not None and not isinstance(self.accepted, bool):
            raise _fail(self, "accepted", self.accepted, "True, False or None")


RELIABILITY_WEIGHT = 0.1
"""Weight of the newest outcome in a peer's reliability score (exponential moving average)."""


@dataclass(frozen=True, slots=True)
class PeerSeen(WriteOp):
    """A peer was seen at `seen_at` (SPEC 6). `connected` counts a new connection; `ok` (when not
    None) is the outcome of a request to it and moves its reliability score towards 1 or 0.
    Result: the PeerRow after the update."""

    peer_id: str
    seen_at: int
    connected: bool = False
    ok: bool | None = None

    def check(self) -> None:
        _text(self, "peer_id")
        _int(self, "seen_at")
        if not isinstance(self.connected, bool):
            raise _fail(self, "connected", self.connected, "True or False")
        if self.ok is not None and not isinstance(self.ok, bool):
            raise _fail(self, "ok", self.ok, "True, False or None")


@dataclass(frozen=True, slots=True)
class RewardPeriod(WriteOp):
    """Insert or replace one reward_tracking row. Result: None."""

    period_start: int
    period_end: int
    uptime_score: float
    performance_score: float
    chr_tokens_earned: float

    def check(self) -> None:
        _int(self, "period_start")
        _int(self, "period_end")
        if self.period_end < self.period_start:
            raise _fail(
                self, "period_end", self.period_end, f"a time at or after period_start {self.period_start}"
            )
        for name in ("uptime_score", "performance_score", "chr_tokens_earned"):
            _num(self, name)


@dataclass(frozen=True, slots=True)
class DhtPut(WriteOp):
    """Store a signed DHT object unless the stored one is as new or newer (SPEC 6: keep the newer
    object). An expired stored object always yields. The DHT layer has checked the signature and
    that the key derives from the signer. Result: True when stored."""

    key: bytes
    value: bytes
    signer: bytes
    version: int
    expires_at: float

    def check(self) -> None:
        _blob(self, "key")
        if not self.key:
            raise _fail(self, "key", self.key, "a non-empty key")
        _blob(self, "value")
        _blob(self, "signer", ADDRESS_LEN)
        _int(self, "version")
        _num(self, "expires_at")


@dataclass(frozen=True, slots=True)
class DhtPurgeExpired(WriteOp):
    """Delete DHT objects that expired at or before `now`. Result: rows deleted."""

    now: float

    def check(self) -> None:
        _num(self, "now")


@dataclass(frozen=True, slots=True)
class CachePut(WriteOp):
    """Insert or replace an L2 cache entry (SPEC 7). Result: None."""

    namespace: str
    key: str
    value: bytes
    expires_at: float

    def check(self) -> None:
        _text(self, "namespace")
        _text(self, "key")
        _blob(self, "value")
        _num(self, "expires_at")


@dataclass(frozen=True, slots=True)
class CacheDelete(WriteOp):
    """Result: True when the entry existed."""

    namespace: str
    key: str

    def check(self) -> None:
        _text(self, "namespace")
        _text(self, "key")


@dataclass(frozen=True, slots=True)
class CachePurgeExpired(WriteOp):
    """Delete L2 entries that expired at or before `now`. Result: rows deleted."""

    now: float

    def check(self) -> None:
        _num(self, "now")
