"""Object.Manager's decisions (chrnode.objects.publisher): the node's own record and its devices'
locations, signed, republished, and left to lapse."""

from __future__ import annotations

from chrnode.crypto import PrivateKey
from chrnode.edge.hello import sign_hello
from chrnode.objects.kinds import LOCATION, NODE, NodeRecord, location_device
from chrnode.objects.publisher import Publisher, PublisherConfig
from chrnode.objects.store import ObjectStore
from chrnode.ticket import Ticket

KEY = PrivateKey.from_bytes(b"\x07" * 32)
DEVICE = PrivateKey.from_bytes(b"\x08" * 32)
FLEET = b"\x60" * 20
RECORD = NodeRecord(KEY.address, "127.0.0.1", (41046,), 51055, 2, 31337)
CFG = PublisherConfig(node_ttl=100, node_republish=40, location_ttl=30, location_republish=10)
T0 = 1_800_000_000.0


def ticket(total: int) -> Ticket:
    return Ticket(31337, 694, KEY.address, FLEET, 1, total).sign(DEVICE)


def test_node_record_at_start_and_republished_before_it_expires() -> None:
    pub = Publisher(KEY, RECORD, CFG)
    (first,) = pub.start(T0)
    assert first.object.kind == NODE and first.object.expires == T0 + 100
    assert pub.tick(T0 + 39) == []
    (again,) = pub.tick(T0 + 40)
    assert again.object.seq > first.object.seq and again.object.expires > first.object.expires
    store = ObjectStore()
    assert store.offer(first.object, T0) and store.offer(again.object, T0 + 40)


def test_location_on_first_ticket_then_republished_with_the_latest_ticket() -> None:
    pub = Publisher(KEY, RECORD, CFG)
    pub.start(T0)
    (loc,) = pub.ticket(DEVICE.address, ticket(100), T0)
    assert loc.object.kind == LOCATION and location_device(loc.object) == DEVICE.address
    assert pub.ticket(DEVICE.address, ticket(200), T0 + 1) == []  # no STORE per ticket
    (later,) = pub.tick(T0 + 10)
    assert later.object.data["ticket"]["total_bytes"] == 200 and later.object.seq > loc.object.seq


def test_location_lapses_after_the_device_leaves() -> None:
    pub = Publisher(KEY, RECORD, CFG)
    (loc,) = pub.ticket(DEVICE.address, ticket(100), T0)
    pub.left(DEVICE.address)
    assert pub.tick(T0 + 10) == [] and pub.serving() == []
    store = ObjectStore()
    store.offer(loc.object, T0)
    assert store.get(DEVICE.address, T0 + 30) is None


def test_hello_location_where_tickets_are_not_required() -> None:
    pub = Publisher(KEY, RECORD, CFG)
    binding = bytes(12)
    (loc,) = pub.hello(DEVICE.address, binding, sign_hello(DEVICE, binding, KEY.address), T0)
    assert location_device(loc.object) == DEVICE.address


def test_seq_strictly_increases_even_if_the_clock_does_not() -> None:
    pub = Publisher(KEY, RECORD, CFG)
    seqs = [pub.start(T0)[0].object.seq for _ in range(3)]
    assert seqs == sorted(set(seqs))
