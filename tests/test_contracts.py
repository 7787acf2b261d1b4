"""The project's contracts on a real anvil (SPEC 5, SPEC 7): BNS, fleet, CHAI, ticket registry.

One anvil per module with the contracts deployed; each test runs between evm_snapshot and
evm_revert, so tests see the freshly deployed state whatever the others did.
"""

from __future__ import annotations

import dataclasses

import pytest

from chrnode.chain.bns import parse_name
from chrnode.chain.contracts import Bns, Chai, Fleet, TicketRegistry
from chrnode.chain.tx import KeySigner, UnlockedAccount
from chrnode.crypto import PrivateKey
from chrnode.errors import ContractReverted, NameError_
from chrnode.testing.anvil import DEV_ADDRESSES, DevChain
from chrnode.ticket import Ticket

pytestmark = pytest.mark.chain  # needs anvil from `npm ci`

DEPLOYER = UnlockedAccount(DEV_ADDRESSES[0])
ALICE = UnlockedAccount(DEV_ADDRESSES[1])
BOB = UnlockedAccount(DEV_ADDRESSES[2])


def test_deploy_records_four_contracts_with_code(chain: DevChain) -> None:
    assert set(chain.contracts) == {"chain_id", "bns", "fleet", "chai", "ticket_registry", "deployer"}
    assert chain.contracts["chain_id"] == 31337
    for role in ("bns", "fleet", "chai", "ticket_registry"):
        assert len(chain.rpc.get_code(chain.address(role))) > 100, role
    assert chain.address("deployer") == DEV_ADDRESSES[0]


# -- BNS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "mysite.chronara.com",
        "a.chronara.net",
        "bot.chronara.ai",
        "x.chronara.io",
        "y.chronara.org",
        "z.chronara.app",
        "bare",
    ],
)
def test_register_and_resolve_names_in_each_tld(chain: DevChain, name: str) -> None:
    bns = Bns(chain.rpc, chain.address("bns"))
    expiry = chain.block_timestamp() + 3600
    devices = [b"\x01" * 20, b"\x02" * 20]
    bns.register(ALICE, parse_name(name), devices, expiry)
    record = bns.resolve_name(name)
    assert record.registered and record.owner == ALICE.address
    assert record.devices == tuple(devices) and record.expiry == expiry


def test_unknown_name_resolves_to_an_empty_record(chain: DevChain) -> None:
    record = Bns(chain.rpc, chain.address("bns")).resolve("com:nobody")
    assert not record.registered and record.devices == () and record.expiry == 0


def test_only_the_owner_updates_and_transfers(chain: DevChain) -> None:
    bns = Bns(chain.rpc, chain.address("bns"))
    expiry = chain.block_timestamp() + 3600
    bns.register(ALICE, "com:shop", [b"\x01" * 20], expiry)
    with pytest.raises(ContractReverted, match=r"NotOwner\(namespace='com:shop'") as info:
        bns.update(BOB, "com:shop", [b"\x09" * 20], expiry)
    assert info.value.reason is not None and info.value.reason.startswith("NotOwner")
    with pytest.raises(ContractReverted, match="NameTaken"):
        bns.register(BOB, "com:shop", [b"\x09" * 20], expiry)
    bns.update(ALICE, "com:shop", [b"\x03" * 20, b"\x04" * 20], expiry + 10)
    assert bns.resolve("com:shop").devices == (b"\x03" * 20, b"\x04" * 20)
    bns.transfer(ALICE, "com:shop", BOB.address)
    assert bns.resolve("com:shop").owner == BOB.address
    with pytest.raises(ContractReverted, match="NotOwner"):
        bns.update(ALICE, "com:shop", [b"\x01" * 20], expiry)


def test_registration_checks_devices_and_expiry(chain: DevChain) -> None:
    bns = Bns(chain.rpc, chain.address("bns"))
    now = chain.block_timestamp()
    with pytest.raises(ContractReverted, match="ExpiryInPast"):
        bns.register(ALICE, "io:late", [b"\x01" * 20], now - 1)
    with pytest.raises(ContractReverted, match=r"BadDevices\(count=0\)"):
        bns.register(ALICE, "io:empty", [], now + 100)
    with pytest.raises(ContractReverted, match="ZeroAddress"):
        bns.register(ALICE, "io:zero", [bytes(20)], now + 100)
    assert not bns.resolve("io:late").registered


def test_expired_name_can_be_taken_by_someone_else(chain: DevChain) -> None:
    bns = Bns(chain.rpc, chain.address("bns"))
    expiry = chain.block_timestamp() + 60
    bns.register(ALICE, "app:old", [b"\x01" * 20], expiry)
    chain.rpc.call("evm_increaseTime", [120])
    chain.rpc.call("evm_mine")
    bns.register(BOB, "app:old", [b"\x02" * 20], chain.block_timestamp() + 60)
    assert bns.resolve_name("old.chronara.app").owner == BOB.address


def test_bad_name_is_refused_before_the_chain(chain: DevChain) -> None:
    with pytest.raises(NameError_, match="unknown TLD"):
        Bns(chain.rpc, chain.address("bns")).resolve_name("x.chronara.biz")


