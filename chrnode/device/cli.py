"""`chr-node device ...`: a device on the command line (SPEC 3-5), on top of chrnode.device.client.

    chr-node device keygen --key dev.key
    chr-node device address --key dev.key                       # its 0x address, for scripts
    chr-node device ping --key dev.key [--node 127.0.0.1:41046] [--expect 0xNODE]
    chr-node device publish --key a.key --port web --local 127.0.0.1:8080
    chr-node device bind --key b.key --device 0xA... --port web --local-port 9000
        # then: curl localhost:9000 reaches the web server behind device A, through the node

Without --node the node of this machine's config is used (host 127.0.0.1, first edge port).

Everything the node refuses or says is printed to stderr as ``chr-node device: ... CODE: message``
(CODE from docs/devices.md): ticket refusals, notices, refused ports, the reason the node closed
the connection. Exit status: 0 done (or Ctrl-C), 1 refused or closed by the node (the last line
says why), 2 bad arguments or key file. `bind` first opens the port once: a target that is not
connected or does not publish the port ends it at once (exit 1); later refusals reset the local
connection and print a line each, and `bind` keeps listening. Both ping the node every
--keepalive seconds (60), so that the node does not close them as idle while they wait.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from chrnode.errors import ChrError, ConnectionClosed, CryptoError, ProtocolError, describe

PREFIX = "chr-node device: "


def _node(args: argparse.Namespace, loaded: Any) -> tuple[str, int]:
    if args.node:
        host, _, port = args.node.rpartition(":")
        if not host or not port.isdigit():
            raise ChrError(f"--node {args.node!r}: expected HOST:PORT, e.g. 127.0.0.1:41046")
        return host, int(port)
    cfg = loaded.config
    port = int(cfg.edge2_ports[0])
    if port == 0:  # configured 0: the port the node bound, from its ports file
        from chrnode.ports_file import read_ports

        ports = read_ports(cfg.data_dir) or {}
        bound = ports.get("edge2") or [0]
        port = int(bound[0]) if isinstance(bound, list) and bound else 0
        if not port:
            raise ChrError(
                "the device port is configured 0 and the node's ports file names no bound port; "
                "is the node running? (or give --node HOST:PORT)"
            )
    return "127.0.0.1", port


def _expect(args: argparse.Namespace) -> bytes | None:
    from chrnode.crypto import parse_address

    return parse_address(args.expect) if getattr(args, "expect", None) else None


def _say(line: str) -> None:
    print(PREFIX + line, file=sys.stderr, flush=True)


def _show_client_log() -> None:
    """The client logs refusals and notices (logger chrnode.client): print them, one a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(PREFIX + "%(message)s"))
    log = logging.getLogger("chrnode.client")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class _Connector:
    """What every network action needs, checked before the event loop starts (bad input: exit 2)."""

    def __init__(self, args: argparse.Namespace, loaded: Any) -> None:
        from chrnode.device.key import DeviceKey

        self.host, self.port = _node(args, loaded)
        self.key = DeviceKey.load(args.key)
        self.expect = _expect(args)

    async def connect(self) -> Any:
        from chrnode.device.client import connect

        return await connect(self.host, self.port, self.key, expect_node=self.expect)


def _closed_line(client: Any) -> str:
    reason: ConnectionClosed | None = client.closed_reason
    if reason is None:
        return "the node closed the connection without giving a reason"
    return f"the node closed the connection: {describe(reason)}"


def cmd_keygen(args: argparse.Namespace, loaded: Any) -> int:
    from chrnode.device.key import DeviceKey

    key = DeviceKey.create(args.key)
    print(f"device {key.hex_address} (key written to {args.key}, mode 0600)")
    return 0


def cmd_address(args: argparse.Namespace, loaded: Any) -> int:
    from chrnode.device.key import DeviceKey

    print(DeviceKey.load(args.key).hex_address)
    return 0


