"""Deploying the project's contracts to a chain (SPEC 7): used by tools/devchain and the tests.

`ensure_deployed` is idempotent: a contract whose recorded address still has code is kept, the
others are deployed (CHAI first, since the fleet is created with its address).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chrnode.chain import hexcodec as hx
from chrnode.chain.abi import ContractAbi, load_artifact
from chrnode.chain.contracts import Fleet
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.tx import Sender
from chrnode.errors import ChainError, ContractError

log = logging.getLogger("chrnode.chain")

DEFAULT_EPOCH_LENGTH = 30 * 24 * 3600  # SPEC 5
ROLES = ("chai", "fleet", "bns", "ticket_registry")  # deployment order


@dataclass(frozen=True)
class Deployment:
    """What tools/devchain writes to <data_dir>/contracts.json (0x-hex addresses)."""

    chain_id: int
    bns: str
    fleet: str
    chai: str
    ticket_registry: str
    deployer: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str) -> Deployment:
        try:
            return cls(
                chain_id=int(raw["chain_id"]),
                **{k: hx.hex_address(raw[k]) for k in (*ROLES, "deployer")},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainError(
                f"{source}: not a contracts record ({exc}); expected chain_id and the 0x addresses "
                "bns, fleet, chai, ticket_registry, deployer"
            ) from exc

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ChainError(f"cannot read contract addresses from {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ChainError(f"{path}: expected a JSON object of contract addresses")
        return cls.from_mapping(raw, str(path))


def deploy_contract(
    rpc: RemoteRpc, sender: Sender, name: str, types: tuple[str, ...] = (), args: tuple[Any, ...] = ()
) -> bytes:
    """Deploy the artifact `name` with constructor arguments; return its address."""
    artifact = load_artifact(name)
    code = ContractAbi(name, artifact.abi).encode_constructor(artifact.bytecode, types, *args)
    receipt = rpc.wait_for_receipt(sender.send(rpc, None, code))
    address = hx.parse_address(receipt.get("contractAddress"), f"contractAddress of the {name} deployment")
    log.info("deployed %s at %s", name, hx.hex_address(address))
    return address


def ensure_deployed(
    rpc: RemoteRpc,
    sender: Sender,
    existing: Deployment | None = None,
    *,
    epoch_length: int = DEFAULT_EPOCH_LENGTH,
    price_per_byte: int = 0,
    requires_payment: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> Deployment:
    """Deploy whatever of the four contracts is missing; return all addresses."""
    chain_id = rpc.chain_id()
    known: dict[str, bytes] = {}
    if existing is not None and existing.chain_id == chain_id:
        for role in ROLES:
            address = hx.address_bytes(getattr(existing, role))
            if rpc.get_code(address):
                known[role] = address
                progress(f"{role}: already deployed at {hx.hex_address(address)}")
    fresh_chai = "chai" not in known
    for role in ROLES:
        if role in known:
            continue
        name, types, args = _constructor(role, known, epoch_length, price_per_byte, requires_payment)
        known[role] = deploy_contract(rpc, sender, name, types, args)
        progress(f"{role}: deployed {name} at {hx.hex_address(known[role])}")
    fleet = Fleet(rpc, known["fleet"])
    if fresh_chai and fleet.token() != known["chai"]:
        # The fleet outlived its token (a partial state): point it at the new one.
        if fleet.operator() != sender.address:
            raise ContractError("the fleet's operator is not the deployer: cannot point it at the new CHAI")
        fleet.set_token(sender, known["chai"])
        progress(f"fleet: token set to {hx.hex_address(known['chai'])}")
    return Deployment(
        chain_id=chain_id,
        deployer=hx.hex_address(sender.address),
        **{role: hx.hex_address(address) for role, address in known.items()},
    )


def _constructor(
    role: str, known: dict[str, bytes], epoch_length: int, price_per_byte: int, requires_payment: bool
) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    if role == "chai":
        return "ChaiToken", (), ()
    if role == "fleet":
        return "Fleet", ("address", "uint256", "bool"), (known["chai"], price_per_byte, requires_payment)
    if role == "bns":
        return "BnsRegistry", (), ()
    return "TicketRegistry", ("uint256",), (epoch_length,)
