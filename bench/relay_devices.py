"""Device processes that stay connected through a relay and take orders over a pipe, so that
several relays can be measured in turn, in short alternating batches, on connections kept open
(bench_relay_net.py). The clients are the blocking TLS sockets of bench_relay.py.

Orders (a tuple on the pipe), each answered on the pipe when done:

    ("count", n)  receiver: read n bytes of port data -> (bytes, seconds from the first read)
    ("send", n)   sender: send n bytes in big portsend frames -> "sent"
    ("echo", n)   receiver: send back n small portsend frames as they come -> "echoed"
    ("rtt", n)    sender: n round trips of a small portsend frame -> [seconds, ...]
    ("stop", 0)   leave

Frames other than portsend that a node sends a device (port_pause / port_resume to a sender that
ignores them, as bench_relay.py's does) are skipped by the round trips.
"""

from __future__ import annotations

import socket
import ssl
import time
from multiprocessing.connection import Connection
from typing import Any

from bench_relay import BLOCK, SMALL, _baseline_context, _count, _device, _frame_of, _send_loop

PORTSEND = 0x04
HEADER = 8

# Where a device connects: ("node", edge port, node address), ("tls-client", port) through socat,
# or ("tls-server", listening socket, cert, key): the receiver behind the last socat.
Endpoint = tuple[Any, ...]


class FrameStream:
    """Whole EdgeV2 frames from a blocking socket, with what was read ahead."""

    def __init__(self, sock: ssl.SSLSocket, already: bytes | bytearray = b"") -> None:
        self.sock = sock
        self.buf = bytearray(already)

    def next(self) -> bytes:
        while len(self.buf) < HEADER:
            self._fill()
        end = HEADER + int.from_bytes(self.buf[4:8], "big")
        while len(self.buf) < end:
            self._fill()
        frame = bytes(self.buf[:end])
        del self.buf[:end]
        return frame

    def data_frame(self) -> bytes:
        """The next portsend frame (other frames skipped)."""
        while True:
            frame = self.next()
            if frame[1] == PORTSEND:
                return frame

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the relay closed the connection")
        self.buf += chunk


def _connect(role: str, endpoint: Endpoint, pipe: Connection, ticket_bytes: int) -> tuple[FrameStream, int]:
    """The device's socket and the port's ref, once the port is open."""
    kind = endpoint[0]
    if kind == "tls-server":
        _kind, listen, cert, key = endpoint
        raw, _addr = listen.accept()
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return FrameStream(_baseline_context(True, cert, key).wrap_socket(raw, server_side=True)), 1
    if kind == "tls-client":
        raw = socket.create_connection(("127.0.0.1", endpoint[1]), timeout=60)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return FrameStream(_baseline_context(False).wrap_socket(raw)), 1
    _kind, port, node = endpoint
    client, key = _device(port, node, ticket_bytes)
    if role == "receiver":
        pipe.send(key.address)
        msg_type, _flags, request = client.recv()  # the node's portopen request: accept it
        assert msg_type == 0x03, request
        client.send(0x03, {"id": request["id"]}, flags=1)
        ref = request["ref"]
    else:
        target = pipe.recv()
        client.send(0x03, {"id": 3, "device": target, "port": 1, "flags": "rw"})
        ref = client.recv()[2]["ref"]
    return FrameStream(client.sock, client._buf), ref


def device_main(role: str, endpoint: Endpoint, pipe: Connection, frame_size: int, ticket_bytes: int) -> None:
    stream, ref = _connect(role, endpoint, pipe, ticket_bytes)
    sock = stream.sock
    big = _frame_of(ref, BLOCK[:frame_size])
    small = _frame_of(ref, SMALL)
    pipe.send(len(big))  # ready; chunks are whole frames of this size
    while True:
        order, n = pipe.recv()
        if order == "stop":
            return
        if order == "count":
            already = len(stream.buf)
            stream.buf.clear()
            pipe.send(_count(sock, n, already))
        elif order == "send":
            _send_loop(sock.sendall, big, n)
            pipe.send("sent")
        elif order == "echo":
            for _ in range(n):
                sock.sendall(stream.data_frame())
            pipe.send("echoed")
        elif order == "rtt":
            times = []
            for _ in range(n):
                started = time.perf_counter()
                sock.sendall(small)
                stream.data_frame()
                times.append(time.perf_counter() - started)
            pipe.send(times)
