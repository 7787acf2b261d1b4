"""Payment proofs (SPEC 5 step 6) on a real anvil: a fleet that requires payment, each error code,
claims that survive a restart, and checks answered from the cache after the first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chrnode.chain import hexcodec as hx
from chrnode.chain.cache import TieredCache
from chrnode.chain.contracts import Fleet
from chrnode.chain.payments import ChainPaymentCheck, PaymentLedger
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.service import ChainContracts, ChainFleetCheck, ChainService
from chrnode.crypto import PrivateKey
from chrnode.errors import TicketError
from chrnode.testing.anvil import DEPLOYER, DEV_CHAIN_ID, DevChain
from chrnode.testing.chain import ChainWorld, DirectL2
from chrnode.ticket import Ticket, TicketValidator

pytestmark = pytest.mark.chain
PRICE = 3
BYTES = 1000


@pytest.fixture
def world(devchain: DevChain) -> Iterator[ChainWorld]:
    snap = devchain.snapshot()
    yield ChainWorld.build(devchain, price_per_byte=PRICE, requires_payment=True)
    devchain.revert(snap)


@pytest.fixture
def l2(tmp_path: Path) -> Iterator[DirectL2]:
    store = DirectL2(tmp_path / "chr-node.sqlite")
    yield store
    store.close()


@pytest.fixture
def checker(world: ChainWorld, l2: DirectL2) -> Iterator[ChainPaymentCheck]:
    with RemoteRpc([world.chain.rpc_url], DEV_CHAIN_ID, timeout=5.0) as rpc:
        contracts = ChainContracts.from_deployment(world.chain.deployment)
        service = ChainService(rpc, contracts, TieredCache(100, l2))
        yield ChainPaymentCheck(service, PaymentLedger(l2))


def validator(world: ChainWorld, checker: ChainPaymentCheck) -> TicketValidator:
    fleet = ChainFleetCheck(checker.service)
    return TicketValidator(world.node.address, DEV_CHAIN_ID, fleet_check=fleet, payment_check=checker)


def refusal(checker: ChainPaymentCheck, ticket: Ticket, device: bytes) -> TicketError:
    with pytest.raises(TicketError) as error:
        checker.check_payment(ticket, device)
    return error.value


def test_a_paid_ticket_passes_and_an_unpaid_one_is_refused(
    world: ChainWorld, checker: ChainPaymentCheck
) -> None:
    check = validator(world, checker)
    paid = world.ticket(total_bytes=BYTES, payment_proof=world.pay(world.fleet_address, PRICE * BYTES))
    assert check.validate(paid, world.device.address, world.epoch).added_bytes == BYTES
    with pytest.raises(TicketError, match="requires payment") as unpaid:
        check.validate(world.ticket(total_bytes=BYTES), world.device.address, world.epoch)
    assert unpaid.value.code == "payment_missing"


def test_paying_the_fleet_operator_counts(world: ChainWorld, checker: ChainPaymentCheck) -> None:
    tx = world.pay(DEPLOYER.address, PRICE * BYTES)
    checker.check_payment(world.ticket(total_bytes=BYTES, payment_proof=tx), world.device.address)


def test_each_bad_proof_has_its_own_code(world: ChainWorld, checker: ChainPaymentCheck) -> None:
    device = world.device.address
    ether_only = {"from": hx.hex_address(DEPLOYER.address), "to": "0x" + "44" * 20, "value": "0x1"}
    cases = {
        "payment_unknown": b"\xab" * 32,
        "payment_failed": world.failed_payment(world.fleet_address),
        "payment_invalid": world.chain.rpc.send_transaction(ether_only),
        "payment_wrong_recipient": world.pay(b"\x55" * 20, PRICE * BYTES),
        "payment_too_small": world.pay(world.fleet_address, PRICE * BYTES - 1),
    }
    messages = {
        "payment_unknown": "not a mined transaction",
        "payment_failed": "reverted",
        "payment_invalid": "moved none of the fleet's CHAI token",
        "payment_wrong_recipient": "paid 0x5555",
        "payment_too_small": f"paid {PRICE * BYTES - 1}, the ticket's {BYTES} bytes at {PRICE} per byte cost",
    }
    for code, proof in cases.items():
        error = refusal(checker, world.ticket(total_bytes=BYTES, payment_proof=proof), device)
        assert error.code == code, (code, str(error))
        assert messages[code] in str(error)


def test_a_proof_serves_one_ticket_key_only(
    world: ChainWorld, checker: ChainPaymentCheck, l2: DirectL2
) -> None:
    tx = world.pay(world.fleet_address, PRICE * BYTES * 2)
    checker.check_payment(world.ticket(total_bytes=BYTES, payment_proof=tx), world.device.address)
    # the same device raises its cumulative totals under the same payment: fine
    checker.check_payment(world.ticket(total_bytes=2 * BYTES, payment_proof=tx), world.device.address)
    other = PrivateKey.generate()
    world.allow_device(other.address)
    error = refusal(checker, world.ticket(other, total_bytes=BYTES, payment_proof=tx), other.address)
    assert error.code == "payment_wrong_payer"  # another device never gets that far
    next_epoch = world.ticket(total_bytes=BYTES, payment_proof=tx, epoch=world.epoch + 1)
    assert refusal(checker, next_epoch, world.device.address).code == "payment_reused"
    # a restarted node remembers the claim (L2), with an empty memory
    restarted = ChainPaymentCheck(checker.service, PaymentLedger(l2))
    assert restarted.ledger.holder(tx) == (world.device.address, world.fleet_address, world.epoch)
    again = world.ticket(total_bytes=BYTES, payment_proof=tx, epoch=world.epoch + 1)
    error = refusal(restarted, again, world.device.address)
    assert error.code == "payment_reused" and f"epoch {world.epoch}" in str(error)


def test_a_proof_is_read_from_the_chain_once(world: ChainWorld, checker: ChainPaymentCheck) -> None:
    tx = world.pay(world.fleet_address, PRICE * BYTES * 10)
    for total in range(1, 6):
        ticket = world.ticket(total_bytes=total * BYTES, payment_proof=tx)
        checker.check_payment(ticket, world.device.address)
    tickets = checker.service.cache.stats()["categories"]["tickets"]
    assert tickets == {"loads": 1, "l1_hits": 4}


def test_fleets_without_payment_need_no_proof(world: ChainWorld, checker: ChainPaymentCheck) -> None:
    Fleet(world.chain.rpc, world.fleet_address).set_requires_payment(DEPLOYER, False)
    fresh = ChainPaymentCheck(
        ChainService(checker.service.rpc, checker.service.contracts, TieredCache(10)), PaymentLedger()
    )
    fresh.check_payment(world.ticket(total_bytes=BYTES), world.device.address)
    fresh.check_payment(world.ticket(total_bytes=BYTES, payment_proof=b"\x01" * 32), world.device.address)


def test_a_payment_counts_only_for_the_device_that_sent_it(
    world: ChainWorld, checker: ChainPaymentCheck
) -> None:
    """Issue 8 item 4: T presents V's payment and is refused; V keeps it (nothing was claimed)."""
    payer, taker = world.device, PrivateKey.generate()
    world.allow_device(taker.address)
    tx = world.pay(world.fleet_address, PRICE * BYTES, payer=payer.address)
    error = refusal(checker, world.ticket(taker, total_bytes=BYTES, payment_proof=tx), taker.address)
    assert error.code == "payment_wrong_payer", str(error)
    assert payer.address.hex() in str(error) and taker.address.hex() in str(error)
    assert checker.ledger.holder(tx) is None
    checker.check_payment(world.ticket(payer, total_bytes=BYTES, payment_proof=tx), payer.address)
    assert checker.ledger.holder(tx) == (payer.address, world.fleet_address, world.epoch)
    # after V's claim, T still gets the payer's refusal (not payment_reused: it never was T's)
    again = refusal(checker, world.ticket(taker, total_bytes=BYTES, payment_proof=tx), taker.address)
    assert again.code == "payment_wrong_payer"


def test_a_transaction_paying_for_two_devices_counts_each_ones_share(
    world: ChainWorld, checker: ChainPaymentCheck
) -> None:
    """Only the device's own transfers to the fleet count towards its ticket's price."""
    other = PrivateKey.generate()
    world.allow_device(other.address)
    tx = world.pay(world.fleet_address, PRICE * BYTES - 1, payer=world.device.address)
    error = refusal(checker, world.ticket(total_bytes=BYTES, payment_proof=tx), world.device.address)
    assert error.code == "payment_too_small"
    assert refusal(checker, world.ticket(other, total_bytes=1, payment_proof=tx), other.address).code == (
        "payment_wrong_payer"
    )
