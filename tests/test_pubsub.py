"""PubSub on a real actor system: what a subscriber that was not registered yet missed reaches it
once the registry names it (actors/pubsub.py)."""

from __future__ import annotations

import time

import pytest

from actors import messages as m
from chrnode.testing.actors import Collector, Recall
from chrnode.testing.tree import running_tree

pytestmark = pytest.mark.slow


def recalled(asys, address):  # type: ignore[no-untyped-def]
    """The "node" payloads the collector got (the root publishes its "tree" there too)."""
    reply = asys.ask(address, Recall(), 5)
    while reply is not None and not (isinstance(reply, tuple) and reply[0] == "recalled"):
        reply = asys.listen(5)  # a Published replayed to us, the Subscribe's sender
    assert reply is not None, "the collector did not answer"
    return [p for p in reply[1] or () if p[1] != "tree"] or None


def test_a_subscriber_registered_after_a_publish_gets_what_is_retained() -> None:
    spec = m.ChildSpec(
        "Root", "actors.supervisor:Supervisor", children=(m.ChildSpec("PubSub", "actors.pubsub:PubSub"),)
    )
    with running_tree(spec) as tree:
        pubsub = tree.snapshot().registry["PubSub"]
        collector = tree.asys.createActor(Collector)
        # "Late" subscribes (as a restarted actor does from its start), then a payload is
        # published before the registry push that names it has reached PubSub
        tree.asys.tell(pubsub, m.Subscribe("snapshot", "Late"))
        tree.asys.tell(pubsub, m.Publish("snapshot", "node", {"n": 1}))
        tree.asys.tell(pubsub, m.Publish("other", "x", 2))  # a topic it did not subscribe to
        assert recalled(tree.asys, collector) is None
        tree.asys.tell(tree.root, m.Registered("Late", collector, 0, "Root"))
        deadline = time.monotonic() + 10
        while (got := recalled(tree.asys, collector)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [("snapshot", "node", {"n": 1})]
        tree.asys.tell(pubsub, m.Publish("snapshot", "node", {"n": 2}))  # registered now: at once
        while len(got := recalled(tree.asys, collector)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [("snapshot", "node", {"n": 1}), ("snapshot", "node", {"n": 2})]
