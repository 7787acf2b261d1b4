"""Which cached chain reads the chain's events make stale (SPEC 7; issue 7). Pure logic.

The node caches fleet decisions and BNS names for the "contracts" TTL (5 min). When the chain
changes one (an operator allows or revokes a device, opens the device list, a name moves), the
contract emits an event; RemoteChain.Monitor feeds the logs of every new block here and hands
the keys to drop to RemoteChain.Cache, so the next lookup reads the chain again:

    watch = ChainWatch(bns=contracts.bns)
    span = watch.next_span(head)                 # (from_block, to_block) or None: nothing new
    params = watch.logs_filter(*span)            # the eth_getLogs filter
    drop = watch.observe(*span, logs)            # Invalidation: keys of category "contracts"

Fleet events are taken from any contract (a ticket names its own fleet, SPEC 5 step 4; dropping a
key nothing cached costs nothing); BNS events only from the configured registry. A gap longer
than `max_span` blocks (the node was cut off from the chain) drops every "contracts" entry
instead of reading the gap's logs. Chain reorganisations are not followed: an event in a block
that is later replaced has already dropped its key, which costs one more chain read.

The cache keys of the contracts category are defined here, since both sides must agree on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chrnode.chain import hexcodec as hx
from chrnode.chain.abi import ContractAbi
from chrnode.errors import ChainError

CATEGORY = "contracts"
MAX_SPAN = 1000  # blocks per eth_getLogs: public endpoints refuse much larger ranges
START_LOOKBACK = 16  # blocks before the first head the node sees: events while it was starting


def fleet_member_key(fleet: bytes, kind: str, who: bytes) -> str:
    """A fleet's verdict on one node (kind "node") or its device list entry (kind "device")."""
    return f"fleet:{fleet.hex()}:{kind}:{who.hex()}"


def fleet_open_key(fleet: bytes) -> str:
    """Whether a fleet's device list is open (every device allowed)."""
    return f"fleet:{fleet.hex()}:open"


def fleet_terms_key(fleet: bytes) -> str:
    """A fleet's operator, token, price and payment rule."""
    return f"fleet:{fleet.hex()}:terms"


def bns_key(namespace: str) -> str:
    return f"bns:{namespace}"


# event -> which key of the emitting fleet it changes
_FLEET_MEMBER_EVENTS = {"DeviceAllowed": ("device", "device"), "NodeAllowed": ("node", "node")}
_FLEET_TERMS_EVENTS = ("OperatorChanged", "PriceChanged", "TokenChanged", "RequiresPaymentChanged")
_FLEET_OPEN_EVENT = "DevicesOpenChanged"
_BNS_EVENTS = ("NameRegistered", "NameUpdated", "NameTransferred")


@dataclass(frozen=True)
class Invalidation:
    """What to drop from the cache: `keys` of `category`, or everything of it when `everything`."""

    keys: tuple[str, ...] = ()
    everything: bool = False
    reason: str = ""
    category: str = CATEGORY

    def __bool__(self) -> bool:
        return self.everything or bool(self.keys)


