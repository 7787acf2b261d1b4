"""The DHT machine's requests and answers (chrnode.dht.messages) as the typed peer messages of
SPEC 4 (chrnode.peer.messages, types 0x20-0x23), both ways. Pure; the one codec between the two.

The wire itself (msgpack fields, sizes, at most k node objects, signatures of the objects inside)
is chrnode.peer.messages' to check, and the kind rules (a node object names itself, a location
carries its device's ticket, no far-future expiry) chrnode.net.codecs'; this module only maps
the checked messages onto the machine's vocabulary:

    PING        0x20  {}                 -> {time} (milliseconds)
    STORE       0x21  {object}           -> {} | error stale / expired / rate_limited / ...
    FIND_NODE   0x22  {target: 20 B}     -> {nodes: [node object, ...]}   closest first, <= k
    FIND_VALUE  0x23  {key: 20 B}        -> {object} | {nodes: [...]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chrnode.dht import DhtProtocolError
from chrnode.dht import messages as dm
from chrnode.dht.ids import Contact
from chrnode.edge import codes
from chrnode.edge.messages import ErrorReply
from chrnode.net.codecs import ObjectCodec
from chrnode.objects.errors import MIS_KEYED
from chrnode.objects.signed import SignedObject
from chrnode.peer import messages as pm

__all__ = ["from_peer_answer", "from_peer_request", "to_peer_answer", "to_peer_request"]

PeerAnswer = pm.PeerPingReply | pm.Nodes | pm.ValueFound | pm.Empty | dm.Refused


def to_peer_request(request: dm.Request, codec: ObjectCodec) -> Any:
    """The peer message that carries one of the machine's requests."""
    if isinstance(request, dm.Ping):
        return pm.PeerPing()
    if isinstance(request, dm.FindNode):
        return pm.FindNode(request.target)
    if isinstance(request, dm.FindValue):
        return pm.FindValue(request.key)
    return pm.Store(codec.object_of(request.value.obj))


def from_peer_request(msg: Any, codec: ObjectCodec) -> dm.Request:
    """A received DHT request for the machine; DhtProtocolError with the code to answer."""
    if isinstance(msg, pm.PeerPing):
        return dm.Ping()
    if isinstance(msg, pm.FindNode):
        return dm.FindNode(msg.target)
    if isinstance(msg, pm.FindValue):
        return dm.FindValue(msg.key)
    if isinstance(msg, pm.Store):
        return dm.Store(codec.decode_value(msg.object))
    raise DhtProtocolError(codes.UNEXPECTED_MESSAGE, f"not a DHT request: {type(msg).__name__}")


def to_peer_answer(
    answer: dm.Answer, codec: ObjectCodec, record_of: Callable[[Contact], SignedObject | None]
) -> PeerAnswer:
    """The answer to send; a Refused goes out as an error answer. ``record_of`` gives a
    contact's node object (a contact without one is left out: it cannot be passed on)."""
    if isinstance(answer, dm.Pong):
        return pm.PeerPingReply(int(answer.time * 1000))
    if isinstance(answer, dm.Nodes):
        records = [record_of(contact) for contact in answer.contacts]
        return pm.Nodes(tuple(r for r in records if r is not None))
    if isinstance(answer, dm.Found):
        return pm.ValueFound(codec.object_of(answer.value.obj))
    if isinstance(answer, dm.Refused):
        return answer
    return pm.Empty()


def from_peer_answer(request: dm.Request, answer: Any, codec: ObjectCodec) -> dm.Answer | None:
    """A received answer (typed, an ErrorReply, a PeerError or None for no answer) for the
    machine; None when it is no answer at all. DhtProtocolError when it breaks SPEC 4/6."""
    if isinstance(answer, ErrorReply):
        return dm.Refused(answer.code, answer.message)
    if isinstance(answer, pm.PeerPingReply) and isinstance(request, dm.Ping):
        return dm.Pong(answer.time / 1000)
    if isinstance(answer, pm.Empty) and isinstance(request, dm.Store):
        return dm.Stored()
    if isinstance(answer, pm.ValueFound):
        value = codec.decode_value(answer.object)
        if not isinstance(request, dm.FindValue) or value.key != request.key:
            raise DhtProtocolError(MIS_KEYED, "FIND_VALUE answered with an object of another key")
        return dm.Found(value)
    if isinstance(answer, pm.Nodes) and isinstance(request, dm.FindNode | dm.FindValue):
        return dm.Nodes([codec.decode_contact(obj) for obj in answer.nodes])
    if answer is None or isinstance(answer, Exception):
        return None
    what = f"{type(answer).__name__} does not answer {type(request).__name__}"
    raise DhtProtocolError(codes.BAD_PAYLOAD, what)
