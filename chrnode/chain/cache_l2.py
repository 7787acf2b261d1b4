"""The L2 (SQLite) tier of the chain cache (chrnode.chain.cache): its store, value codec and blob layout.

    store = ReaderStore(reader, write)   # an L2Store: reads on a Reader, writes as CachePut ops
    raw = encode_value(value); decode_value(raw)
    store.get(L2_PREFIX + category, l2_key(key), now)
    blob = l2_blob(fresh_until, raw); fresh_until, value = l2_entry(blob)

- `L2Store` is what TieredCache needs of L2; `ReaderStore` is the real one, the `cache_l2` table
  read directly (a read-only connection) and written through a callback, because every write
  goes to the single writer actor (SPEC 10).
- Values are msgpack (tuples come back as lists); integers of any size are allowed (balances and
  token amounts exceed 64 bits), packed as an ext type past msgpack's 64 bits.
- Rows live in the namespace `L2_PREFIX + category`; keys longer than `MAX_L2_KEY` (eth_call
  data) are stored under their hash (`l2_key`).
- A row's value is the blob `[format, fresh_until, raw]` (`l2_blob`, read back by `l2_entry`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol

import msgpack

from chrnode.storage.ops import CacheDelete, CachePut
from chrnode.storage.reader import Reader

L2_PREFIX = "chain."
MAX_L2_KEY = 200  # longer keys (eth_call data) are stored under their hash
_BIGINT_EXT = 1
_FORMAT = 1  # version of the L2 blob layout [format, fresh_until, value]


class L2Store(Protocol):
    """The L2 tier: `get` returns only entries unexpired at `now`; `put` may apply later."""

    def get(self, namespace: str, key: str, now: float) -> bytes | None: ...

    def put(self, namespace: str, key: str, value: bytes, expires_at: float) -> None: ...

    def delete(self, namespace: str, key: str) -> None: ...


class ReaderStore:
    """L2 over chrnode.storage: reads on a (read-only) Reader, writes handed to `write` as
    CachePut ops, for the caller to send to the single writer (Model.Sql.Worker)."""

    def __init__(self, reader: Reader, write: Callable[[CachePut | CacheDelete], None]) -> None:
        self.reader = reader
        self.write = write

    def get(self, namespace: str, key: str, now: float) -> bytes | None:
        return self.reader.cache_get(namespace, key, now)

    def put(self, namespace: str, key: str, value: bytes, expires_at: float) -> None:
        self.write(CachePut(namespace, key, value, expires_at))

    def delete(self, namespace: str, key: str) -> None:
        self.write(CacheDelete(namespace, key))


def _ext_default(obj: object) -> msgpack.ExtType:
    # msgpack integers stop at 64 bits; token amounts in wei do not.
    if isinstance(obj, int):
        return msgpack.ExtType(_BIGINT_EXT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True))
    raise TypeError(f"cannot cache a value of type {type(obj).__name__}; expected msgpack-able data")


def _ext_hook(code: int, data: bytes) -> object:
    if code == _BIGINT_EXT:
        return int.from_bytes(data, "big", signed=True)
    return msgpack.ExtType(code, data)


def encode_value(value: Any) -> bytes:
    """msgpack bytes of a cacheable value (bytes stay bytes, big integers allowed)."""
    return msgpack.packb(value, use_bin_type=True, default=_ext_default)  # type: ignore[no-any-return]


def decode_value(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, ext_hook=_ext_hook, strict_map_key=False)


def l2_key(key: str) -> str:
    if len(key) <= MAX_L2_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def l2_blob(fresh_until: float, raw: bytes) -> bytes:
    """The L2 blob of a cache entry: [format, fresh_until, the value's msgpack bytes]."""
    return encode_value([_FORMAT, fresh_until, raw])


def l2_entry(blob: bytes) -> tuple[float, Any]:
    """(fresh_until, value) of an L2 blob of `l2_blob`. Raises ValueError, TypeError or
    msgpack.UnpackException if it is not one (another format, a damaged row)."""
    fmt, fresh_until, raw = decode_value(blob)
    if fmt != _FORMAT or not isinstance(fresh_until, float | int) or not isinstance(raw, bytes):
        raise ValueError(f"layout {fmt!r}")
    return float(fresh_until), decode_value(raw)
