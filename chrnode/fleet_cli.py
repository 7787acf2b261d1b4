"""`chr-node fleet ...`: the fleet operator's commands (SPEC 5 step 4, SPEC 7; issue 7).

    chr-node fleet list                              who the fleet admits (nodes, devices, open or not)
    chr-node fleet open | close                      admit any device / only listed ones
    chr-node fleet allow 0xDEVICE [0xDEVICE ...]     list devices (--node: nodes instead)
    chr-node fleet revoke 0xDEVICE [...]             take them off the list (--node: nodes)

The fleet is the node's (`fleet_contract`, or `<data_dir>/contracts.json` of tools/devchain),
or --fleet. The chain is the node's (`chain_rpc`, `chain_id`). Changes are transactions signed
by the fleet's operator: `--key-file FILE` (64 hex digits, mode 0600, as `chr-node device keygen`
writes them); on the development chain of tools/devchain (chain 31337, deployed by anvil's first
account) the deployer's well-known key is used when no key file is named. A running node sees a
change within a block or two (RemoteChain.Monitor watches the Fleet's events).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from chrnode.errors import ChrError

DEV_CHAIN_ID = 31337  # anvil's, as tools/devchain runs it (chrnode.testing.anvil)


def _context(args: argparse.Namespace, loaded: Any) -> tuple[Any, Any]:
    """(RemoteRpc, Fleet binding) for the configured chain and the chosen fleet."""
    from chrnode.chain.contracts import Fleet
    from chrnode.chain.rpc import RemoteRpc
    from chrnode.chain.service import ChainContracts
    from chrnode.crypto import parse_address

    config = loaded.config
    if args.fleet:
        fleet = parse_address(args.fleet)
    else:
        contracts = ChainContracts.from_config(config)
        if contracts.fleet is None:
            raise ChrError(f"no fleet to manage: {contracts.problem}; or name one with --fleet 0x...")
        fleet = contracts.fleet
    rpc = RemoteRpc(config.chain_rpc, config.chain_id, timeout=config.chain_timeout)
    binding = Fleet(rpc, fleet)
    if not rpc.get_code(fleet):
        rpc.close()
        raise ChrError(
            f"no contract at {binding_hex(fleet)} on chain {config.chain_id} "
            f"({', '.join(config.chain_rpc)}); is the chain running (tools/devchain), the address right?"
        )
    return rpc, binding


def binding_hex(address: bytes) -> str:
    return "0x" + address.hex()


def _signer(args: argparse.Namespace, loaded: Any, binding: Any) -> Any:
    """The operator's signer: --key-file, or the dev deployer's key on the dev chain."""
    from chrnode.chain.tx import KeySigner
    from chrnode.device.key import DeviceKey

    operator = binding.operator()
    if args.key_file:
        signer = KeySigner(DeviceKey.load(args.key_file).private_key.to_bytes())
    elif loaded.config.chain_id == DEV_CHAIN_ID:
        from chrnode.testing.anvil import DEV_KEYS

        signer = KeySigner(DEV_KEYS[0])
    else:
        raise ChrError(
            f"changing fleet {binding_hex(binding.address)} on chain {loaded.config.chain_id} needs its "
            f"operator's key: pass --key-file FILE (the key of {binding_hex(operator)})"
        )
    if signer.address != operator:
        source = f"the key in {args.key_file}" if args.key_file else "the development deployer key"
        raise ChrError(
            f"{source} is {binding_hex(signer.address)}, but fleet {binding_hex(binding.address)} is run by "
            f"{binding_hex(operator)}: only its operator may change it (pass that key with --key-file)"
        )
    return signer


def _addresses(texts: Sequence[str]) -> list[bytes]:
    from chrnode.crypto import parse_address

    return [parse_address(text) for text in texts]  # CryptoError names the bad one


def _tx(receipt: dict[str, Any]) -> str:
    return str(receipt.get("transactionHash", "?"))


def cmd_open_close(args: argparse.Namespace, loaded: Any) -> int:
    opening = args.fleet_command == "open"
    rpc, fleet = _context(args, loaded)
    with rpc:
        signer = _signer(args, loaded, fleet)
        receipt = fleet.set_devices_open(signer, opening)
    what = "open: any device may use it" if opening else "closed: only listed devices may use it"
    print(f"fleet {binding_hex(fleet.address)} device list {what} (tx {_tx(receipt)})")
    return 0


def cmd_allow_revoke(args: argparse.Namespace, loaded: Any) -> int:
    allowing = args.fleet_command == "allow"
    who = _addresses(args.addresses)
    kind = "node" if args.node else "device"
    rpc, fleet = _context(args, loaded)
    with rpc:
        signer = _signer(args, loaded, fleet)
        if args.node:
            receipt = fleet.set_nodes_allowed(signer, who, allowing)
        else:
            receipt = fleet.set_devices_allowed(signer, who, allowing)
    verb = "allowed in" if allowing else "revoked from"
    for address in who:
        print(f"{kind} {binding_hex(address)} {verb} fleet {binding_hex(fleet.address)}")
    print(f"tx {_tx(receipt)}; running nodes see it within a block or two")
    return 0


def fleet_listing(rpc: Any, fleet: Any) -> dict[str, Any]:
    """The fleet's state: its lists are folded from its NodeAllowed/DeviceAllowed events (a
    mapping cannot be enumerated) and checked against the contract's current answers."""
    from chrnode.chain import hexcodec as hx

    lists: dict[str, dict[bytes, bool]] = {"node": {}, "device": {}}
    topics = [hx.hex_data(fleet.abi.event_topic(e)) for e in ("NodeAllowed", "DeviceAllowed")]
    logs = rpc.call(
        "eth_getLogs",
        [
            {
                "address": hx.hex_address(fleet.address),
                "fromBlock": "earliest",
                "toBlock": "latest",
                "topics": [topics],
            }
        ],
    )
    for kind, event in (("node", "NodeAllowed"), ("device", "DeviceAllowed")):
        for entry in fleet.abi.decode_logs(event, logs, fleet.address):
            lists[kind][entry[kind]] = bool(entry["allowed"])  # logs come in chain order: the last wins
    nodes = sorted(a for a, on in lists["node"].items() if on and fleet.node_allowed(a))
    devices = sorted(a for a, on in lists["device"].items() if on and fleet.device_listed(a))
    return {
        "fleet": hx.hex_address(fleet.address),
        "operator": hx.hex_address(fleet.operator()),
        "devices_open": fleet.devices_open(),
        "requires_payment": fleet.requires_payment(),
        "price_per_byte": str(fleet.price_per_byte()),
        "nodes": [hx.hex_address(a) for a in nodes],
        "devices": [hx.hex_address(a) for a in devices],
    }


