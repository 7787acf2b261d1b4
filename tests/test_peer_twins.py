"""Two nodes that dial each other at once (chrnode.peer.twins), pure: two nodes' rules over a
simulated pair of connections, every order of delivery generated. Both must end with one and the
same link, and what each one's connect() was given must be that link."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.peer.twins import Change, Keep, Twins, choose

LOW, HIGH = b"\x11" * 20, b"\xee" * 20


@dataclass
class Node:
    index: int
    twins: Twins[int]
    dial: int | None = None  # the connection we dialled
    dial_done: bool = False  # proven or failed
    result: int | str | None = None  # what connect() was given (a connection, or "failed")
    closed: set[int] = field(default_factory=set)
    proven: set[int] = field(default_factory=set)


@dataclass
class Net:
    """Connections between node 0 and node 1; per connection and direction a FIFO of messages."""

    nodes: list[Node]
    addresses: list[bytes]
    dialer: dict[int, int] = field(default_factory=dict)
    queues: dict[tuple[int, int], list[str]] = field(default_factory=dict)  # (conn, to) -> msgs

    def send(self, conn: int, to: int, msg: str) -> None:
        self.queues.setdefault((conn, to), []).append(msg)

    def start_dial(self, i: int) -> None:
        conn = len(self.dialer)
        self.dialer[conn] = i
        self.nodes[i].dial = conn
        self.send(conn, 1 - i, "hello")

    def deliver(self, key: tuple[int, int], now: float) -> None:
        conn, to = key
        msg = self.queues[key].pop(0)
        node = self.nodes[to]
        if conn in node.closed:
            return
        peer = self.addresses[1 - to]
        if msg == "hello":
            self.send(conn, 1 - to, "reply")
            node.proven.add(conn)
            self.apply(node, node.twins.up(peer, conn, False, now))
        elif msg == "reply":
            node.proven.add(conn)
            node.dial_done = True
            self.apply(node, node.twins.up(peer, conn, True, now))
        else:  # the other end closed it
            self.lost(node, conn)
        self.resolve(node)

    def lost(self, node: Node, conn: int) -> None:
        node.closed.add(conn)
        if conn in node.proven:
            self.apply(node, node.twins.down(self.addresses[1 - node.index], conn))
        elif conn == node.dial:
            node.dial_done = True  # our dial failed

    def apply(self, node: Node, change: Change[int]) -> None:
        for conn in change.close:
            if conn not in node.closed:
                self.send(conn, 1 - node.index, "close")
                self.lost(node, conn)

    def resolve(self, node: Node) -> None:
        """connect() is given the peer's link once its own dial is over and the choice settled."""
        peer = self.addresses[1 - node.index]
        if node.result is None and node.dial_done and node.twins.settled(peer):
            link = node.twins.link(peer)
            node.result = link if link is not None else "failed"


def run(order: list[int], low_first: bool, second_dial_at: int) -> Net:
    addresses = [LOW, HIGH] if low_first else [HIGH, LOW]
    nodes = [Node(i, Twins(addresses[i])) for i in (0, 1)]
    net = Net(nodes, addresses)
    net.start_dial(0)
    step, now = 0, 0.0
    while True:
        if step == second_dial_at:
            net.start_dial(1)
        ready = sorted(k for k, q in net.queues.items() if q)
        if not ready:
            if step < second_dial_at:
                step = second_dial_at
                continue
            return net
        net.deliver(ready[order[step % len(order)] % len(ready)], now)
        step += 1
        now += 0.01


@given(st.lists(st.integers(0, 7), min_size=1, max_size=40), st.booleans(), st.integers(0, 6))
@settings(max_examples=500, deadline=None)
def test_both_keep_the_same_link_and_connect_gets_it(order: list[int], low_first: bool, at: int) -> None:
    net = run(order, low_first, at)
    a, b = net.nodes
    la, lb = a.twins.link(net.addresses[1]), b.twins.link(net.addresses[0])
    assert la is not None and lb is not None, "a node was left with no link"
    assert la == lb, "the two ends kept different links"
    assert la not in a.closed and la not in b.closed
    assert a.twins.settled(net.addresses[1]) and b.twins.settled(net.addresses[0])
    assert a.result == la and b.result == la, "connect() was given a link that was then closed"


def test_the_rule_itself() -> None:
    # The lower node keeps the first link up there, whoever dialled it.
    assert choose(LOW, HIGH, True, False, False) is Keep.EXISTING
    assert choose(LOW, HIGH, False, False, True) is Keep.EXISTING
    # The higher node: its own came first -> the lower kept it too; the peer's came first -> wait.
    assert choose(HIGH, LOW, True, False, False) is Keep.EXISTING
    assert choose(HIGH, LOW, False, False, True) is Keep.BOTH
    # A closing link gives way; a second dial by the same side replaces its first.
    assert choose(LOW, HIGH, True, True, False) is Keep.NEW
    assert choose(LOW, HIGH, False, False, False) is Keep.NEW
    assert choose(HIGH, LOW, True, False, True) is Keep.NEW


def test_a_decider_that_never_chooses_is_given_the_settle_timeout() -> None:
    t: Twins[str] = Twins(HIGH, settle_timeout=5.0)
    assert t.up(LOW, "inbound", False, 0.0) == Change("inbound", became=True)
    assert t.up(LOW, "ours", True, 1.0) == Change("inbound", settled=False)
    assert t.second(LOW) == "ours" and t.second(HIGH) is None
    assert t.tick(5.9) == {} and not t.settled(LOW)
    assert t.tick(6.0) == {LOW: Change("inbound", ("ours",))}
    assert t.settled(LOW) and t.link(LOW) == "inbound"


def test_the_second_link_takes_over_when_the_decider_closes_the_first() -> None:
    t: Twins[str] = Twins(HIGH)
    t.up(LOW, "inbound", False, 0.0)
    t.up(LOW, "ours", True, 0.1)
    assert t.down(LOW, "inbound") == Change("ours", became=True)
    assert t.settled(LOW) and t.link(LOW) == "ours"
    assert t.down(LOW, "ours") == Change(None) and t.link(LOW) is None
