"""What this node publishes to the DHT (seed: Object.Manager; SPEC 6), as a pure state machine.

- Its own ``node`` object, signed at start and republished every ``node_republish`` seconds with a
  lifetime of ``node_ttl``.
- A ``location`` object for each device it serves, made when the device's first valid ticket
  arrives (or, where tickets are not required, its hello), republished every
  ``location_republish`` seconds with the device's latest ticket while the device stays, and left
  to lapse (``location_ttl``) once it leaves. Another node that the device moves to publishes a
  higher ``seq``, so lookups find the new node as soon as its STORE lands.

``seq`` is this node's clock in milliseconds, kept strictly increasing, so a restarted node's
objects replace its older ones without remembering anything. Events in (``start``, ``ticket``,
``hello``, ``left``, ``tick``), actions out: :class:`Publish` (sign and send this object to the k
closest nodes, and hold it locally).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chrnode.crypto import PrivateKey
from chrnode.objects.kinds import NodeRecord, make_hello_location, make_location, make_node_object
from chrnode.objects.signed import SignedObject
from chrnode.ticket import Ticket

__all__ = ["Publish", "Publisher", "PublisherConfig"]


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    node_ttl: int = 3600
    node_republish: int = 1200
    location_ttl: int = 600
    location_republish: int = 240


@dataclass(frozen=True, slots=True)
class Publish:
    object: SignedObject


@dataclass(slots=True)
class _Served:
    ticket: Ticket | None
    hello: tuple[bytes, bytes] | None  # (binding, device_sig)
    due: float


@dataclass
class Publisher:
    key: PrivateKey
    record: NodeRecord
    config: PublisherConfig = field(default_factory=PublisherConfig)
    _last_seq: int = 0
    _node_due: float | None = None
    _served: dict[bytes, _Served] = field(default_factory=dict)

    def _seq(self, now: float) -> int:
        self._last_seq = max(self._last_seq + 1, int(now * 1000))
        return self._last_seq

    def start(self, now: float) -> list[Publish]:
        return [self._node(now)]

    def serving(self) -> list[bytes]:
        return list(self._served)

    def ticket(self, device: bytes, ticket: Ticket, now: float) -> list[Publish]:
        """A valid ticket of ``device`` naming this node was accepted (SPEC 5)."""
        served = self._served.get(device)
        if served is None:
            self._served[device] = _Served(ticket, None, now)
            return [self._location(device, now)]
        served.ticket = ticket
        return []

    def hello(self, device: bytes, binding: bytes, device_sig: bytes, now: float) -> list[Publish]:
        """A device proved its hello on a node that does not require tickets."""
        if device in self._served:
            return []
        self._served[device] = _Served(None, (binding, device_sig), now)
        return [self._location(device, now)]

    def left(self, device: bytes) -> None:
        """The device's session ended: stop republishing; its location lapses by itself."""
        self._served.pop(device, None)

    def tick(self, now: float) -> list[Publish]:
        out: list[Publish] = []
        if self._node_due is not None and now >= self._node_due:
            out.append(self._node(now))
        for device, served in self._served.items():
            if now >= served.due:
                out.append(self._location(device, now))
        return out

    def _node(self, now: float) -> Publish:
        cfg = self.config
        obj = make_node_object(self.key, self.record, seq=self._seq(now), expires=int(now) + cfg.node_ttl)
        self._node_due = now + cfg.node_republish
        return Publish(obj)

    def _location(self, device: bytes, now: float) -> Publish:
        cfg = self.config
        served = self._served[device]
        seq, expires = self._seq(now), int(now) + cfg.location_ttl
        if served.ticket is not None:
            obj = make_location(self.key, served.ticket, seq=seq, expires=expires)
        else:
            assert served.hello is not None
            binding, sig = served.hello
            obj = make_hello_location(self.key, device, binding, sig, seq=seq, expires=expires)
        served.due = now + cfg.location_republish
        return Publish(obj)