def cmd_list(args: argparse.Namespace, loaded: Any) -> int:
    rpc, fleet = _context(args, loaded)
    with rpc:
        listing = fleet_listing(rpc, fleet)
    if args.json:
        print(json.dumps(listing, indent=2, sort_keys=True))
        return 0
    print(f"fleet {listing['fleet']} on chain {loaded.config.chain_id}, operator {listing['operator']}")
    if listing["devices_open"]:
        print("device list: OPEN (any device may use the fleet; `chr-node fleet close` closes it)")
    else:
        print("device list: closed (only the devices below; `chr-node fleet allow 0x...` adds one)")
    payment = f"{listing['price_per_byte']} CHAI per byte" if listing["requires_payment"] else "no payment"
    print(f"payment: {payment}")
    for kind, title in (("nodes", "nodes allowed"), ("devices", "devices listed")):
        print(f"{title} ({len(listing[kind])}):")
        for address in listing[kind]:
            print(f"  {address}")
    return 0


def add_fleet_commands(sub: Any) -> None:
    fleet = sub.add_parser(
        "fleet", help="manage the fleet's allowlists (operator): list, open, close, allow, revoke"
    )
    actions = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser, changes: bool = True) -> None:
        parser.add_argument("--fleet", help="the fleet contract (default: the node's fleet)")
        if changes:
            parser.add_argument(
                "--key-file",
                help="the fleet operator's key (64 hex digits, mode 0600); on the dev chain: its deployer",
            )

    listing = actions.add_parser("list", help="show who the fleet admits")
    common(listing, changes=False)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_list)
    for name, help_text in (
        ("open", "admit any device (the device list is ignored)"),
        ("close", "admit only the listed devices"),
    ):
        action = actions.add_parser(name, help=help_text)
        common(action)
        action.set_defaults(handler=cmd_open_close)
    for name, help_text in (
        ("allow", "add devices (or --node nodes) to the list"),
        ("revoke", "take them off"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("addresses", nargs="+", metavar="0xADDRESS")
        action.add_argument("--node", action="store_true", help="the addresses are nodes, not devices")
        common(action)
        action.set_defaults(handler=cmd_allow_revoke)