# -- Fleet --------------------------------------------------------------------------------------


def test_fleet_defaults_and_operator_setters(chain: DevChain) -> None:
    fleet = Fleet(chain.rpc, chain.address("fleet"))
    assert fleet.operator() == DEPLOYER.address
    assert fleet.token() == chain.address("chai")
    assert fleet.price_per_byte() == 0 and fleet.requires_payment() is False
    node, device = b"\x0a" * 20, b"\x0b" * 20
    assert not fleet.node_allowed(node) and not fleet.device_allowed(device)
    fleet.set_node_allowed(DEPLOYER, node)
    fleet.set_device_allowed(DEPLOYER, device)
    fleet.set_price_per_byte(DEPLOYER, 7)
    fleet.set_requires_payment(DEPLOYER, True)
    assert fleet.node_allowed(node) and fleet.device_allowed(device)
    assert not fleet.device_allowed(node)  # the two lists are separate
    assert fleet.price_per_byte() == 7 and fleet.requires_payment() is True
    fleet.set_node_allowed(DEPLOYER, node, False)
    assert not fleet.node_allowed(node)
    fleet.set_devices_allowed(DEPLOYER, [b"\x0c" * 20, b"\x0d" * 20])
    assert fleet.device_allowed(b"\x0d" * 20)


def test_only_the_operator_changes_the_fleet(chain: DevChain) -> None:
    fleet = Fleet(chain.rpc, chain.address("fleet"))
    with pytest.raises(ContractReverted, match=r"NotOperator\(caller=0x70997970"):
        fleet.set_node_allowed(ALICE, ALICE.address)
    with pytest.raises(ContractReverted, match="NotOperator"):
        fleet.set_price_per_byte(ALICE, 1)
    assert not fleet.node_allowed(ALICE.address) and fleet.price_per_byte() == 0
    with pytest.raises(ContractReverted, match="NotOperator"):
        fleet.set_devices_open(ALICE, True)
    assert not fleet.devices_open()


def test_an_open_device_list_admits_every_device_until_closed(chain: DevChain) -> None:
    fleet = Fleet(chain.rpc, chain.address("fleet"))
    stranger, listed = b"\x0e" * 20, b"\x0f" * 20
    fleet.set_device_allowed(DEPLOYER, listed)
    assert not fleet.devices_open() and not fleet.device_allowed(stranger)  # a fleet starts closed
    receipt = fleet.set_devices_open(DEPLOYER, True)
    (event,) = fleet.abi.decode_logs("DevicesOpenChanged", receipt["logs"], fleet.address)
    assert event == {"open": True}
    assert fleet.device_allowed(stranger) and not fleet.device_listed(stranger)
    assert not fleet.node_allowed(stranger)  # the node list never opens
    fleet.set_devices_open(DEPLOYER, False)
    assert not fleet.device_allowed(stranger) and fleet.device_allowed(listed) and fleet.device_listed(listed)


# -- CHAI ---------------------------------------------------------------------------------------


def test_chai_mint_and_transfer(chain: DevChain) -> None:
    chai = Chai(chain.rpc, chain.address("chai"))
    chai.mint(DEPLOYER, ALICE.address, 1000)
    receipt = chai.transfer(ALICE, BOB.address, 300)
    assert chai.balance_of(ALICE.address) == 700 and chai.balance_of(BOB.address) == 300
    assert chai.total_supply() == 1000
    transfers = chai.transfers_in(receipt)
    assert len(transfers) == 1
    assert (transfers[0].sender, transfers[0].recipient, transfers[0].value) == (
        ALICE.address,
        BOB.address,
        300,
    )


def test_chai_refuses_overdraft_and_foreign_minting(chain: DevChain) -> None:
    chai = Chai(chain.rpc, chain.address("chai"))
    with pytest.raises(ContractReverted, match=r"InsufficientBalance\(.*balance=0, needed=5\)"):
        chai.transfer(ALICE, BOB.address, 5)
    with pytest.raises(ContractReverted, match="NotMinter"):
        chai.mint(ALICE, ALICE.address, 5)
    assert chai.balance_of(ALICE.address) == 0 and chai.total_supply() == 0


# -- TicketRegistry -----------------------------------------------------------------------------


@dataclasses.dataclass
class TicketWorld:
    registry: TicketRegistry
    node: KeySigner
    device: PrivateKey
    fleet: bytes
    epoch: int

    def ticket(self, total_bytes: int, total_connections: int = 1, **changes: object) -> Ticket:
        fields: dict[str, object] = {
            "chain_id": 31337,
            "epoch": self.epoch,
            "node": self.node.address,
            "fleet": self.fleet,
            "total_connections": total_connections,
            "total_bytes": total_bytes,
            "local_address": b"device-local",
        }
        fields.update(changes)
        return Ticket(**fields).sign(self.device)  # type: ignore[arg-type]


