"""ChainService: what the node reads from the chain, through the cache tiers (SPEC 5, SPEC 7).

    service = ChainService(rpc, ChainContracts.from_config(config), TieredCache(config.cache_size))
    service.bns_resolve("mysite.chronara.com")     -> BnsResolution (NameError_ before any call)
    service.fleet_allows_node(fleet, node)          -> bool   (cache category "contracts")
    service.fleet_terms(fleet)                      -> FleetTerms (token, price, requires_payment)
    service.proxy("eth_getBalance", [addr, "latest"]) -> the endpoint's JSON result

Every method is thread-safe and bounded in time (RemoteRpc timeouts); `ChainUnavailable` is raised
only when neither the chain nor a cached (possibly stale) entry can answer. A contract the node has
no address for raises `ChainNotConfigured` without any network traffic.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chrnode.chain import hexcodec as hx
from chrnode.chain.bns import parse_name
from chrnode.chain.cache import TieredCache
from chrnode.chain.cache_policy import Hit
from chrnode.chain.contracts import Bns, Fleet
from chrnode.chain.deploy import ROLES, Deployment
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.watch import bns_key, fleet_member_key, fleet_open_key, fleet_terms_key
from chrnode.config_schema import Config
from chrnode.errors import ChainError, ChainNotConfigured, ContractError, RpcError

ZERO_ADDRESS = bytes(20)
BLOCK_TAGS_LATEST = ("latest", "pending", "safe", "finalized")
PROXIED_METHODS = (
    "eth_blockNumber",
    "eth_chainId",
    "eth_call",
    "eth_getBalance",
    "eth_getCode",
    "eth_getTransactionReceipt",
)
INVALID_PARAMS = -32602  # JSON-RPC 2.0 (SPEC 8)
METHOD_NOT_FOUND = -32601
_CALL_FIELDS = ("from", "to", "gas", "gasPrice", "value", "data", "input")
_MAX_BINDINGS = 256


@dataclass(frozen=True)
class ChainContracts:
    """The contract addresses the node uses; a role may be None, with `problem` saying why."""

    bns: bytes | None = None
    fleet: bytes | None = None
    chai: bytes | None = None
    ticket_registry: bytes | None = None
    source: str = "code"
    problem: str = ""

    @classmethod
    def from_config(cls, config: Config) -> ChainContracts:
        """`*_contract` keys first; the empty ones from <data_dir>/contracts.json (tools/devchain)."""
        found: dict[str, bytes | None] = {
            role: hx.address_bytes(value) if (value := getattr(config, f"{role}_contract")) else None
            for role in ROLES
        }
        if all(found.values()):
            return _contracts(found, "config")
        path = config.contracts_path
        if not path.is_file():
            missing = ", ".join(f"{role}_contract" for role, a in found.items() if a is None)
            problem = f"no address for {missing} in the config and no {path} (run tools/devchain)"
            return _contracts(found, "config", problem)
        try:
            deployment = Deployment.load(path)
        except ChainError as exc:
            return _contracts(found, "config", str(exc))
        if deployment.chain_id != config.chain_id:
            problem = f"{path} is for chain {deployment.chain_id}, the node is for chain {config.chain_id}"
            return _contracts(found, "config", problem)
        for role in ROLES:
            if found[role] is None:
                found[role] = hx.address_bytes(getattr(deployment, role))
        return _contracts(found, str(path))

    @classmethod
    def from_deployment(cls, deployment: Deployment) -> ChainContracts:
        found: dict[str, bytes | None] = {role: hx.address_bytes(getattr(deployment, role)) for role in ROLES}
        return _contracts(found, "deployment")

    @property
    def configured(self) -> bool:
        return all(getattr(self, role) is not None for role in ROLES)

    def require(self, role: str) -> bytes:
        address: bytes | None = getattr(self, role)
        if address is None:
            raise ChainNotConfigured(f"the {role} contract is not configured: {self.problem}")
        return address

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for role in ROLES:
            address = getattr(self, role)
            out[role] = None if address is None else hx.hex_address(address)
        out.update(source=self.source, problem=self.problem)
        return out


def _contracts(found: dict[str, bytes | None], source: str, problem: str = "") -> ChainContracts:
    return ChainContracts(
        bns=found["bns"],
        fleet=found["fleet"],
        chai=found["chai"],
        ticket_registry=found["ticket_registry"],
        source=source,
        problem=problem,
    )


@dataclass(frozen=True)
class BnsResolution:
    """A BNS name as the registry holds it (SPEC 7). `found`: registered and not expired."""

    name: str
    namespace: str
    owner: bytes  # 20 zero bytes when never registered
    devices: tuple[bytes, ...]
    expiry: int
    expired: bool
    stale: bool = False  # served from the cache past its TTL because the chain was unavailable

    @property
    def registered(self) -> bool:
        return self.owner != ZERO_ADDRESS

    @property
    def found(self) -> bool:
        return self.registered and not self.expired and bool(self.devices)

    @property
    def device(self) -> bytes | None:
        return self.devices[0] if self.found else None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "found": self.found,
            "device": None if self.device is None else hx.hex_address(self.device),
            "devices": [hx.hex_address(d) for d in self.devices],
            "owner": hx.hex_address(self.owner) if self.registered else None,
            "expiry": self.expiry,
            "expired": self.expired,
            "stale": self.stale,
        }


@dataclass(frozen=True)
class FleetTerms:
    """What a fleet contract says about payment (SPEC 5 step 6)."""

    fleet: bytes
    operator: bytes
    token: bytes
    price_per_byte: int
    requires_payment: bool


class ChainService:
    """The node's chain reads, each through the cache. See the module docstring."""

    def __init__(
        self,
        rpc: RemoteRpc,
        contracts: ChainContracts,
        cache: TieredCache,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rpc = rpc
        self.contracts = contracts
        self.cache = cache
        self.clock = clock
        self._fleets: dict[bytes, Fleet] = {}
        self._bns: Bns | None = None
        self._lock = threading.Lock()

    # -- BNS ------------------------------------------------------------------------------------

    def bns_resolve(self, name: str) -> BnsResolution:
        """A name's record; NameError_ for a bad name before any chain call (SPEC 7)."""
        namespace = parse_name(name)
        bns = self._bns_binding()
        hit = self.cache.fetch("contracts", bns_key(namespace), lambda: list(bns.resolve(namespace)))
        owner, devices, expiry = hit.value
        return BnsResolution(
            name=name,
            namespace=namespace,
            owner=bytes(owner),
            devices=tuple(bytes(d) for d in devices),
            expiry=int(expiry),
            expired=owner != ZERO_ADDRESS and int(expiry) <= self.clock(),
            stale=hit.stale,
        )

    def _bns_binding(self) -> Bns:
        if self._bns is None:
            self._bns = Bns(self.rpc, self.contracts.require("bns"))
        return self._bns

    # -- fleets (SPEC 5 step 4) -----------------------------------------------------------------

    def fleet_allows_node(self, fleet: bytes, node: bytes) -> bool:
        return self._fleet_flag(fleet, "node", node)

    def fleet_allows_device(self, fleet: bytes, device: bytes) -> bool:
        """Listed, or the fleet's device list is open (the contract's `deviceAllowed`); cached as
        two entries, so that opening or closing the list changes one key (chrnode.chain.watch)."""
        return self.fleet_devices_open(fleet) or self._fleet_flag(fleet, "device", device)

    def fleet_devices_open(self, fleet: bytes) -> bool:
        binding = self._fleet(fleet)

        def load() -> bool:
            try:
                return binding.devices_open()
            except ContractError:  # no contract there, or not a fleet: it allows no one (as on chain)
                return False

        return bool(self.cache.get("contracts", fleet_open_key(fleet), load))

    def _fleet_flag(self, fleet: bytes, kind: str, who: bytes) -> bool:
        binding = self._fleet(fleet)
        who = _address(who, kind)

        def load() -> bool:
            read = binding.node_allowed if kind == "node" else binding.device_listed
            try:
                return read(who)
            except ContractError:  # no contract there, or not a fleet: it allows no one (as on chain)
                return False

        return bool(self.cache.get("contracts", fleet_member_key(fleet, kind, who), load))

    def fleet_terms(self, fleet: bytes) -> FleetTerms:
        """Token, price and payment rule of a fleet; ContractError if `fleet` is not a fleet contract."""
        binding = self._fleet(fleet)

        def load() -> list[Any]:
            return [binding.operator(), binding.token(), binding.price_per_byte(), binding.requires_payment()]

        operator, token, price, required = self.cache.get("contracts", fleet_terms_key(fleet), load)
        return FleetTerms(bytes(fleet), bytes(operator), bytes(token), int(price), bool(required))

    def fleet_status(self, node: bytes, fleet: bytes | None = None) -> dict[str, Any]:
        """The node's standing in its fleet (default: the configured one), for `fleet_status`."""
        fleet = fleet if fleet is not None else self.contracts.require("fleet")
        terms = self.fleet_terms(fleet)
        return {
            "fleet": hx.hex_address(fleet),
            "operator": hx.hex_address(terms.operator),
            "token": hx.hex_address(terms.token),
            "price_per_byte": str(terms.price_per_byte),
            "requires_payment": terms.requires_payment,
            "node": hx.hex_address(node),
            "node_allowed": self.fleet_allows_node(fleet, node),
            "devices_open": self.fleet_devices_open(fleet),
        }

    def _fleet(self, fleet: bytes) -> Fleet:
        fleet = _address(fleet, "fleet")
        with self._lock:
            binding = self._fleets.get(fleet)
            if binding is None:
                if len(self._fleets) >= _MAX_BINDINGS:  # devices choose the fleet: keep this bounded
                    self._fleets.clear()
                binding = self._fleets[fleet] = Fleet(self.rpc, fleet)
            return binding

    # -- head -------------------------------------------------------------------------------------

    def head(self) -> tuple[int, int]:
        """(number, timestamp) of the latest block, cached for the block TTL."""

        def load() -> list[int]:
            block = self.rpc.get_block("latest")
            return [hx.parse_quantity(block["number"], "number"), hx.parse_quantity(block["timestamp"], "ts")]

        number, timestamp = self.cache.get("blocks", "head", load)
        return int(number), int(timestamp)

    # -- proxied reads for the node's JSON-RPC (SPEC 8) ---------------------------------------------

    def proxy(self, method: str, params: object = ()) -> Any:
        return self.proxy_fetch(method, params).value

    def proxy_fetch(self, method: str, params: object = ()) -> Hit:
        """An eth_* read for the node's JSON-RPC, through the cache: the endpoint's JSON result.

        Bad params raise RpcError(-32602) naming the problem, an unknown method RpcError(-32601).
        Reads of "latest" are cached for the block TTL, reads at a fixed block and mined receipts
        for a day; a receipt not mined yet is not cached.
        """
        if method not in PROXIED_METHODS:
            known = ", ".join(PROXIED_METHODS)
            raise RpcError(METHOD_NOT_FOUND, f"{method!r} is not proxied; expected one of {known}")
        if isinstance(params, tuple):
            params = list(params)
        if not isinstance(params, list):
            raise RpcError(INVALID_PARAMS, f"{method}: params must be an array, got {type(params).__name__}")
        normal, category, check = _proxy_params(method, params)
        key = f"{method}:{json.dumps(normal, sort_keys=True, separators=(',', ':'))}"

        def load() -> Any:
            result = self.rpc.call(method, normal)
            check(result)
            return result

        keep = (lambda value: value is not None) if method == "eth_getTransactionReceipt" else None
        return self.cache.fetch(category, key, load, keep)


class ChainFleetCheck:
    """chrnode.ticket's FleetCheck (SPEC 5 step 4) over a ChainService."""

    def __init__(self, service: ChainService) -> None:
        self.service = service

    def node_allowed(self, fleet: bytes, node: bytes) -> bool:
        return self.service.fleet_allows_node(fleet, node)

    def device_allowed(self, fleet: bytes, device: bytes) -> bool:
        return self.service.fleet_allows_device(fleet, device)


def _address(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 20:
        raise ValueError(f"{what} must be a 20-byte address, got {value!r:.60}")
    return bytes(value)


# -- proxied params ---------------------------------------------------------------------------------


def _bad(method: str, problem: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"{method}: {problem}")


def _proxy_params(method: str, params: list[Any]) -> tuple[list[Any], str, Callable[[Any], None]]:
    """(normalised params, cache category, result check) of one proxied call."""
    if method in ("eth_blockNumber", "eth_chainId"):
        if params:
            raise _bad(method, f"takes no params, got {len(params)}")
        category = "blocks" if method == "eth_blockNumber" else "immutable"
        return [], category, lambda r: _check(hx.parse_quantity, r, method)
    if method == "eth_getTransactionReceipt":
        if len(params) != 1:
            raise _bad(method, f"takes one param (the transaction hash), got {len(params)}")
        tx_hash = _hex_param(method, params[0], "transaction hash", 32)
        return [tx_hash], "immutable", lambda r: _check_receipt(r, method)
    if method == "eth_call":
        if not 1 <= len(params) <= 2:
            raise _bad(method, f"takes [call object, block], got {len(params)} params")
        call = _call_object(method, params[0])
        block, category = _block_param(method, params[1] if len(params) > 1 else "latest")
        return [call, block], category, lambda r: _check(hx.parse_data, r, method)
    # eth_getBalance, eth_getCode: [address, block]
    if not 1 <= len(params) <= 2:
        raise _bad(method, f"takes [address, block], got {len(params)} params")
    address = _hex_param(method, params[0], "address", 20)
    block, category = _block_param(method, params[1] if len(params) > 1 else "latest")
    parse = hx.parse_quantity if method == "eth_getBalance" else hx.parse_data
    return [address, block], category, lambda r: _check(parse, r, method)


def _hex_param(method: str, value: object, what: str, length: int | None = None) -> str:
    if not isinstance(value, str):
        raise _bad(method, f"{what} must be a 0x-hex string, got {type(value).__name__}")
    try:
        raw = hx.parse_data(value, what)
    except ChainError as exc:
        raise _bad(method, f"{what} {value[:80]!r} is not 0x-hex data of whole bytes") from exc
    if length is not None and len(raw) != length:
        raise _bad(method, f"{what} must be {length} bytes, got {len(raw)}")
    return "0x" + raw.hex()


def _block_param(method: str, value: object) -> tuple[str, str]:
    """The block id and the cache category: "latest" and friends change, a number does not."""
    if value in BLOCK_TAGS_LATEST:
        return str(value), "blocks"
    if value == "earliest":
        return "earliest", "immutable"
    if isinstance(value, str):
        try:
            return hx.hex_quantity(hx.parse_quantity(value, "block")), "immutable"
        except ChainError:
            pass
    expected = "a 0x-hex number or one of latest, earliest, pending, safe, finalized"
    raise _bad(method, f"block must be {expected}; got {value!r:.60}")


def _call_object(method: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _bad(method, f"the call must be an object with 'to' and 'data', got {type(value).__name__}")
    unknown = sorted(set(value) - set(_CALL_FIELDS))
    if unknown:
        raise _bad(method, f"unknown call fields {unknown}; expected some of {', '.join(_CALL_FIELDS)}")
    if "to" not in value:
        raise _bad(method, "the call object needs 'to' (the contract address)")
    call: dict[str, str] = {}
    for name, raw in value.items():
        if name in ("from", "to"):
            call[name] = _hex_param(method, raw, f"call '{name}'", 20)
        elif name in ("data", "input"):
            call[name] = _hex_param(method, raw, f"call '{name}'")
        else:
            if not isinstance(raw, str):
                raise _bad(method, f"call '{name}' must be a 0x-hex quantity, got {raw!r:.40}")
            try:
                call[name] = hx.hex_quantity(hx.parse_quantity(raw, name))
            except ChainError as exc:
                raise _bad(method, f"call '{name}' must be a 0x-hex quantity, got {raw[:40]!r}") from exc
    return call


def _check(parse: Callable[[object, str], object], result: object, method: str) -> None:
    parse(result, f"{method} result")


def _check_receipt(result: object, method: str) -> None:
    if result is not None and not isinstance(result, dict):
        raise ChainError(f"{method} result: got {str(result)[:80]!r}; expected a receipt object or null")
