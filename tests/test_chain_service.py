"""ChainService on a real anvil (SPEC 7): BNS in several TLDs, fleet allowlists (SPEC 5 step 4),
proxied eth_* reads, failover, and what happens without contracts."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrnode.chain import hexcodec as hx
from chrnode.chain.cache import TieredCache
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.service import ChainContracts, ChainFleetCheck, ChainService
from chrnode.config import Config
from chrnode.crypto import PrivateKey
from chrnode.edge import codes
from chrnode.errors import ChainNotConfigured, NameError_, RpcError, TicketError
from chrnode.testing.anvil import DEPLOYER, DEV_CHAIN_ID, DevChain
from chrnode.testing.chain import ChainWorld
from chrnode.ticket import TicketValidator

pytestmark = pytest.mark.chain


def dead_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def world(chain: DevChain) -> ChainWorld:
    return ChainWorld.build(chain)


@pytest.fixture
def service(chain: DevChain) -> Iterator[ChainService]:
    with RemoteRpc([chain.rpc_url], DEV_CHAIN_ID, timeout=5.0) as rpc:
        yield ChainService(rpc, ChainContracts.from_deployment(chain.deployment), TieredCache(1000))


NAMES = {
    "alpha.chronara.com": "com:alpha",
    "beta.chronara.net": "net:beta",
    "gamma.chronara.ai": "ai:gamma",
    "delta.chronara.io": "io:delta",
    "eps.chronara.org": "org:eps",
    "zeta.chronara.app": "app:zeta",
    "plain": "default:plain",
}


def test_names_in_every_tld_resolve(world: ChainWorld, service: ChainService) -> None:
    devices = {ns: (bytes([i + 1]) * 20, bytes([i + 100]) * 20) for i, ns in enumerate(NAMES.values())}
    for namespace, devs in devices.items():
        world.register(namespace, devs)
    for name, namespace in NAMES.items():
        record = service.bns_resolve(name)
        assert record.found and record.namespace == namespace
        assert record.device == devices[namespace][0] and record.devices == devices[namespace]
        assert record.owner == DEPLOYER.address and not record.stale
        assert record.as_json()["device"] == hx.hex_address(devices[namespace][0])
    assert service.bns_resolve("com:alpha").device == devices["com:alpha"][0]  # the namespace form
    before = service.cache.stats()["hits"]
    service.bns_resolve("alpha.chronara.com")
    after = service.cache.stats()["hits"]
    assert after["l1"] == before["l1"] + 1 and after["chain"] == before["chain"]


def test_unknown_and_expired_names_are_not_found(world: ChainWorld, service: ChainService) -> None:
    record = service.bns_resolve("nobody.chronara.io")
    assert not record.found and not record.registered and record.device is None
    assert record.as_json()["owner"] is None
    world.register("com:brief", (b"\x05" * 20,), ttl=60)
    clocked = ChainService(service.rpc, service.contracts, TieredCache(10), clock=lambda: time.time() + 3600)
    late = clocked.bns_resolve("brief.chronara.com")
    assert late.registered and late.expired and not late.found and late.device is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("x.chronara.xyz", "unknown TLD 'xyz'"),
        ("Upper.chronara.com", "outside a-z"),
        ("a.b.chronara.com", "not of the form"),
        ("", "empty BNS name"),
        ("-x", "starting or ending with '-'"),
    ],
)
def test_bad_names_fail_before_any_chain_call(name: str, problem: str) -> None:
    with RemoteRpc([dead_url()], DEV_CHAIN_ID, timeout=1.0) as rpc:
        service = ChainService(rpc, ChainContracts(bns=b"\x01" * 20), TieredCache(10))
        with pytest.raises(NameError_, match=problem):
            service.bns_resolve(name)
        assert service.cache.stats()["requests"] == 0


def test_without_contracts_lookups_fail_at_once_with_the_reason() -> None:
    contracts = ChainContracts(problem="no address for bns_contract in the config and no contracts.json")
    with RemoteRpc([dead_url()], DEV_CHAIN_ID, timeout=5.0) as rpc:
        service = ChainService(rpc, contracts, TieredCache(10))
        started = time.monotonic()
        with pytest.raises(ChainNotConfigured, match="bns contract is not configured: no address for bns_"):
            service.bns_resolve("alpha.chronara.com")
        with pytest.raises(ChainNotConfigured, match="fleet contract"):
            service.fleet_status(b"\x01" * 20)
        assert time.monotonic() - started < 1.0


def test_contract_addresses_come_from_config_or_contracts_json(chain: DevChain, tmp_path: Path) -> None:
    d = chain.contracts
    keys = {f"{role}_contract": d[role] for role in ("bns", "fleet", "chai", "ticket_registry")}
    from_keys = ChainContracts.from_config(Config(data_dir=tmp_path, **keys))
    assert from_keys.configured and from_keys.bns == chain.address("bns") and from_keys.source == "config"
    missing = ChainContracts.from_config(Config(data_dir=tmp_path))
    assert not missing.configured
    assert "bns_contract" in missing.problem and "contracts.json" in missing.problem
    (tmp_path / "contracts.json").write_text(json.dumps(d))
    from_file = ChainContracts.from_config(Config(data_dir=tmp_path, fleet_contract="0x" + "11" * 20))
    assert from_file.configured and from_file.fleet == b"\x11" * 20 and from_file.bns == chain.address("bns")
    other_chain = ChainContracts.from_config(Config(data_dir=tmp_path, chain_id=5))
    assert not other_chain.configured and "is for chain 31337" in other_chain.problem
    (tmp_path / "contracts.json").write_text("{not json")
    assert "cannot read contract addresses" in ChainContracts.from_config(Config(data_dir=tmp_path)).problem


def test_fleet_allowlists_decide_step_4(world: ChainWorld, service: ChainService) -> None:
    validator = TicketValidator(world.node.address, DEV_CHAIN_ID, fleet_check=ChainFleetCheck(service))
    accepted = validator.validate(world.ticket(), world.device.address, world.epoch)
    assert accepted.added_bytes == 1000
    outsider = PrivateKey.generate()
    with pytest.raises(TicketError) as refused:
        validator.validate(world.ticket(outsider), outsider.address, world.epoch)
    assert refused.value.code == codes.FLEET_DENIED_DEVICE
    stranger_node = TicketValidator(b"\x09" * 20, DEV_CHAIN_ID, fleet_check=ChainFleetCheck(service))
    for_stranger = dataclasses.replace(world.ticket(), node=b"\x09" * 20).sign(world.device)
    with pytest.raises(TicketError) as denied:
        stranger_node.validate(for_stranger, world.device.address, world.epoch)
    assert denied.value.code == codes.FLEET_DENIED_NODE
    not_a_fleet = world.ticket(fleet=b"\x07" * 20)
    with pytest.raises(TicketError) as nothing_there:
        validator.validate(not_a_fleet, world.device.address, world.epoch)
    assert nothing_there.value.code == codes.FLEET_DENIED_NODE


def test_fleet_answers_are_cached_for_the_contracts_ttl(world: ChainWorld, service: ChainService) -> None:
    fleet, device = world.fleet_address, world.device.address
    assert service.fleet_allows_device(fleet, device)
    world.allow_device(device, False)
    assert service.fleet_allows_device(fleet, device)  # cached (5 min, SPEC 7)
    service.cache.invalidate("contracts", f"fleet:{fleet.hex()}:device:{device.hex()}")
    assert not service.fleet_allows_device(fleet, device)
    status = service.fleet_status(world.node.address)
    assert status["node_allowed"] and status["fleet"] == hx.hex_address(fleet)
    assert status["token"] == hx.hex_address(world.chain.address("chai")) and not status["requires_payment"]


def test_proxied_reads_answer_like_the_endpoint(world: ChainWorld, service: ChainService) -> None:
    rpc, bns = world.chain.rpc, world.chain.address("bns")
    assert service.proxy("eth_chainId") == "0x7a69"
    assert hx.parse_quantity(service.proxy("eth_blockNumber", []), "n") == world.chain.rpc.block_number()
    node = hx.hex_address(world.node.address)
    assert service.proxy("eth_getBalance", [node, "latest"]) == rpc.call("eth_getBalance", [node, "latest"])
    code = rpc.call("eth_getCode", [hx.hex_address(bns), "latest"])
    assert len(code) > 2 and service.proxy("eth_getCode", [hx.hex_address(bns)]) == code
    data = "0x" + service._bns_binding().abi.encode_call("resolve", "com:x").hex()
    call = {"to": hx.hex_address(bns), "data": data}
    assert service.proxy("eth_call", [call, "latest"]) == rpc.call("eth_call", [call, "latest"])
    tx = world.pay(world.fleet_address, 5)
    receipt = service.proxy("eth_getTransactionReceipt", ["0x" + tx.hex()])
    assert receipt["status"] == "0x1" and receipt["transactionHash"] == "0x" + tx.hex()
    assert service.proxy_fetch("eth_getTransactionReceipt", ["0x" + tx.hex()]).tier == "l1"
    unknown = "0x" + "ab" * 32
    assert service.proxy("eth_getTransactionReceipt", [unknown]) is None
    assert service.proxy_fetch("eth_getTransactionReceipt", [unknown]).tier == "chain"  # never cached


@pytest.mark.parametrize(
    ("method", "params", "problem"),
    [
        ("eth_blockNumber", [1], "takes no params"),
        ("eth_getBalance", ["0x1234", "latest"], "must be 20 bytes"),
        ("eth_getBalance", ["0x" + "00" * 20, "yesterday"], "block must be"),
        ("eth_call", [{"data": "0x"}], "needs 'to'"),
        ("eth_call", [{"to": "0x" + "00" * 20, "evil": 1}], "unknown call fields"),
        ("eth_call", ["not an object"], "must be an object"),
        ("eth_getTransactionReceipt", ["0xzz"], "not 0x-hex"),
        ("eth_getCode", {"address": 1}, "params must be an array"),
    ],
)
def test_bad_proxy_params_are_invalid_params(
    service: ChainService, method: str, params: object, problem: str
) -> None:
    with pytest.raises(RpcError, match=problem) as error:
        service.proxy(method, params)
    assert error.value.code == -32602


def test_unproxied_methods_are_method_not_found(service: ChainService) -> None:
    with pytest.raises(RpcError, match="is not proxied") as error:
        service.proxy("eth_sendTransaction", [{}])
    assert error.value.code == -32601


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=30), st.binary(max_size=8)), max_size=3))
def test_generated_bad_params_never_reach_the_chain(service: ChainService, params: list[object]) -> None:
    for method in ("eth_getBalance", "eth_call", "eth_getTransactionReceipt"):
        with pytest.raises(RpcError) as error:
            service.proxy(method, params)
        assert error.value.code == -32602
    assert service.cache.stats()["requests"] == 0


def test_failover_to_the_live_endpoint(world: ChainWorld) -> None:
    world.register("com:fail", (b"\x0f" * 20,))
    contracts = ChainContracts.from_deployment(world.chain.deployment)
    for endpoints in ([dead_url(), world.chain.rpc_url], [world.chain.rpc_url, dead_url()]):
        with RemoteRpc(endpoints, DEV_CHAIN_ID, timeout=2.0) as rpc:
            service = ChainService(rpc, contracts, TieredCache(10))
            assert service.bns_resolve("fail.chronara.com").device == b"\x0f" * 20
            assert service.fleet_allows_node(world.fleet_address, world.node.address)
