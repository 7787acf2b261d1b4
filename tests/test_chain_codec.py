"""Pure chain codecs: JSON-RPC hex values, revert data, ABI helpers, RLP and transaction signing."""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st

from chrnode.chain import hexcodec as hx
from chrnode.chain.abi import CONTRACT_NAMES, ContractAbi, canonical_type, load_artifact
from chrnode.chain.tx import LegacyTx, address_of, rlp_encode
from chrnode.errors import ChainError, ContractError
from chrnode.testing.anvil import DEV_ADDRESSES, DEV_KEYS


def test_quantities_and_data_parse() -> None:
    assert hx.parse_quantity("0x0", "q") == 0
    assert hx.parse_quantity("0x7a69", "q") == 31337
    assert hx.parse_data("0x", "d") == b""
    assert hx.parse_data("0xdeadBEEF", "d") == b"\xde\xad\xbe\xef"
    assert hx.parse_address("0x" + "ab" * 20, "a") == b"\xab" * 20


@pytest.mark.parametrize("value", [None, 7, "7", "0x", "0xzz", "", ["0x1"], {"x": 1}, 1.5, True])
def test_bad_quantity_says_what_was_expected(value: object) -> None:
    with pytest.raises(ChainError, match="expected a 0x-prefixed hex quantity"):
        hx.parse_quantity(value, "eth_blockNumber")


@pytest.mark.parametrize("value", [None, 5, "abc", "0xabc", "0xgg", b"0x00"])
def test_bad_data_says_what_was_expected(value: object) -> None:
    with pytest.raises(ChainError, match="expected 0x-prefixed hex data"):
        hx.parse_data(value, "eth_call result")


def test_address_normalisation() -> None:
    raw = bytes(range(20))
    assert hx.address_bytes(raw) == raw
    assert hx.address_bytes("0x" + raw.hex()) == raw
    assert hx.address_bytes(raw.hex().upper()) == raw
    assert hx.hex_address(raw) == "0x" + raw.hex()
    for bad in (b"\x00" * 19, "0x1234", "0x" + "zz" * 20, 42):
        with pytest.raises(ValueError, match="address must be"):
            hx.address_bytes(bad)  # type: ignore[arg-type]
    with pytest.raises(ChainError, match="expected a 20-byte address"):
        hx.parse_address("0x" + "00" * 32, "contractAddress")


def test_revert_reasons_decode() -> None:
    error = hx.ERROR_STRING_SELECTOR + abi_encode(["string"], ["no such name"])
    assert hx.decode_revert(error) == "no such name"
    panic = hx.PANIC_SELECTOR + abi_encode(["uint256"], [0x11])
    assert hx.decode_revert(panic) == "Panic(0x11)"
    assert hx.decode_revert(b"") is None
    assert hx.decode_revert(b"\x12\x34\x56\x78") is None
    assert hx.decode_revert(hx.ERROR_STRING_SELECTOR + b"\x00" * 7) is None  # truncated


@given(st.binary(max_size=200))
def test_revert_decoding_never_raises(data: bytes) -> None:
    for prefix in (b"", hx.ERROR_STRING_SELECTOR, hx.PANIC_SELECTOR):
        result = hx.decode_revert(prefix + data)
        assert result is None or isinstance(result, str)


@pytest.mark.parametrize(
    ("item", "encoded"),
    [
        (b"dog", "83646f67"),
        ([b"cat", b"dog"], "c88363617483646f67"),
        (b"", "80"),
        ([], "c0"),
        (0, "80"),
        (15, "0f"),
        (1024, "820400"),
        ([[], [[]], [[], [[]]]], "c7c0c1c0c3c0c1c0"),
        (
            b"Lorem ipsum dolor sit amet, consectetur adipisicing elit",
            "b838" + b"Lorem ipsum dolor sit amet, consectetur adipisicing elit".hex(),
        ),
    ],
)
def test_rlp_matches_the_ethereum_test_vectors(item: object, encoded: str) -> None:
    assert rlp_encode(item).hex() == encoded  # type: ignore[arg-type]


def test_rlp_refuses_negative_integers() -> None:
    with pytest.raises(ValueError, match="negative"):
        rlp_encode(-1)


@given(
    nonce=st.integers(0, 2**64 - 1),
    gas_price=st.integers(0, 2**128),
    value=st.integers(0, 2**200),
    data=st.binary(max_size=300),
    to=st.one_of(st.none(), st.binary(min_size=20, max_size=20)),
    chain_id=st.integers(1, 2**32),
)
def test_signed_transactions_recover_to_the_signer(
    nonce: int, gas_price: int, value: int, data: bytes, to: bytes | None, chain_id: int
) -> None:
    tx = LegacyTx(nonce, gas_price, 21000 + len(data) * 16, to, value, data, chain_id)
    raw = tx.sign(DEV_KEYS[1])
    # eth-account is an independent implementation of RLP and EIP-155.
    assert bytes.fromhex(Account.recover_transaction(raw)[2:]) == DEV_ADDRESSES[1]


def test_dev_keys_are_the_anvil_mnemonic_accounts() -> None:
    assert "0x" + address_of(DEV_KEYS[0]).hex() == "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
    assert DEV_ADDRESSES[1].hex() == "70997970c51812dc3a010c7d01b50e0d17dc79c8"


def test_canonical_types_spell_out_tuples() -> None:
    param = {
        "type": "tuple[]",
        "components": [{"type": "uint256"}, {"type": "tuple", "components": [{"type": "address"}]}],
    }
    assert canonical_type(param) == "(uint256,(address))[]"
    assert canonical_type({"type": "bytes32"}) == "bytes32"


def test_artifacts_load_with_abi_and_bytecode() -> None:
    for name in CONTRACT_NAMES:
        artifact = load_artifact(name)
        assert artifact.bytecode[:1] == b"\x60" and len(artifact.bytecode) > 500  # PUSH1: solc's preamble
        assert any(entry["type"] == "function" for entry in artifact.abi)
    with pytest.raises(ValueError, match="unknown contract"):
        load_artifact("Nope")


def test_abi_encodes_selectors_and_decodes_results() -> None:
    fleet = ContractAbi.from_artifact("Fleet")
    call = fleet.encode_call("nodeAllowed", b"\x01" * 20)
    assert call == keccak(b"nodeAllowed(address)")[:4] + bytes(12) + b"\x01" * 20
    assert fleet.decode_result("nodeAllowed", abi_encode(["bool"], [True])) == (True,)
    assert fleet.decode_result("token", abi_encode(["address"], [b"\x02" * 20])) == (b"\x02" * 20,)
    with pytest.raises(ValueError, match="no function"):
        fleet.encode_call("nope")
    with pytest.raises(TypeError, match="takes 1 arguments"):
        fleet.encode_call("nodeAllowed")
    with pytest.raises(ValueError, match="do not fit"):
        fleet.encode_call("nodeAllowed", "not an address")
    with pytest.raises(ContractError, match="do not decode"):
        fleet.decode_result("nodeAllowed", b"\x01")


def test_abi_names_custom_errors() -> None:
    fleet = ContractAbi.from_artifact("Fleet")
    args = abi_encode(["address", "address"], [b"\x01" * 20, b"\x02" * 20])
    data = keccak(b"NotOperator(address,address)")[:4] + args
    assert fleet.describe_error(data) == f"NotOperator(caller=0x{'01' * 20}, operator=0x{'02' * 20})"
    assert fleet.describe_error(b"\x00\x00\x00\x00") is None