def cmd_ping(args: argparse.Namespace, loaded: Any) -> int:
    from chrnode.crypto import to_hex_address

    connector = _Connector(args, loaded)

    async def run() -> int:
        client = await connector.connect()
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await client.ping()
            rtt = (loop.time() - started) * 1000
            refused = client.tickets.last_error
            ticket = f"ticket refused ({getattr(refused, 'code', 'error')})" if refused else "ticket accepted"
            print(
                f"node {to_hex_address(client.node)} epoch {client.epoch} chain {client.chain_id}: "
                f"ping {rtt:.1f} ms, {ticket}"
            )
            return 1 if refused else 0
        finally:
            await client.close()

    return _run(run())


def cmd_publish(args: argparse.Namespace, loaded: Any) -> int:
    host, _, port = args.local.rpartition(":")
    if not host or not port.isdigit():
        raise ChrError(
            f"--local {args.local!r}: expected HOST:PORT of the local service, e.g. 127.0.0.1:8080"
        )
    connector = _Connector(args, loaded)

    async def run() -> int:
        client = await connector.connect()
        _keep_alive(client, args)
        await client.publish(host, int(port), _port_name(args.port))
        print(
            f"publishing {args.local} as port {args.port!r} of device {connector.key.hex_address};"
            " Ctrl-C stops",
            flush=True,
        )
        await client.wait_closed()
        _say(_closed_line(client))
        return 1

    return _run(run())


def cmd_bind(args: argparse.Namespace, loaded: Any) -> int:
    connector = _Connector(args, loaded)
    target: bytes | str = args.device
    if args.device.startswith("0x"):
        from chrnode.crypto import parse_address

        target = parse_address(args.device)

    async def run() -> int:
        client = await connector.connect()
        try:
            bound = await client.bind(args.local_port, target, _port_name(args.port), check=True)
        except ProtocolError as exc:
            await client.close()
            _say(f"cannot bind port {args.port!r} of {args.device}: {describe(exc)}")
            return 1
        _keep_alive(client, args)
        print(f"127.0.0.1:{bound} reaches port {args.port!r} of {args.device}; Ctrl-C stops", flush=True)
        await client.wait_closed()
        _say(_closed_line(client))
        return 1

    return _run(run())


def _keep_alive(client: Any, args: argparse.Namespace) -> None:
    if args.keepalive > 0:
        client.keep_alive(args.keepalive)


def _port_name(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run a network action; a refusal (hello, wrong node, closed connection) is exit 1."""
    _show_client_log()
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 0
    except (ProtocolError, CryptoError) as exc:
        _say(describe(exc))
        return 1


def add_device_commands(sub: Any) -> None:
    device = sub.add_parser("device", help="act as a device: keygen, address, ping, publish, bind")
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
    address = actions.add_parser("address", help="print the address of a device key file")
    address.add_argument("--key", required=True)
    address.set_defaults(handler=cmd_address)
    ping = actions.add_parser("ping", help="connect, prove the key, pay a ticket, ping the node")
    common(ping)
    ping.set_defaults(handler=cmd_ping)
    publish = actions.add_parser("publish", help="offer a local TCP service to other devices")
    common(publish)
    publish.add_argument("--port", required=True, help="the port name or number others open")
    publish.add_argument("--local", required=True, help="HOST:PORT of the local service")
    publish.set_defaults(handler=cmd_publish)
    keepalive_help = "seconds between pings that keep the session from idling out (0: none)"
    publish.add_argument("--keepalive", type=float, default=60.0, metavar="SECONDS", help=keepalive_help)
    bind = actions.add_parser("bind", help="a local TCP port that reaches another device's port")
    common(bind)
    bind.add_argument("--device", required=True, help="the other device: 0x address or BNS name")
    bind.add_argument("--port", required=True, help="the port name or number it published")
    bind.add_argument("--local-port", type=int, default=0, help="local port to listen on (0: any)")
    bind.add_argument("--keepalive", type=float, default=60.0, metavar="SECONDS", help=keepalive_help)
    bind.set_defaults(handler=cmd_bind)
