"""The RemoteChain actors (SPEC 7, 9) on a real actor system and a real anvil: BNS, fleet, payment
and proxied reads through RemoteChain.Cache, the Monitor's status, ticket submission through
RemoteChain.RPC, L2 writes through the single writer, and a node with no chain at all."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

from actors import chain_messages as cm
from actors import messages as m
from actors.base import ChrActor
from chrnode.chain.contracts import TicketRegistry
from chrnode.chain.service import BnsResolution
from chrnode.config import Config
from chrnode.crypto import PrivateKey
from chrnode.errors import NameError_, TicketError
from chrnode.storage import Reader, TicketUpsert, database_path, open_database
from chrnode.testing.anvil import DevChain, anvil_session, skip_or_fail_without_anvil
from chrnode.testing.chain import NODE_KEY, ChainWorld
from chrnode.testing.tree import TreeHandle, running_tree

pytestmark = [pytest.mark.chain, pytest.mark.slow]
ROOT = "ChronaraNode.Supervisor"
PRICE = 2


@dataclass(frozen=True)
class GetParts:
    pass


class SnapshotProbe(ChrActor):
    """Follows topic "snapshot" like the RPC actor does; answers GetParts with what it saw."""

    SUBSCRIBE = ("snapshot",)

    def on_start(self, init: m.Init) -> None:
        self.parts: dict[str, Any] = {}

    def on_published(self, topic: str, key: str, payload: Any) -> None:
        self.parts[key] = payload

    def receiveMsg_GetParts(self, msg: GetParts, sender: Any) -> None:
        self.send(sender, dict(self.parts))


def chain_tree() -> m.ChildSpec:
    return m.ChildSpec(
        ROOT,
        "actors.supervisor:Supervisor",
        strategy="rest_for_one",
        children=(
            m.ChildSpec(
                "Model.Sql",
                "actors.supervisor:Supervisor",
                children=(
                    m.ChildSpec("Model.Sql.Worker", "actors.model_sql:SqlWorker"),
                    m.ChildSpec("Model.Sql.Cache", "actors.model_sql:SqlCache"),
                ),
            ),
            m.ChildSpec("PubSub", "actors.pubsub:PubSub"),
            m.ChildSpec("Probe", "tests.test_remote_chain:SnapshotProbe"),
            m.ChildSpec(
                "RemoteChain",
                "actors.supervisor:Supervisor",
                children=(
                    m.ChildSpec("RemoteChain.RPC", "actors.remote_chain:RemoteChainRpc"),
                    m.ChildSpec("RemoteChain.Monitor", "actors.remote_chain:RemoteChainMonitor"),
                    m.ChildSpec("RemoteChain.Cache", "actors.remote_chain:RemoteChainCache"),
                ),
            ),
        ),
    )


def ask(tree: TreeHandle, name: str, message: Any, timeout: float = 15.0) -> cm.ChainAnswer:
    answer = tree.ask(name, message, timeout)
    assert isinstance(answer, cm.ChainAnswer), answer
    assert answer.tag == message.tag
    return answer


def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.05)


def write_node_key(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(data_dir / "node.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(NODE_KEY.hex() + "\n")


@pytest.fixture(scope="module")
def devchain() -> Iterator[DevChain]:
    skip_or_fail_without_anvil()
    with anvil_session() as chain:
        yield chain


@pytest.fixture(scope="module")
def world(devchain: DevChain) -> ChainWorld:
    world = ChainWorld.build(devchain, price_per_byte=PRICE, requires_payment=True)
    for namespace, device in (("com:shop", b"\x01"), ("net:cam", b"\x02"), ("app:door", b"\x03")):
        world.register(namespace, (device * 20,))
    return world


@pytest.fixture(scope="module")
def node(world: ChainWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TreeHandle, Config]]:
    data_dir = tmp_path_factory.mktemp("node")
    write_node_key(data_dir)
    c = world.chain.contracts
    config = Config(
        data_dir=data_dir,
        chain_rpc=(world.chain.rpc_url,),
        log_level="warning",
        worker_pool_size=4,
        bns_contract=c["bns"],
        fleet_contract=c["fleet"],
        chai_contract=c["chai"],
        ticket_registry_contract=c["ticket_registry"],
        chain_timeout=5.0,
    )
    with running_tree(chain_tree(), config) as tree:
        yield tree, config


def test_names_resolve_through_the_cache_actor(node: tuple[TreeHandle, Config]) -> None:
    tree, config = node
    for tag, (name, device) in enumerate(
        (("shop.chronara.com", b"\x01"), ("cam.chronara.net", b"\x02"), ("door.chronara.app", b"\x03"))
    ):
        answer = ask(tree, "RemoteChain.Cache", cm.BnsResolve(name, tag=tag))
        assert answer.ok and isinstance(answer.result, BnsResolution)
        assert answer.result.found and answer.result.device == device * 20
    missing = ask(tree, "RemoteChain.Cache", cm.BnsResolve("ghost.chronara.io", tag="g"))
    assert missing.ok and not missing.result.found
    bad = ask(tree, "RemoteChain.Cache", cm.BnsResolve("x.chronara.xyz", tag="bad"))
    assert (bad.ok, bad.code) == (False, "bad_name") and "unknown TLD" in bad.error
    assert isinstance(cm.answer_error(bad), NameError_)
    # the L2 row reaches SQLite through Model.Sql.Worker
    db = open_database(database_path(config.data_dir), readonly=True)
    try:
        reader = Reader(db)

        def stored() -> Any:
            # The Monitor's watch starts 16 blocks back and may drop the entry for the name's own
            # Register event after it was stored: resolving again stores it anew.
            ask(tree, "RemoteChain.Cache", cm.BnsResolve("shop.chronara.com", tag="again"))
            return reader.cache_get("chain.contracts", "bns:com:shop", time.time())

        wait_for(stored, what="L2 row")
    finally:
        db.shutdown()


def test_fleet_and_payment_checks_through_the_cache_actor(
    world: ChainWorld, node: tuple[TreeHandle, Config]
) -> None:
    tree, _ = node
    outsider = PrivateKey.generate()
    fleet, node_address = world.fleet_address, world.node.address
    device = world.device.address
    allowed = ask(tree, "RemoteChain.Cache", cm.FleetCheckRequest(fleet, node_address, device, 1))
    assert allowed.ok and allowed.result == (True, True)
    denied = ask(tree, "RemoteChain.Cache", cm.FleetCheckRequest(fleet, node_address, outsider.address, 2))
    assert denied.ok and denied.result == (True, False)
    paid = world.ticket(total_bytes=100, payment_proof=world.pay(fleet, PRICE * 100))
    ok = ask(tree, "RemoteChain.Cache", cm.PaymentCheckRequest(paid, world.device.address, 3))
    assert ok.ok, ok.error
    unpaid = ask(tree, "RemoteChain.Cache", cm.PaymentCheckRequest(world.ticket(), world.device.address, 4))
    assert (unpaid.ok, unpaid.code) == (False, "payment_missing")
    small = world.ticket(total_bytes=100, payment_proof=world.pay(fleet, PRICE * 100 - 1))
    too_small = ask(tree, "RemoteChain.Cache", cm.PaymentCheckRequest(small, world.device.address, 5))
    error = cm.answer_error(too_small)
    assert isinstance(error, TicketError) and error.code == "payment_too_small"
    status = ask(tree, "RemoteChain.Cache", cm.FleetStatusRequest(node_address, tag=6))
    assert status.ok and status.result["node_allowed"] and status.result["requires_payment"]


def test_proxied_and_raw_reads(world: ChainWorld, node: tuple[TreeHandle, Config]) -> None:
    tree, _ = node
    cached = ask(tree, "RemoteChain.Cache", cm.EthRequest("eth_chainId", (), tag="c"))
    raw = ask(tree, "RemoteChain.RPC", cm.EthRequest("eth_chainId", (), tag="r"))
    assert cached.result == raw.result == "0x7a69"
    address = "0x" + world.node.address.hex()
    balance = ask(tree, "RemoteChain.Cache", cm.EthRequest("eth_getBalance", (address,), 1))
    assert int(balance.result, 16) > 0
    bad = ask(tree, "RemoteChain.Cache", cm.EthRequest("eth_getBalance", ("0x12",), tag=2))
    assert (bad.ok, bad.code) == (False, "invalid_params")
    refused = ask(tree, "RemoteChain.RPC", cm.EthRequest("eth_sendTransaction", ({},), tag=3))
    assert (refused.ok, refused.code) == (False, "method_not_found")


def test_monitor_and_cache_publish_their_snapshots(
    world: ChainWorld, node: tuple[TreeHandle, Config]
) -> None:
    tree, _ = node
    status = ask(tree, "RemoteChain.Monitor", cm.ChainStatusRequest(tag="s")).result
    assert status["configured"] and status["chain_id"] == 31337

    def monitor_status() -> str:
        return str(ask(tree, "RemoteChain.Monitor", cm.ChainStatusRequest(tag="s")).result["status"])

    wait_for(lambda: monitor_status() == "synced", what="monitor synced")
    ask(tree, "RemoteChain.Cache", cm.BnsResolve("shop.chronara.com", tag="again"))
    parts = wait_for(
        lambda: (
            (p := tree.ask("Probe", GetParts(), 10))
            and "chain" in p
            and "cache" in p
            and "fleet_chain" in p
            and p["cache"]["hits"]["l1"] > 0
            and p
        ),
        what="snapshots",
    )
    standing = parts["fleet_chain"]
    assert standing["ok"] and standing["node_allowed"] and standing["node"] == "0x" + world.node.address.hex()
    chain, cache = parts["chain"], parts["cache"]
    assert chain["head"] is not None and chain["epoch"] == world.epoch
    assert chain["endpoints"][0]["status"] == "up"
    assert cache["configured"] and cache["l2"] == "on" and cache["requests"] >= 2


def test_tickets_are_submitted_and_recorded(world: ChainWorld, node: tuple[TreeHandle, Config]) -> None:
    tree, config = node
    second = PrivateKey.generate()
    world.allow_device(second.address)
    tickets = [world.ticket(total_bytes=300), world.ticket(second, total_bytes=200)]
    ops = tuple(
        TicketUpsert(
            device,
            t.fleet,
            t.epoch,
            t.total_bytes,
            t.total_connections,
            msgpack.packb(t.to_wire(), use_bin_type=True),
            time.time(),
        )
        for device, t in zip((world.device.address, second.address), tickets, strict=True)
    )
    written = tree.ask("Model.Sql.Worker", m.SqlWrite(ops, tag="tickets"), 10)
    assert isinstance(written, m.SqlWritten) and written.ok
    answer = ask(tree, "RemoteChain.RPC", cm.SubmitTickets(world.epoch, tag="submit"), timeout=30)
    assert answer.ok, answer.error
    assert answer.result["accepted"] == 2 and answer.result["not_sent"] == 0
    registry = TicketRegistry(world.chain.rpc, world.chain.address("ticket_registry"))
    totals = registry.best_totals(world.node.address, second.address, world.fleet_address, world.epoch)
    assert totals == (1, 200)
    db = open_database(database_path(config.data_dir), readonly=True)
    try:
        reader = Reader(db)
        row = wait_for(
            lambda: (
                (r := reader.best_ticket(second.address, world.fleet_address, world.epoch))
                and r.accepted is not None
                and r
            ),
            what="ticket marked",
        )
        assert row.accepted is True and row.submit_tx is not None
        assert reader.unsubmitted_tickets(world.epoch) == []
    finally:
        db.shutdown()
