"""One way for a thread to reach an actor (actors/bridge.py): ThreadBridge.post(name, message).
A pool thread reporting to its own actor posts to that actor's name, and the message is handled
by the actor's receiveMsg_* on the actor's thread, as a message from another actor would be. On a
real multiprocTCPBase system, with a real thread pool (chrnode/testing/pool.py)."""

from __future__ import annotations

import time

from actors import chain_messages as cm
from actors import messages as m
from chrnode.testing.pool import Note, PoolState, PoolStateReply, Square
from chrnode.testing.tree import TreeHandle, running_tree, tree_config

SQUARER = "chrnode.testing.pool:Squarer"


def spec() -> m.ChildSpec:
    return m.ChildSpec("Root", "actors.supervisor:Supervisor", children=(m.ChildSpec("Squarer", SQUARER),))


def state(tree: TreeHandle) -> PoolStateReply:
    reply = tree.ask("Squarer", PoolState())
    assert isinstance(reply, PoolStateReply), reply
    return reply


def test_a_pool_answer_goes_back_to_who_asked() -> None:
    with running_tree(spec(), tree_config()) as tree:
        for n in (3, 12, 2**40):
            answer = tree.ask("Squarer", Square(n, tag=f"t{n}"))
            assert answer == cm.ChainAnswer(f"t{n}", True, n * n)
        assert state(tree).queued == 0  # each answer passed through the actor's own handler


def test_a_thread_posts_to_its_own_actor_by_name() -> None:
    with running_tree(spec(), tree_config()) as tree:
        address = tree.snapshot().registry["Squarer"]
        for text in ("one", "two"):
            tree.asys.tell(address, Note(text))
        deadline = time.monotonic() + 10.0
        while len(state(tree).notes) < 2:
            assert time.monotonic() < deadline, state(tree)
            time.sleep(0.02)
        notes = state(tree).notes
        assert sorted(text for text, _, _ in notes) == ["one", "two"]
        for _text, posted_by, handled_by in notes:
            assert posted_by.startswith("chain-Squarer")  # a pool thread posted it
            assert handled_by == "MainThread"  # and the actor's own thread handled it
