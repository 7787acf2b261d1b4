"""The DHT machine's requests and answers (SPEC 4 types 0x20-0x23), as plain values.

The node machine (chrnode.dht.node) speaks in these dataclasses only. On the wire they are the
typed peer messages of chrnode.peer.messages (the one payload codec, with its schema checks),
mapped both ways by chrnode.net.dht_wire; node objects and signed objects stay opaque here (a
`Contact` keeps its node object as `record`, a `Value` its signed object as `obj`).
"""

from __future__ import annotations

from dataclasses import dataclass

from chrnode.dht.ids import Contact
from chrnode.dht.store import Value


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class FindNode:
    target: bytes


@dataclass(frozen=True)
class FindValue:
    key: bytes


@dataclass(frozen=True)
class Store:
    value: Value


Request = Ping | FindNode | FindValue | Store


@dataclass(frozen=True)
class Pong:
    time: float


@dataclass(frozen=True)
class Nodes:
    contacts: list[Contact]


@dataclass(frozen=True)
class Found:
    value: Value


@dataclass(frozen=True)
class Stored:
    pass


@dataclass(frozen=True)
class Refused:
    """An error answer (SPEC 4: response and error flags, `{code, message}`)."""

    code: str
    message: str


Answer = Pong | Nodes | Found | Stored | Refused
