"""Relay benchmark (SPEC 13): device -> node -> device over TLS vs socat relaying TLS -> TLS.

    .venv/bin/python bench/bench_relay.py [--mb 200] [--frame-kib 256] [--rtt 2000] [--rounds 3]

Both relays move the same bytes between the same two client programs (blocking TLS sockets in
processes of their own, TLS 1.2 ECDHE-ECDSA with AES-256-GCM): through an EdgeServer process
(port frames relayed without a copy in Python) and through `socat OPENSSL-LISTEN ... OPENSSL-CONNECT`.
Prints MB/s of both and the ratio against the 0.8 target, then the median round trip of a small
message through each relay against the 1.5x target. Runs alternate and the best of each is kept,
so that load from anything else on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import multiprocessing as mp
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.crypto import PrivateKey
from chrnode.edge.messages import encode_portsend_parts
from chrnode.identity import EDGE_CIPHERS, load_node_identity
from chrnode.testing.edge import RawFrameClient, start_node
from chrnode.ticket import Ticket

BLOCK = os.urandom(1 << 20)
SMALL = b"x" * 64
Queue = Any  # multiprocessing queues are not generic at runtime


def _frame_of(ref: int, data: bytes) -> bytes:
    header, body = encode_portsend_parts(ref, data)
    return header + bytes(body)


def _total_bytes(total_mb: int, frame: bytes) -> int:
    """Whole frames adding up to at least ``total_mb`` MB."""
    return (total_mb * 1_000_000 // len(frame) + 1) * len(frame)


def _recv_exact(sock: ssl.SSLSocket, size: int) -> bytes:
    parts = bytearray()
    while len(parts) < size:
        chunk = sock.recv(size - len(parts))
        if not chunk:
            raise ConnectionError("closed")
        parts += chunk
    return bytes(parts)


def _count(sock: ssl.SSLSocket, total: int, already: int = 0) -> tuple[int, float]:
    """Read until ``total`` bytes arrived: (bytes, seconds since the first read returned)."""
    view = memoryview(bytearray(1 << 20))
    got = already
    started = 0.0
    while got < total:
        n = sock.recv_into(view)
        if not n:
            break
        if not started:
            started = time.perf_counter()
        got += n
    return got, time.perf_counter() - started


def _send_loop(send: Any, frame: bytes, total: int) -> None:
    sent = 0
    while sent < total:
        send(frame)
        sent += len(frame)


def _round_trips(send: Any, recv_frame: Any, frame: bytes, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        send(frame)
        recv_frame()
        times.append(time.perf_counter() - started)
    return times


def _collect(q: Queue, mode: str) -> Any:
    """The result of a run: the receiver's (bytes, seconds) or the sender's round-trip list."""
    result = q.get(timeout=600)
    if mode == "throughput":
        got, seconds = result
        return got / seconds / 1e6
    return result


def _reap(*procs: mp.Process) -> None:
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


# ---- through the node -------------------------------------------------------------------------


def run_node(data_dir: str, port_queue: Queue, stop: Any) -> None:
    async def serve() -> None:
        node = await start_node(Path(data_dir), connection_timeout=30.0)
        port_queue.put(node.port)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await node.stop()

    asyncio.run(serve())


def _device(port: int, node: bytes, total: int) -> tuple[RawFrameClient, PrivateKey]:
    key = PrivateKey.generate()
    client = RawFrameClient("127.0.0.1", port, timeout=60)
    answer = client.hello(key, node)
    # One ticket covering the whole run, so the node never has to ask during the measurement.
    ticket = Ticket(answer["chain_id"], answer["epoch"], node, answer["fleet"], 1, 4 * total + (1 << 30))
    client.send(0x02, {"id": 2, "ticket": ticket.sign(key).to_wire()})
    reply = client.recv()[2]
    assert reply.get("status") == "thanks", reply
    return client, key


def _echo(sock: ssl.SSLSocket, size: int, count: int, early: bytes) -> None:
    """Send back ``count`` messages of ``size`` bytes (``early``: bytes already read)."""
    if early:
        sock.sendall(early + _recv_exact(sock, size - len(early)))
        count -= 1
    for _ in range(count):
        sock.sendall(_recv_exact(sock, size))


def node_receiver(port: int, node: bytes, total: int, q: Queue, echo: int) -> None:
    client, key = _device(port, node, total)
    q.put(key.address)
    msg_type, _flags, request = client.recv()  # the node's portopen request: accept it
    assert msg_type == 0x03, request
    client.send(0x03, {"id": request["id"]}, flags=1)
    if echo:
        # Frames are relayed verbatim and all have the same size: echo exactly like the socat
        # receiver does, so both relays are measured with the same client code.
        size = len(_frame_of(request["ref"], SMALL))
        _echo(client.sock, size, echo, bytes(client._buf))
        return
    q.put(_count(client.sock, total, len(client._buf)))


def node_sender(
    port: int, node: bytes, target: bytes, total: int, frame_size: int, q: Queue, rtt: int
) -> None:
    client, _key = _device(port, node, total)
    client.send(0x03, {"id": 3, "device": target, "port": 1, "flags": "rw"})
    ref = client.recv()[2]["ref"]
    if rtt:
        frame = _frame_of(ref, SMALL)
        sock = client.sock
        q.put(_round_trips(sock.sendall, lambda: _recv_exact(sock, len(frame)), frame, rtt))
        return
    _send_loop(client.send_raw, _frame_of(ref, BLOCK[:frame_size]), total)
    time.sleep(2)


def bench_node(identity_dir: str, total_mb: int, frame_kib: int, rtt: int) -> tuple[float, list[float]]:
    ctx = mp.get_context("fork")
    port_q: Queue = ctx.Queue()
    stop = ctx.Event()
    node_proc = ctx.Process(target=run_node, args=(identity_dir, port_q, stop))
    node_proc.start()
    port = port_q.get(timeout=30)
    node = load_node_identity(Path(identity_dir)).address
    try:
        return measure_relay((port, node), (port, node), total_mb, frame_kib, rtt)
    finally:
        stop.set()
        _reap(node_proc)


def measure_relay(
    receiver_node: tuple[int, bytes], sender_node: tuple[int, bytes], total_mb: int, frame_kib: int, rtt: int
) -> tuple[float, list[float]]:
    """Throughput (MB/s) and round trips from a sending device on ``sender_node`` to a receiving
    device on ``receiver_node`` (edge port, node address): the same node, or two nodes."""
    ctx = mp.get_context("fork")
    frame = frame_kib * 1024
    total = _total_bytes(total_mb, _frame_of(1, BLOCK[:frame]))
    results = []
    for mode in ("throughput", "rtt"):
        q: Queue = ctx.Queue()
        echo = rtt if mode == "rtt" else 0
        recv = ctx.Process(target=node_receiver, args=(*receiver_node, total, q, echo))
        recv.start()
        target = q.get(timeout=60)
        send = ctx.Process(target=node_sender, args=(*sender_node, target, total, frame, q, echo))
        send.start()
        results.append(_collect(q, mode))
        _reap(send, recv)
    return results[0], results[1]


# ---- through socat ----------------------------------------------------------------------------


def _p256_identity(directory: str) -> tuple[str, str]:
    """socat pins its ECDHE group to P-256 (and has no option to change it), which rules out a
    secp256k1 certificate; the baseline therefore runs ECDHE-ECDSA on P-256 with the same AEAD
    suite and TLS 1.2. Bulk data moves exactly like in the node's secp256k1 sessions (only the
    handshake differs, and it is not measured)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "socat-baseline")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = Path(directory) / "p256_cert.pem", Path(directory) / "p256_key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def _baseline_context(server: bool, cert: str = "", key: str = "") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(EDGE_CIPHERS)
    ctx.set_ecdh_curve("prime256v1")
    if server:
        ctx.load_cert_chain(cert, key)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    """Wait until something listens on ``port`` without connecting (socat serves one connection)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                return
        time.sleep(0.05)
    raise TimeoutError(f"socat did not listen on port {port} within {timeout} s")


def socat_receiver(listen: socket.socket, cert: str, key: str, total: int, q: Queue, echo: int) -> None:
    raw, _addr = listen.accept()
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = _baseline_context(True, cert, key).wrap_socket(raw, server_side=True)
    if echo:
        _echo(sock, len(_frame_of(1, SMALL)), echo, b"")
        return
    q.put(_count(sock, total))


def socat_sender(port: int, total: int, frame_size: int, q: Queue, rtt: int) -> None:
    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = _baseline_context(False).wrap_socket(raw)
    if rtt:
        frame = _frame_of(1, SMALL)
        q.put(_round_trips(sock.sendall, lambda: _recv_exact(sock, len(frame)), frame, rtt))
        return
    _send_loop(sock.sendall, _frame_of(1, BLOCK[:frame_size]), total)
    time.sleep(2)


def bench_socat(
    identity_dir: str, total_mb: int, frame_kib: int, rtt: int, buffer: int = 8192
) -> tuple[float, list[float]]:
    cert, key = _p256_identity(identity_dir)
    ctx = mp.get_context("fork")
    frame = frame_kib * 1024
    total = _total_bytes(total_mb, _frame_of(1, BLOCK[:frame]))
    results = []
    for mode in ("throughput", "rtt"):
        echo = rtt if mode == "rtt" else 0
        listen = socket.socket()
        listen.bind(("127.0.0.1", 0))
        listen.listen(4)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            front_port = probe.getsockname()[1]
        q: Queue = ctx.Queue()
        recv = ctx.Process(target=socat_receiver, args=(listen, cert, key, total, q, echo))
        recv.start()
        socat = subprocess.Popen(
            [
                "socat",
                "-b",
                str(buffer),
                f"OPENSSL-LISTEN:{front_port},bind=127.0.0.1,reuseaddr,cert={cert},key={key},verify=0,nodelay",
                f"OPENSSL-CONNECT:127.0.0.1:{listen.getsockname()[1]},verify=0,nodelay",
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(front_port)
            send = ctx.Process(target=socat_sender, args=(front_port, total, frame, q, echo))
            send.start()
            results.append(_collect(q, mode))
            _reap(send)
        finally:
            socat.kill()
            socat.wait()
            _reap(recv)
            listen.close()
    return results[0], results[1]


# ---- report -----------------------------------------------------------------------------------


def _list(values: list[float]) -> str:
    return "/".join(f"{v:.0f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=200, help="megabytes to move per run (default 200)")
    parser.add_argument("--frame-kib", type=int, default=256, help="port data per frame, KiB (default 256)")
    parser.add_argument("--rtt", type=int, default=2000, help="small-message round trips (default 2000)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating runs of each; best kept (default 3)"
    )
    parser.add_argument("--socat-buffer", type=int, default=65536, help="socat -b block size (default 65536)")
    args = parser.parse_args()
    if shutil.which("socat") is None:
        sys.exit("socat is not installed (apt-get install -y socat)")
    node_runs: list[tuple[float, list[float]]] = []
    socat_runs: list[tuple[float, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        load_node_identity(Path(tmp))
        for _ in range(args.rounds):
            node_runs.append(bench_node(tmp, args.mb, args.frame_kib, args.rtt))
            socat_runs.append(bench_socat(tmp, args.mb, args.frame_kib, args.rtt, args.socat_buffer))
    node_mbs = max(r[0] for r in node_runs)
    socat_mbs = max(r[0] for r in socat_runs)
    node_rtt = min((r[1] for r in node_runs), key=statistics.median)
    socat_rtt = min((r[1] for r in socat_runs), key=statistics.median)
    ratio = node_mbs / socat_mbs
    print(f"relay throughput, {args.mb} MB in {args.frame_kib} KiB frames, TLS 1.2 AES-256-GCM both sides")
    print(f"(best of {args.rounds} alternating runs; all runs: node {_list([r[0] for r in node_runs])} MB/s, "
          f"socat {_list([r[0] for r in socat_runs])} MB/s):")  # fmt: skip
    print(f"  chr-node: {node_mbs:8.1f} MB/s")
    print(f"  socat   : {socat_mbs:8.1f} MB/s  (-b {args.socat_buffer})")
    print(f"  ratio   : {ratio:8.2f}  (target >= 0.80: {'OK' if ratio >= 0.8 else 'MISSED'})")
    n_med, s_med = statistics.median(node_rtt) * 1e6, statistics.median(socat_rtt) * 1e6
    rtt_ratio = n_med / s_med
    print(f"small-message round trip (64 B of data, median of {args.rtt}, best run):")
    print(f"  chr-node: {n_med:8.1f} us   (p90 {statistics.quantiles(node_rtt, n=10)[-1] * 1e6:.1f} us)")
    print(f"  socat   : {s_med:8.1f} us   (p90 {statistics.quantiles(socat_rtt, n=10)[-1] * 1e6:.1f} us)")
    print(f"  ratio   : {rtt_ratio:8.2f}  (target <= 1.50: {'OK' if rtt_ratio <= 1.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
