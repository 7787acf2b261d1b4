"""Signing Ethereum transactions with a node key, so a node can submit tickets itself (SPEC 5, 7).

Legacy transactions with EIP-155 replay protection: every Ethereum client and anvil accept them,
and they need nothing beyond coincurve, keccak and a few lines of RLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import coincurve
from eth_hash.auto import keccak

from chrnode.chain import hexcodec as hx
from chrnode.chain.rpc import RemoteRpc

GAS_MARGIN = 1.25  # an estimate is exact for the state it ran on; leave room for a change

RlpItem = bytes | int | list["RlpItem"]


def rlp_encode(item: RlpItem) -> bytes:
    """Recursive-length prefix encoding of byte strings, non-negative integers and lists."""
    if isinstance(item, int):
        if item < 0:
            raise ValueError(f"RLP cannot encode a negative integer: {item}")
        item = item.to_bytes((item.bit_length() + 7) // 8, "big") if item else b""
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _length_prefix(len(item), 0x80) + item
    payload = b"".join(rlp_encode(x) for x in item)
    return _length_prefix(len(payload), 0xC0) + payload


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(encoded)]) + encoded


@dataclass(frozen=True)
class LegacyTx:
    nonce: int
    gas_price: int
    gas: int
    to: bytes | None  # None creates a contract
    value: int
    data: bytes
    chain_id: int

    def _fields(self) -> list[RlpItem]:
        to = b"" if self.to is None else hx.address_bytes(self.to)
        return [self.nonce, self.gas_price, self.gas, to, self.value, self.data]

    def signing_hash(self) -> bytes:
        # EIP-155: the chain id and two zeros are hashed in place of the signature.
        return keccak(rlp_encode([*self._fields(), self.chain_id, 0, 0]))

    def sign(self, private_key: bytes) -> bytes:
        """The raw signed transaction, ready for eth_sendRawTransaction."""
        signature = coincurve.PrivateKey(private_key).sign_recoverable(self.signing_hash(), hasher=None)
        r = int.from_bytes(signature[0:32], "big")
        s = int.from_bytes(signature[32:64], "big")
        v = signature[64] + 35 + 2 * self.chain_id
        return rlp_encode([*self._fields(), v, r, s])


def address_of(private_key: bytes) -> bytes:
    """The Ethereum address of a secp256k1 private key (SPEC 2)."""
    public = coincurve.PrivateKey(private_key).public_key.format(compressed=False)
    return keccak(public[1:])[-20:]


class UnlockedAccount:
    """Sends through eth_sendTransaction from an account the endpoint holds unlocked (anvil's
    dev accounts): for tools and tests, never for a node on a public chain."""

    def __init__(self, address: bytes | str) -> None:
        self.address = hx.address_bytes(address)

    def send(self, rpc: RemoteRpc, to: bytes | None, data: bytes, value: int = 0) -> bytes:
        tx: dict[str, str] = {
            "from": hx.hex_address(self.address),
            "data": hx.hex_data(data),
            "value": hx.hex_quantity(value),
        }
        if to is not None:
            tx["to"] = hx.hex_address(to)
        # Estimating first makes a revert fail here, with its reason, instead of mining a failed tx.
        tx["gas"] = hx.hex_quantity(int(rpc.estimate_gas(tx) * GAS_MARGIN))
        return rpc.send_transaction(tx)


class KeySigner:
    """Signs transactions locally with a secp256k1 key (the node's own key) and sends them raw."""

    def __init__(self, private_key: bytes) -> None:
        self._key = private_key
        self.address = address_of(private_key)

    def send(self, rpc: RemoteRpc, to: bytes | None, data: bytes, value: int = 0) -> bytes:
        probe: dict[str, str] = {
            "from": hx.hex_address(self.address),
            "data": hx.hex_data(data),
            "value": hx.hex_quantity(value),
        }
        if to is not None:
            probe["to"] = hx.hex_address(to)
        gas = int(rpc.estimate_gas(probe) * GAS_MARGIN)
        tx = LegacyTx(
            nonce=rpc.get_transaction_count(self.address, "pending"),
            gas_price=rpc.gas_price(),
            gas=gas,
            to=to,
            value=value,
            data=data,
            chain_id=rpc.expected_chain_id,
        )
        return rpc.send_raw_transaction(tx.sign(self._key))


Sender = UnlockedAccount | KeySigner
