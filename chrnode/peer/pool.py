"""Connection.Pool's decisions (seed: Connection.Pool; SPEC 6): which peer links to keep, as a pure
state machine. Events in (``want``, ``dialed``, ``dial_failed``, ``inbound``, ``closed``,
``answered``, ``failed``, ``tick``), actions out (:class:`Dial`, :class:`Ping`, :class:`Close`,
:class:`Seen`). Time is an argument; the network loop's adapter owns the sockets and timers.

Rules (two links to one peer at once: chrnode.peer.twins):
- one link per peer, reused by every request to it; a dial already in progress is not repeated;
- at most ``max_links`` links up; a link that comes up (dialled or inbound) beyond the cap
  closes the least recently used unpinned link, or is refused when every link is pinned;
- at most ``max_dials`` dials in progress, counted apart from the links: a dial to a contact
  that never answers (the adapter gives each a short deadline) holds a dial slot, never a link,
  so a few black-holed contacts cannot keep real peers out. A peer wanted while every slot is
  taken waits, and is dialled as soon as one frees (pinned or still wanted), or not at all;
- pinned peers (the fleet's bootstrap nodes, SPEC 11 ``fleet_nodes``) are redialled for ever, with
  exponential backoff (``backoff_initial`` doubling to ``backoff_max``, with jitter from the
  caller's RNG so that many nodes do not redial in step); an unpinned peer is redialled only
  while it is wanted (``want`` until ``done_with``: a DHT request wants its contact for one
  dial), and forgotten after a close, or once its backoff has run out, when it is not;
- a link idle for ``ping_interval`` gets a health ping; no answer within ``ping_timeout`` closes it;
- every answered / failed request updates the peer's reliability (answered + 1) / (total + 2),
  the score ``peer_history`` keeps (SPEC 6).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Close", "Dial", "Peer", "Ping", "Pool", "PoolConfig", "Seen", "State"]


class State(Enum):
    IDLE = "idle"
    DIALING = "dialing"
    UP = "up"
    BACKOFF = "backoff"
    WAITING = "waiting"  # wanted while every dial slot was taken: a later tick dials it


@dataclass(frozen=True, slots=True)
class PoolConfig:
    max_links: int = 512  # config peer_max_links: about 21 KiB per idle link (docs/dht.md)
    max_dials: int = 32  # dials in progress at once (TCP connect, TLS, peer hello)
    ping_interval: float = 30.0
    ping_timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0


@dataclass(frozen=True, slots=True)
class Dial:
    address: bytes
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Ping:
    address: bytes


@dataclass(frozen=True, slots=True)
class Close:
    address: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Seen:
    """Persist to peer_history: the peer's link came up (``connected``) or its score changed."""

    address: bytes
    connected: bool
    reliability: float


Action = Dial | Ping | Close | Seen


@dataclass(slots=True)
class Peer:
    address: bytes
    host: str
    port: int
    pinned: bool = False
    wanted: bool = False
    state: State = State.IDLE
    failures: int = 0
    next_attempt: float = 0.0
    last_activity: float = 0.0
    ping_sent: float | None = None
    answered: int = 0
    failed: int = 0
    connections: int = 0

    @property
    def reliability(self) -> float:
        return (self.answered + 1) / (self.answered + self.failed + 2)