@dataclass
class ChainWatch:
    """The block cursor and the event decoding; the caller does the eth_getLogs."""

    bns: bytes | None = None
    max_span: int = MAX_SPAN
    lookback: int = 0  # blocks before the first head to read too (RemoteChain.Monitor: START_LOOKBACK)
    next_block: int | None = None  # the first block whose logs are not read yet
    events_seen: int = 0
    _fleet: ContractAbi = field(default_factory=lambda: ContractAbi.from_artifact("Fleet"), repr=False)
    _registry: ContractAbi = field(
        default_factory=lambda: ContractAbi.from_artifact("BnsRegistry"), repr=False
    )

    def __post_init__(self) -> None:
        if self.max_span < 1:
            raise ValueError(f"max_span must be at least 1 block, got {self.max_span}")
        if not 0 <= self.lookback <= self.max_span:
            raise ValueError(f"lookback must be 0..max_span ({self.max_span}) blocks, got {self.lookback}")
        names = (*_FLEET_MEMBER_EVENTS, *_FLEET_TERMS_EVENTS, _FLEET_OPEN_EVENT)
        self._topics: dict[bytes, tuple[ContractAbi, str]] = {
            self._fleet.event_topic(name): (self._fleet, name) for name in names
        }
        if self.bns is not None:
            for name in _BNS_EVENTS:
                self._topics[self._registry.event_topic(name)] = (self._registry, name)

    def next_span(self, head: int) -> tuple[int, int] | None:
        """The blocks to read the logs of, now that the chain is at `head`; None when none are new.

        The first head seen starts the watch `lookback` blocks before it (0: after it), so that
        an event mined while the node started (between a cache load and the Monitor's first
        poll) is not missed; dropping a few keys more at start costs a chain read each."""
        if head < 0:
            raise ValueError(f"head must not be negative, got {head}")
        if self.next_block is None:
            self.next_block = max(0, head - self.lookback + 1)
            if self.next_block > head:
                return None
        if head < self.next_block:
            return None
        return self.next_block, head

    def logs_filter(self, from_block: int, to_block: int) -> dict[str, Any]:
        """The eth_getLogs filter for the span: every watched event, from any contract."""
        topics = ["0x" + topic.hex() for topic in self._topics]
        return {
            "fromBlock": hx.hex_quantity(from_block),
            "toBlock": hx.hex_quantity(to_block),
            "topics": [topics],
        }

    def too_long(self, from_block: int, to_block: int) -> bool:
        return to_block - from_block + 1 > self.max_span

    def skip(self, from_block: int, to_block: int) -> Invalidation:
        """The span is too long to read: forget every contracts entry and carry on after it."""
        self._advance(from_block, to_block)
        return Invalidation(
            everything=True,
            reason=f"{to_block - from_block + 1} blocks passed unread ({from_block}..{to_block})",
        )

    def observe(self, from_block: int, to_block: int, logs: Sequence[Any]) -> Invalidation:
        """The logs eth_getLogs returned for the span; the cursor moves past it.

        A log that is not one of the watched events is ignored; a malformed one raises ChainError
        (the caller reads the span again at the next poll, since the cursor does not move)."""
        keys: list[str] = []
        for entry in logs:
            keys.extend(self._keys_of(entry))
        self._advance(from_block, to_block)
        unique = tuple(dict.fromkeys(keys))
        return Invalidation(unique, reason=f"{len(logs)} events in blocks {from_block}..{to_block}")

    def _advance(self, from_block: int, to_block: int) -> None:
        if self.next_block is not None and from_block != self.next_block:
            raise ValueError(f"span starts at block {from_block}, expected {self.next_block}")
        if to_block < from_block:
            raise ValueError(f"span {from_block}..{to_block} is empty")
        self.next_block = to_block + 1

    def _keys_of(self, entry: Any) -> list[str]:
        if not isinstance(entry, dict):
            raise ChainError(f"eth_getLogs returned {str(entry)[:80]!r}; expected log objects")
        try:
            emitter = hx.parse_address(entry.get("address"), "log address")
            topics = entry.get("topics")
            first = hx.parse_data(topics[0], "log topic") if isinstance(topics, list) and topics else b""
        except ChainError as exc:
            raise ChainError(f"malformed log {str(entry)[:80]!r}: {exc}") from exc
        known = self._topics.get(first)
        if known is None:
            return []
        abi, name = known
        if abi is self._registry and emitter != self.bns:
            return []  # another contract with the same event: not the registry the node reads
        (event,) = abi.decode_logs(name, [entry], emitter)
        self.events_seen += 1
        if name in _FLEET_MEMBER_EVENTS:
            kind, param = _FLEET_MEMBER_EVENTS[name]
            return [fleet_member_key(emitter, kind, event[param])]
        if name == _FLEET_OPEN_EVENT:
            return [fleet_open_key(emitter)]
        if name in _FLEET_TERMS_EVENTS:
            return [fleet_terms_key(emitter)]
        return [bns_key(str(event["namespace"]))]
