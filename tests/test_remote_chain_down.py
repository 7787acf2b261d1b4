"""A node whose chain is absent (no contracts, nothing listening): the RemoteChain actors start
anyway, say why they are down, and every lookup fails at once (SPEC 7).

Its own module: Thespian allows one actor system per test process at a time, and
test_remote_chain keeps its tree for the whole module."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from actors import chain_messages as cm
from chrnode.config import Config
from chrnode.errors import ChainNotConfigured
from chrnode.testing.tree import running_tree
from tests.test_remote_chain import ask, chain_tree, wait_for

pytestmark = pytest.mark.slow


def free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_node_without_a_chain_starts_and_fails_fast(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, chain_rpc=(free_url(),), log_level="warning", worker_pool_size=2)
    with running_tree(chain_tree(), config) as tree:
        started = time.monotonic()
        answer = ask(tree, "RemoteChain.Cache", cm.BnsResolve("shop.chronara.com", tag=1))
        assert (answer.ok, answer.code) == (False, "not_configured")
        assert "contracts.json" in answer.error and isinstance(cm.answer_error(answer), ChainNotConfigured)
        check = cm.FleetCheckRequest(b"\x01" * 20, b"\x02" * 20, b"\x03" * 20, 2)
        fleet = ask(tree, "RemoteChain.Cache", check)
        # Without the node's contracts no fleet rule applies: said at once, no chain call made.
        assert (fleet.ok, fleet.code) == (False, "not_configured")
        assert time.monotonic() - started < 5.0
        status = wait_for(
            lambda: (
                (s := ask(tree, "RemoteChain.Monitor", cm.ChainStatusRequest(3)).result)
                and s["endpoints"][0]["checked_at"]
                and s
            ),
            what="first poll",
        )
        assert status["status"] == "down" and not status["configured"]
        assert status["reason"].startswith("not configured") and status["endpoints"][0]["status"] == "down"