@pytest.fixture
def world(chain: DevChain) -> TicketWorld:
    node = KeySigner(bytes.fromhex("22" * 32))  # a node key of its own, sending signed raw txs
    chain.fund(node.address)
    device = PrivateKey.generate()
    fleet = Fleet(chain.rpc, chain.address("fleet"))
    fleet.set_node_allowed(DEPLOYER, node.address)
    fleet.set_device_allowed(DEPLOYER, device.address)
    registry = TicketRegistry(chain.rpc, chain.address("ticket_registry"))
    return TicketWorld(registry, node, device, chain.address("fleet"), registry.current_epoch())


def test_python_digest_matches_the_contract(world: TicketWorld) -> None:
    ticket = world.ticket(4096, 3)
    assert world.registry.ticket_digest(ticket) == ticket.ticket_digest()
    assert world.registry.recover_device(ticket) == world.device.address


def test_valid_ticket_is_accepted_and_credited(world: TicketWorld) -> None:
    result = world.registry.submit_tickets(world.node, [world.ticket(5000, 2)])
    assert result.accepted == (0,) and result.rejected == {} and result.added_bytes == 5000
    assert world.registry.bytes_served(world.node.address, world.epoch) == 5000
    assert world.registry.connections_served(world.node.address, world.epoch) == 2
    best = world.registry.best_totals(world.node.address, world.device.address, world.fleet, world.epoch)
    assert best == (2, 5000)


def test_forged_and_malformed_signatures_are_rejected(world: TicketWorld) -> None:
    genuine = world.ticket(5000)
    tampered = dataclasses.replace(genuine, total_bytes=10**9)  # recovers to some other key
    stranger = Ticket(**{**dataclasses.asdict(genuine), "signature": b""}).sign(PrivateKey.generate())
    sig = bytearray(genuine.signature)
    sig[64] = 5
    bad_v = dataclasses.replace(genuine, signature=bytes(sig))
    short = dataclasses.replace(genuine, signature=genuine.signature[:64])
    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = (order - int.from_bytes(genuine.signature[32:64], "big")).to_bytes(32, "big")
    malleated = dataclasses.replace(
        genuine, signature=genuine.signature[:32] + high_s + bytes([genuine.signature[64] ^ 1])
    )
    result = world.registry.submit_tickets(world.node, [tampered, stranger, bad_v, short, malleated])
    assert result.accepted == ()
    assert result.rejected == {
        0: "fleet_refused",
        1: "fleet_refused",
        2: "bad_signature",
        3: "bad_signature",
        4: "bad_signature",
    }
    assert world.registry.bytes_served(world.node.address, world.epoch) == 0


def test_only_the_tickets_node_may_submit(world: TicketWorld) -> None:
    result = world.registry.submit_tickets(BOB, [world.ticket(100)])
    assert result.rejected == {0: "wrong_node"}
    assert world.registry.bytes_served(world.node.address, world.epoch) == 0


def test_totals_must_grow_and_only_the_increase_is_credited(world: TicketWorld) -> None:
    first = world.registry.submit_tickets(world.node, [world.ticket(1000, 1)])
    assert first.accepted == (0,)
    again = world.registry.submit_tickets(world.node, [world.ticket(1000, 1), world.ticket(900, 2)])
    assert again.rejected == {0: "not_higher", 1: "not_higher"}
    more = world.registry.submit_tickets(world.node, [world.ticket(1500, 1), world.ticket(2500, 2)])
    assert more.accepted == (0, 1) and more.added_bytes == 1500
    assert world.registry.bytes_served(world.node.address, world.epoch) == 2500


def test_epoch_chain_and_fleet_are_checked(world: TicketWorld) -> None:
    outsider = PrivateKey.generate()
    not_listed = Ticket(**{**dataclasses.asdict(world.ticket(10)), "signature": b""}).sign(outsider)
    batch = [
        world.ticket(10, epoch=world.epoch + 1),
        world.ticket(10, epoch=world.epoch - 2),
        world.ticket(10, chain_id=1),
        world.ticket(10, fleet=b"\x33" * 20),  # no contract there
        not_listed,
        world.ticket(10, epoch=world.epoch - 1),  # the previous epoch is still fine
    ]
    result = world.registry.submit_tickets(world.node, batch)
    assert result.rejected == {
        0: "bad_epoch",
        1: "bad_epoch",
        2: "wrong_chain",
        3: "fleet_refused",
        4: "fleet_refused",
    }
    assert result.accepted == (5,)
    assert world.registry.bytes_served(world.node.address, world.epoch - 1) == 10
    # On an open fleet the registry credits any device's ticket (the operator's choice).
    Fleet(world.registry.rpc, world.ticket(1).fleet).set_devices_open(DEPLOYER, True)
    opened = world.registry.submit_tickets(world.node, [not_listed])
    assert opened.accepted == (0,) and opened.added_bytes == 10


def test_batch_limits_are_enforced_before_sending(world: TicketWorld) -> None:
    with pytest.raises(ValueError, match="at least one ticket"):
        world.registry.submit_tickets(world.node, [])
    with pytest.raises(ValueError, match="at most 256"):
        world.registry.submit_tickets(world.node, [world.ticket(1)] * 257)
