"""Helpers for the chain cache/service tests and benchmarks (SPEC 7): a real SQLite L2, a dev-chain
world (fleet, names, CHAI payments) and signed tickets.

    l2 = DirectL2(tmp_path / "chr-node.sqlite")   # an L2Store: reads read-only, writes applied at once
    world = ChainWorld.build(devchain)           # node allowed, one device allowed, price set
    tx = world.pay(world.fleet_address, 1000)    # a mined CHAI transfer from the world's device
    ticket = world.ticket(device_key, total_bytes=10, payment_proof=tx)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chrnode.chain import hexcodec as hx
from chrnode.chain.cache_l2 import ReaderStore
from chrnode.chain.contracts import Bns, Chai, Fleet
from chrnode.chain.tx import KeySigner, UnlockedAccount
from chrnode.crypto import PrivateKey
from chrnode.errors import ContractReverted
from chrnode.storage import Reader, Writer, open_database
from chrnode.storage.ops import CacheDelete, CachePut
from chrnode.testing.anvil import DEPLOYER, DEV_ADDRESSES, DevChain
from chrnode.ticket import Ticket, epoch_of

PAYER = UnlockedAccount(DEV_ADDRESSES[1])
NODE_KEY = bytes.fromhex("33" * 32)


class DirectL2:
    """An L2Store on a real SQLite file: reads through a read-only Reader, writes applied at once
    by a Writer (in the node, Model.Sql.Worker applies them a moment later)."""

    def __init__(self, path: Path) -> None:
        self.writer_db = open_database(path)
        self.writer = Writer(self.writer_db)
        self.reader_db = open_database(path, readonly=True)
        self.store = ReaderStore(Reader(self.reader_db), self._write)
        self.writes = 0
        self._lock = threading.Lock()

    def _write(self, op: CachePut | CacheDelete) -> None:
        with self._lock:
            self.writer.apply([op])
            self.writes += 1

    def get(self, namespace: str, key: str, now: float) -> bytes | None:
        return self.store.get(namespace, key, now)

    def put(self, namespace: str, key: str, value: bytes, expires_at: float) -> None:
        self.store.put(namespace, key, value, expires_at)

    def delete(self, namespace: str, key: str) -> None:
        self.store.delete(namespace, key)

    def close(self) -> None:
        self.reader_db.shutdown()
        self.writer_db.shutdown()


@dataclass
class ChainWorld:
    """A deployed dev chain with a node allowed in the fleet and CHAI in the payer's account."""

    chain: DevChain
    node: KeySigner
    device: PrivateKey
    price_per_byte: int = 0
    names: dict[str, tuple[bytes, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, chain: DevChain, *, price_per_byte: int = 0, requires_payment: bool = False) -> ChainWorld:
        node = KeySigner(NODE_KEY)
        chain.fund(node.address)
        device = PrivateKey.generate()
        fleet = Fleet(chain.rpc, chain.address("fleet"))
        fleet.set_node_allowed(DEPLOYER, node.address)
        fleet.set_device_allowed(DEPLOYER, device.address)
        if price_per_byte:
            fleet.set_price_per_byte(DEPLOYER, price_per_byte)
        if requires_payment:
            fleet.set_requires_payment(DEPLOYER, True)
        Chai(chain.rpc, chain.address("chai")).mint(DEPLOYER, PAYER.address, 10**24)
        return cls(chain, node, device, price_per_byte)

    @property
    def fleet_address(self) -> bytes:
        return self.chain.address("fleet")

    @property
    def epoch(self) -> int:
        return epoch_of(self.chain.block_timestamp())

    def register(self, namespace: str, devices: tuple[bytes, ...], ttl: int = 86400) -> None:
        bns = Bns(self.chain.rpc, self.chain.address("bns"))
        bns.register(DEPLOYER, namespace, list(devices), self.chain.block_timestamp() + ttl)
        self.names[namespace] = devices

    def allow_device(self, device: bytes, allowed: bool = True) -> None:
        Fleet(self.chain.rpc, self.fleet_address).set_device_allowed(DEPLOYER, device, allowed)

    def pay(self, to: bytes, amount: int, payer: bytes | None = None) -> bytes:
        """A mined CHAI transfer from ``payer`` (default: the world's device, since a payment counts
        only for the device that sent it, SPEC 5 step 6); its transaction hash. The payer is given
        gas and the CHAI first, and sends through anvil's account impersonation."""
        sender = self.device.address if payer is None else payer
        chai = Chai(self.chain.rpc, self.chain.address("chai"))
        self.chain.fund(sender)
        self.chain.rpc.call("anvil_impersonateAccount", [hx.hex_address(sender)])
        chai.mint(DEPLOYER, sender, amount)
        receipt = chai.transfer(UnlockedAccount(sender), to, amount)
        return hx.parse_data(receipt["transactionHash"], "transactionHash")

    def failed_payment(self, to: bytes) -> bytes:
        """A mined but reverted CHAI transfer (more than the sender holds), gas given so it is mined."""
        chai = Chai(self.chain.rpc, self.chain.address("chai"))
        data = chai.abi.encode_call("transfer", to, 10**30)
        tx: dict[str, Any] = {
            "from": hx.hex_address(DEV_ADDRESSES[2]),
            "to": hx.hex_address(chai.address),
            "data": hx.hex_data(data),
            "gas": hx.hex_quantity(200_000),
        }
        tx_hash = self.chain.rpc.send_transaction(tx)
        try:
            # anvil may answer the send before the block is in (seen under load): wait, bounded
            receipt = self.chain.rpc.wait_for_receipt(tx_hash)
        except ContractReverted:
            return tx_hash
        raise AssertionError(f"the oversized transfer was mined and did not revert: {receipt}")

    def ticket(
        self,
        device: PrivateKey | None = None,
        *,
        total_bytes: int = 1000,
        total_connections: int = 1,
        payment_proof: bytes = b"",
        epoch: int | None = None,
        fleet: bytes | None = None,
    ) -> Ticket:
        key = device or self.device
        return Ticket(
            chain_id=self.chain.anvil.chain_id,
            epoch=self.epoch if epoch is None else epoch,
            node=self.node.address,
            fleet=self.fleet_address if fleet is None else fleet,
            total_connections=total_connections,
            total_bytes=total_bytes,
            local_address=b"dev",
            payment_proof=payment_proof,
        ).sign(key)
