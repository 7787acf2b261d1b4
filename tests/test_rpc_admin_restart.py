"""admin_restart_actor answers once chr_node_info can show the restart (actors/rpc_http.py).

The root's AdminReply (with the new pid) reaches the RPC actor in one hop; the tree row it
publishes goes supervisor -> root -> PubSub -> the RPC actor, and under load it came after the
answer, so a client reading chr_node_info right away saw the old process as running
(tests/test_daemon.py's RpcHttps restart test, 1 run in 6 at load 20-50). Here the root's side is
a scripted ask and the view is the real NodeView, written from another thread as the actor's is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from actors import messages as m
from actors import rpc_http
from chrnode.errors import RpcError
from chrnode.rpc.api import NodeView

NAME = "Network.RpcHttps"


def row(pid: int, state: str = "running") -> dict[str, Any]:
    return {"name": NAME, "parent": "Network", "state": state, "pid": pid}


class RootAnswers:
    """What LoopAsks.ask returns for RestartActor: one AdminReply."""

    def __init__(self, reply: m.AdminReply) -> None:
        self.reply = reply
        self.asked: list[Any] = []

    async def ask(self, target: Any, message: Any, timeout: float) -> m.AdminReply:
        self.asked.append(message)
        return self.reply


def publish_later(view: NodeView, delay: float, tree: list[dict[str, Any]]) -> threading.Thread:
    def publish() -> None:
        time.sleep(delay)
        view.set_part("tree", tree)

    thread = threading.Thread(target=publish)
    thread.start()
    return thread


def test_the_tree_predicate_wants_the_name_running_as_that_pid() -> None:
    assert rpc_http.tree_shows_running({"tree": [row(7)]}, NAME, 7)
    assert not rpc_http.tree_shows_running({"tree": [row(6)]}, NAME, 7)
    assert not rpc_http.tree_shows_running({"tree": [row(7, "starting")]}, NAME, 7)
    assert not rpc_http.tree_shows_running({"tree": []}, NAME, 7)
    assert not rpc_http.tree_shows_running({}, NAME, 7)


def test_the_answer_waits_for_the_view_to_show_the_new_pid() -> None:
    view = NodeView({"tree": [row(100)]})
    admin = rpc_http._Admin(RootAnswers(m.AdminReply(1, True, "restarted", 200)), view)  # type: ignore[arg-type]
    publisher = publish_later(view, 0.3, [row(200)])
    started = time.monotonic()
    asyncio.run(admin.restart_actor(NAME))
    waited = time.monotonic() - started
    publisher.join()
    assert rpc_http.tree_shows_running(view.snapshot, NAME, 200)
    assert 0.25 <= waited < rpc_http.TREE_CATCH_UP


def test_a_report_that_never_comes_delays_the_answer_a_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc_http, "TREE_CATCH_UP", 0.2)
    view = NodeView({"tree": [row(100)]})
    admin = rpc_http._Admin(RootAnswers(m.AdminReply(1, True, "restarted", 200)), view)  # type: ignore[arg-type]
    started = time.monotonic()
    asyncio.run(admin.restart_actor(NAME))
    assert 0.2 <= time.monotonic() - started < 5.0


def test_a_refused_restart_is_an_error_at_once() -> None:
    view = NodeView({"tree": [row(100)]})
    admin = rpc_http._Admin(RootAnswers(m.AdminReply(1, False, "no such actor")), view)  # type: ignore[arg-type]
    with pytest.raises(RpcError, match="no such actor"):
        asyncio.run(admin.restart_actor(NAME))
