"""The chain goes away mid-run and comes back (SPEC 7): cached lookups go on (stale once past their
TTL), uncached ones fail fast with ChainUnavailable, and everything recovers when anvil is started
again on the same port with its saved state."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chrnode.chain.cache import TieredCache
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.service import ChainContracts, ChainService
from chrnode.errors import ChainUnavailable
from chrnode.testing.anvil import DEV_CHAIN_ID, AnvilProcess, DevChain, deploy_all, skip_or_fail_without_anvil
from chrnode.testing.chain import ChainWorld, DirectL2

pytestmark = pytest.mark.chain


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_cached_lookups_survive_an_outage_and_uncached_ones_fail_fast(tmp_path: Path) -> None:
    skip_or_fail_without_anvil()
    state = tmp_path / "anvil-state.json"
    anvil = AnvilProcess(state_path=state)
    anvil.start()
    l2 = DirectL2(tmp_path / "chr-node.sqlite")
    try:
        with anvil.rpc() as admin:
            chain = DevChain(anvil, admin, deploy_all(anvil.rpc_url))
            world = ChainWorld.build(chain)
            world.register("com:cached", (b"\x01" * 20,))
            world.register("com:later", (b"\x02" * 20,))
            world.register("com:persisted", (b"\x03" * 20,))
        clock = Clock()
        contracts = ChainContracts.from_deployment(chain.deployment)
        with RemoteRpc([anvil.rpc_url], DEV_CHAIN_ID, timeout=2.0) as rpc:
            service = ChainService(rpc, contracts, TieredCache(100, l2, clock=clock), clock=clock)
            assert service.bns_resolve("cached.chronara.com").found
            assert service.bns_resolve("persisted.chronara.com").found
            block = service.proxy("eth_blockNumber")
            port = anvil.port
            anvil.stop()  # SIGTERM: anvil writes its state file

            assert service.bns_resolve("cached.chronara.com").device == b"\x01" * 20  # L1, fresh
            assert service.proxy("eth_blockNumber") == block
            started = time.monotonic()
            with pytest.raises(ChainUnavailable, match="unavailable"):
                service.bns_resolve("later.chronara.com")
            assert time.monotonic() - started < 2.0  # refused at once, no hang
            clock.now += 400  # past the contracts TTL: only a stale answer is left
            stale = service.bns_resolve("cached.chronara.com")
            assert stale.found and stale.stale and stale.device == b"\x01" * 20
            service.cache.clear_memory()  # like a restarted node: only L2 remains
            from_l2 = service.bns_resolve("persisted.chronara.com")
            assert from_l2.stale and from_l2.device == b"\x03" * 20

            anvil = AnvilProcess(port=port, state_path=state)
            anvil.start()
            assert anvil.port == port
            rpc.mark_answering(anvil.rpc_url)  # what RemoteChain.Monitor reports once its probe answers
            later = service.bns_resolve("later.chronara.com")
            assert later.found and not later.stale and later.device == b"\x02" * 20
            fresh = service.bns_resolve("cached.chronara.com")
            assert fresh.found and not fresh.stale
    finally:
        anvil.stop()
        l2.close()