@dataclass
class Pool:
    config: PoolConfig = field(default_factory=PoolConfig)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    peers: dict[bytes, Peer] = field(default_factory=dict)
    evictions: int = 0  # links closed to make room at the cap (network_stats, the benchmark)

    # ---- queries ----------------------------------------------------------------------------
    def links(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.state is State.UP]

    def is_up(self, address: bytes) -> bool:
        peer = self.peers.get(address)
        return peer is not None and peer.state is State.UP

    def _count(self, state: State) -> int:
        return sum(1 for p in self.peers.values() if p.state is state)

    # ---- events -----------------------------------------------------------------------------
    def want(self, address: bytes, host: str, port: int, now: float, *, pinned: bool = False) -> list[Action]:
        """We need a link to this peer (a bootstrap node, or a lookup/relay wants it)."""
        peer = self.peers.get(address)
        if peer is None:
            peer = self.peers[address] = Peer(address, host, port)
        else:
            peer.host, peer.port = host, port
        peer.pinned = peer.pinned or pinned
        peer.wanted = True
        return self._maybe_dial(peer, now)

    def unpin(self, address: bytes) -> None:
        peer = self.peers.get(address)
        if peer is not None:
            peer.pinned = False

    def dialed(self, address: bytes, now: float) -> list[Action]:
        """Our dial finished: TLS up and the peer hello answered."""
        peer = self.peers.get(address)
        if peer is None or peer.state not in (State.DIALING, State.BACKOFF):
            return [Close(address, "not dialing this peer")]
        # DIALING, or BACKOFF when a link the peer dialled at the same time came up and closed
        # meanwhile (it kept ours: chrnode.peer.twins): the link we dialled is good.
        room = self._make_room("at the link limit: least recently used")
        if room is None:
            self._back_off(peer, now)
            return [Close(address, "at the link limit"), *self._dial_waiting(now)]
        return room + self._up(peer, now) + self._dial_waiting(now)

    def dial_failed(self, address: bytes, now: float) -> list[Action]:
        peer = self.peers.get(address)
        if peer is None or peer.state is State.UP:
            return []  # up meanwhile (the peer dialled us at the same time): not a failure
        peer.failed += 1
        self._back_off(peer, now)
        # peer_history is for peers: not for every address a FIND_NODE answer named that never
        # answered (a liar could fill it).
        seen = [Seen(address, False, peer.reliability)] if peer.connections or peer.pinned else []
        return seen + self._dial_waiting(now)

    def inbound(self, address: bytes, host: str, port: int, now: float) -> list[Action]:
        """A peer dialled us and proved its hello. Returns Close(address) to refuse it."""
        peer = self.peers.get(address)
        if peer is not None and peer.state is State.UP:
            # Both sides dialled at once (or a peer reconnects over a live link): keep the link that
            # is up and answering; the newcomer is closed.
            return [Close(address, "duplicate link")]
        room = self._make_room("at the link limit")
        if room is None:
            return [Close(address, "at the link limit")]
        if peer is None:
            peer = self.peers[address] = Peer(address, host, port)
        return room + self._up(peer, now)

    def closed(self, address: bytes, now: float) -> list[Action]:
        """The link (or a dial) ended for whatever reason."""
        peer = self.peers.get(address)
        if peer is None:
            return []
        if peer.state is State.IDLE and not peer.pinned:
            del self.peers[address]  # closed to make room (least recently used): no backoff
        elif peer.pinned or peer.wanted:
            self._back_off(peer, now)
        else:
            del self.peers[address]
        return []

    def activity(self, address: bytes, now: float) -> None:
        """A frame arrived on the link: it is alive."""
        peer = self.peers.get(address)
        if peer is not None:
            peer.last_activity = now
            peer.ping_sent = None

    def answered(self, address: bytes, now: float) -> list[Action]:
        peer = self.peers.get(address)
        if peer is None:
            return []
        peer.answered += 1
        self.activity(address, now)
        return [Seen(address, False, peer.reliability)] if peer.answered % 16 == 0 else []

    def failed(self, address: bytes) -> list[Action]:
        peer = self.peers.get(address)
        if peer is None:
            return []
        peer.failed += 1
        return [Seen(address, False, peer.reliability)]

    def done_with(self, address: bytes) -> None:
        """Nobody needs this peer any more: keep the link while it is up, do not redial it."""
        peer = self.peers.get(address)
        if peer is not None:
            peer.wanted = False

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        cfg = self.config
        for peer in list(self.peers.values()):
            if peer.state is State.UP:
                if peer.ping_sent is not None and now - peer.ping_sent >= cfg.ping_timeout:
                    peer.failed += 1
                    actions.append(Close(peer.address, f"no answer to a ping in {cfg.ping_timeout:g} s"))
                    actions += self.closed(peer.address, now)
                elif peer.ping_sent is None and now - peer.last_activity >= cfg.ping_interval:
                    peer.ping_sent = now
                    actions.append(Ping(peer.address))
            elif peer.state is State.WAITING or (peer.state is State.BACKOFF and now >= peer.next_attempt):
                if peer.pinned or peer.wanted:
                    actions += self._maybe_dial(peer, now)
                else:  # a dead DHT contact is not redialled for ever; a new want dials it afresh
                    del self.peers[peer.address]
        return actions

    # ---- rules ------------------------------------------------------------------------------
    def _maybe_dial(self, peer: Peer, now: float) -> list[Action]:
        if peer.state in (State.UP, State.DIALING):
            return []
        if peer.state is State.BACKOFF and now < peer.next_attempt:
            return []
        if self._count(State.DIALING) >= self.config.max_dials:
            peer.state = State.WAITING  # a later tick dials it once a slot frees, if still wanted
            return []
        peer.state = State.DIALING
        return [Dial(peer.address, peer.host, peer.port)]

    def _dial_waiting(self, now: float) -> list[Action]:
        """A dial slot freed: the peers waiting for one (still pinned or wanted), in turn."""
        actions: list[Action] = []
        for peer in [p for p in self.peers.values() if p.state is State.WAITING]:
            if self._count(State.DIALING) >= self.config.max_dials:
                break
            if peer.pinned or peer.wanted:
                actions += self._maybe_dial(peer, now)
        return actions

    def _make_room(self, reason: str) -> list[Action] | None:
        """Room for one more link: [] if below the cap, else the least recently used unpinned
        link closed (a link wanted now is worth more; a DHT contact can be dialled again), or
        None when every link is pinned."""
        if self._count(State.UP) < self.config.max_links:
            return []
        victim = self._least_useful()
        if victim is None:
            return None
        victim.state = State.IDLE
        self.evictions += 1
        return [Close(victim.address, reason)]

    def _up(self, peer: Peer, now: float) -> list[Action]:
        peer.state = State.UP
        peer.failures = 0
        peer.connections += 1
        peer.last_activity = now
        peer.ping_sent = None
        return [Seen(peer.address, True, peer.reliability)]

    def _back_off(self, peer: Peer, now: float) -> None:
        cfg = self.config
        delay = min(cfg.backoff_max, cfg.backoff_initial * 2**peer.failures)
        peer.failures = min(peer.failures + 1, 32)
        peer.state = State.BACKOFF
        peer.ping_sent = None
        peer.next_attempt = now + delay * (0.5 + self.rng.random() / 2)

    def _least_useful(self) -> Peer | None:
        up = [p for p in self.peers.values() if p.state is State.UP and not p.pinned]
        return min(up, key=lambda p: p.last_activity) if up else None
