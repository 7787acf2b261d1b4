"""Signed objects (chrnode.objects, SPEC 6) as the DHT's contacts and values (chrnode.dht).

The DHT keeps node objects and values opaque; these codecs are where they are checked: a node
object in a FIND answer must verify and name itself before it becomes a Contact, and a STORE'd
object must pass the store's kind rules (a location carries its device's ticket naming its
signer) before it becomes a Value.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chrnode.dht import DhtProtocolError
from chrnode.dht.ids import Contact
from chrnode.dht.store import Value
from chrnode.objects.errors import BAD_PAYLOAD, EXPIRED, ObjectError
from chrnode.objects.kinds import NODE, NodeRecord, check_kind
from chrnode.objects.signed import SignedObject
from chrnode.objects.store import DEFAULT_MAX_TTL

__all__ = ["ObjectCodec", "contact_of"]


def contact_of(obj: SignedObject) -> Contact:
    """The contact a checked node object describes (its record travels with it)."""
    record = NodeRecord.from_object(obj)
    return Contact(obj.key, record.host, record.peer_port, obj)


class ObjectCodec:
    """Node objects as Contacts and signed objects as Values of chrnode.dht, checked.

    ``accept_hello``: whether a location may carry a hello proof instead of a ticket (SPEC 6: a
    node that requires tickets may refuse it).
    """

    def __init__(self, *, accept_hello: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.accept_hello = accept_hello
        self.clock = clock
        self.max_ttl = dict(DEFAULT_MAX_TTL)

    def object_of(self, raw: object) -> SignedObject:
        try:
            obj = raw if isinstance(raw, SignedObject) else SignedObject.from_wire(raw)
            check_kind(obj, accept_hello=self.accept_hello)
        except ObjectError as exc:
            raise DhtProtocolError(exc.code, str(exc)) from None
        ttl = self.max_ttl.get(obj.kind, 0)
        if obj.expires > self.clock() + ttl:  # a forged far-future object must not pin a key
            raise DhtProtocolError(
                EXPIRED, f"a {obj.kind} object may live at most {ttl} s ahead, this one longer"
            )
        return obj

    def decode_contact(self, record: object) -> Contact:
        obj = self.object_of(record)
        if obj.kind != NODE:
            raise DhtProtocolError(BAD_PAYLOAD, f"a FIND answer lists node objects, not {obj.kind!r}")
        return contact_of(obj)

    def decode_value(self, raw: object) -> Value:
        obj = self.object_of(raw)
        return Value(obj.key, obj.seq, float(obj.expires), obj)
