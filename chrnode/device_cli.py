"""`chr-node device ...`: a device on the command line (SPEC 3-5), on top of chrnode.client.

    chr-node device keygen --key dev.key
    chr-node device ping --key dev.key [--node 127.0.0.1:41046] [--expect 0xNODE]
    chr-node device publish --key a.key --port web --local 127.0.0.1:8080
    chr-node device bind --key b.key --device 0xA... --port web --local-port 9000
        # then: curl localhost:9000 reaches the web server behind device A, through the node

Without --node the node of this machine's config is used (host 127.0.0.1, first edge port).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from chrnode.errors import ChrError


def _node(args: argparse.Namespace, loaded: Any) -> tuple[str, int]:
    if args.node:
        host, _, port = args.node.rpartition(":")
        if not host or not port.isdigit():
            raise ChrError(f"--node {args.node!r}: expected HOST:PORT, e.g. 127.0.0.1:41046")
        return host, int(port)
    return "127.0.0.1", int(loaded.config.edge2_ports[0])


def _expect(args: argparse.Namespace) -> bytes | None:
    from chrnode.crypto import parse_address

    return parse_address(args.expect) if getattr(args, "expect", None) else None


async def _connect(args: argparse.Namespace, loaded: Any) -> Any:
    from chrnode.client import connect
    from chrnode.client_key import DeviceKey

    host, port = _node(args, loaded)
    key = DeviceKey.load(args.key)
    return await connect(host, port, key, expect_node=_expect(args))


def cmd_keygen(args: argparse.Namespace, loaded: Any) -> int:
    from chrnode.client_key import DeviceKey

    key = DeviceKey.create(args.key)
    print(f"device {key.hex_address} (key written to {args.key}, mode 0600)")
    return 0


def cmd_ping(args: argparse.Namespace, loaded: Any) -> int:
    from chrnode.crypto import to_hex_address

    async def run() -> None:
        client = await _connect(args, loaded)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await client.ping()
            rtt = (loop.time() - started) * 1000
            print(
                f"node {to_hex_address(client.node)} epoch {client.epoch} chain {client.chain_id}: "
                f"ping {rtt:.1f} ms"
            )
        finally:
            await client.close()

    asyncio.run(run())
    return 0


def cmd_publish(args: argparse.Namespace, loaded: Any) -> int:
    host, _, port = args.local.rpartition(":")
    if not host or not port.isdigit():
        raise ChrError(
            f"--local {args.local!r}: expected HOST:PORT of the local service, e.g. 127.0.0.1:8080"
        )

    async def run() -> None:
        client = await _connect(args, loaded)
        await client.publish(host, int(port), _port_name(args.port))
        print(
            f"publishing {args.local} as port {args.port!r} of device 0x{client.key.address.hex()};"
            " Ctrl-C stops",
            flush=True,
        )
        await client.wait_closed()

    return _run_forever(run())


def cmd_bind(args: argparse.Namespace, loaded: Any) -> int:
    async def run() -> None:
        client = await _connect(args, loaded)
        target: bytes | str = args.device
        if args.device.startswith("0x"):
            from chrnode.crypto import parse_address

            target = parse_address(args.device)
        bound = await client.bind(args.local_port, target, _port_name(args.port))
        print(f"127.0.0.1:{bound} reaches port {args.port!r} of {args.device}; Ctrl-C stops", flush=True)
        await client.wait_closed()

    return _run_forever(run())


def _port_name(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _run_forever(coro: Any) -> int:
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        return 0
    print("the node closed the connection")
    return 1


def add_device_commands(sub: Any) -> None:
    device = sub.add_parser("device", help="act as a device: keygen, ping, publish, bind")
    actions = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--key", required=True, help="the device key file")
        parser.add_argument(
            "--node", help="HOST:PORT of the node's device port (default: this machine's node)"
        )
        parser.add_argument("--expect", help="the node's 0x address; refuse any other node")

    keygen = actions.add_parser("keygen", help="create a device key file (mode 0600)")
    keygen.add_argument("--key", required=True)
    keygen.set_defaults(handler=cmd_keygen)
    ping = actions.add_parser("ping", help="connect, prove the key, ping the node")
    common(ping)
    ping.set_defaults(handler=cmd_ping)
    publish = actions.add_parser("publish", help="offer a local TCP service to other devices")
    common(publish)
    publish.add_argument("--port", required=True, help="the port name or number others open")
    publish.add_argument("--local", required=True, help="HOST:PORT of the local service")
    publish.set_defaults(handler=cmd_publish)
    bind = actions.add_parser("bind", help="a local TCP port that reaches another device's port")
    common(bind)
    bind.add_argument("--device", required=True, help="the other device: 0x address or BNS name")
    bind.add_argument("--port", required=True, help="the port name or number it published")
    bind.add_argument("--local-port", type=int, default=0, help="local port to listen on (0: any)")
    bind.set_defaults(handler=cmd_bind)
