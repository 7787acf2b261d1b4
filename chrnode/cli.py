"""The `chr-node` command: start, status, config, rpc, shell, device, fleet. Only `main()` reads
os.environ."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from chrnode import __version__
from chrnode.config import LoadedConfig, load, resolve_config_path
from chrnode.errors import ChrError


def _load(args: argparse.Namespace, env: Mapping[str, str]) -> LoadedConfig:
    path = resolve_config_path(Path(args.config) if args.config else None, env)
    return load(env, path)


def cmd_start(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    from chrnode.daemon import Daemon

    return Daemon(loaded.config).run()


def cmd_init(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    """Create the data dir, the node key and certificates (as `start` would) and print the address."""
    from chrnode.daemon import prepare_identity

    address = prepare_identity(loaded.config)
    print(address if args.quiet else f"node {address}, data dir {loaded.config.data_dir}")
    return 0


def cmd_config(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    print(loaded.render())
    print(contract_sources(loaded))
    return 0


def contract_sources(loaded: LoadedConfig) -> str:
    """Which contract addresses the node uses and where each came from: a `*_contract` key
    (file or env), else `<data_dir>/contracts.json` (written by tools/devchain), else none."""
    from chrnode.chain import hexcodec as hx
    from chrnode.chain.deploy import ROLES
    from chrnode.chain.service import ChainContracts

    cfg = loaded.config
    contracts = ChainContracts.from_config(cfg)
    lines = ["# Contract addresses in use (an empty *_contract key is read from contracts.json):"]
    rows = []
    for role in ROLES:
        key = f"{role}_contract"
        address: bytes | None = getattr(contracts, role)
        if getattr(cfg, key):
            origin = loaded.sources[key]
        elif address is not None:
            origin = f"file:{contracts.source} (tools/devchain)"
        else:
            origin = "none"
        rows.append((f"{key} = {hx.hex_address(address) if address else '(none)'}", origin))
    width = max(len(text) for text, _ in rows)
    lines.extend(f"#   {text.ljust(width)}  # {origin}" for text, origin in rows)
    if contracts.problem:
        lines.append(f"#   not configured: {contracts.problem}")
    return "\n".join(lines)


def cmd_rpc(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    from chrnode.rpc.client import RpcClient, parse_params

    client = RpcClient.for_config(loaded.config)
    result = client.call(args.method, parse_params(args.params))
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def cmd_status(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    from chrnode.rpc.client import RpcClient, format_status

    client = RpcClient.for_config(loaded.config)
    info = client.call("chr_node_info", [])
    health = client.call("health", [])
    stats = client.call("network_stats", [])
    print(format_status(info, health, stats))
    return 0 if health.get("status") != "down" else 1


def cmd_shell(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    from chrnode.rpc.client import RpcClient
    from chrnode.shell import AdminShell

    client = RpcClient.for_config(loaded.config)
    AdminShell(client, history_file=Path(loaded.config.data_dir) / ".shell_history").run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chr-node", description="Chronara community relay node")
    parser.add_argument("--version", action="version", version=f"chr-node {__version__}")
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $CHR_CONFIG or ./conf/chronara.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "start", help="run the node in the foreground (logs to stderr and <data_dir>/chr-node.log)"
    )
    init = sub.add_parser(
        "init", help="create the data dir, node key and certificates; print the node address"
    )
    init.add_argument("--quiet", action="store_true", help="print the address only")
    sub.add_parser("status", help="show the running node's state and health")
    sub.add_parser("config", help="print the effective config and where each value came from")
    rpc = sub.add_parser("rpc", help="call a JSON-RPC method on the running node")
    rpc.add_argument("method")
    rpc.add_argument("params", nargs="*", help="positional params (JSON values), or one JSON object/array")
    sub.add_parser("shell", help="interactive admin shell on the running node")
    try:
        from chrnode.device.cli import add_device_commands
    except ImportError:  # the device client is optional for the daemon
        pass
    else:
        add_device_commands(sub)
    from chrnode.fleet_cli import add_fleet_commands

    add_fleet_commands(sub)
    return parser


COMMANDS = {
    "init": cmd_init,
    "start": cmd_start,
    "config": cmd_config,
    "rpc": cmd_rpc,
    "status": cmd_status,
    "shell": cmd_shell,
}


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = dict(os.environ if env is None else env)
    try:
        loaded = _load(args, environ)
        handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
        if handler is None:
            raise ChrError(f"unknown command {args.command!r}")
        return int(handler(args, loaded))
    except ChrError as exc:
        print(f"chr-node: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
