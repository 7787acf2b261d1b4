"""Relay benchmark (SPEC 13): device -> node -> device over TLS vs socat relaying TLS -> TLS.

    .venv/bin/python bench/bench_relay.py [--mb 200] [--frame-kib 256] [--rtt 2000]

Both runs move the same bytes between the same two client programs (blocking TLS sockets, TLS 1.2
ECDHE-ECDSA on secp256k1, in processes of their own): through an EdgeServer process (port frames
relayed zero-copy) and through `socat OPENSSL-LISTEN ... OPENSSL-CONNECT` with the node's
certificate. Prints MB/s of both and the ratio against the 0.8 target, then the median round trip
of a small message through each relay against the 1.5x target.
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the node ---------------------------------------------------------------------------------


def run_node(data_dir: str, port_queue: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        # Frames per second are limited per device by default (5000/s); the bench uses big frames.
        node = await start_node(Path(data_dir), edge2_ports=(0,), connection_timeout=30.0)
        port_queue.put(node.port)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await node.stop()

    asyncio.run(main())


def _device(port: int, node: bytes, total: int) -> tuple[RawFrameClient, PrivateKey]:
    key = PrivateKey.generate()
    client = RawFrameClient("127.0.0.1", port, timeout=60)
    answer = client.hello(key, node)
    # One ticket covering the whole run, so the node never has to ask during the measurement.
    ticket = Ticket(answer["chain_id"], answer["epoch"], node, answer["fleet"], 1, 4 * total + (1 << 30))
    client.send(0x02, {"id": 2, "ticket": ticket.sign(key).to_wire()})
    _t, _f, reply = client.recv()
    assert reply.get("status") == "thanks", reply
    return client, key


def node_receiver(port: int, node: bytes, total: int, q: mp.Queue, echo: int) -> None:  # type: ignore[type-arg]
    client, key = _device(port, node, total)
    q.put(key.address)
    msg_type, _flags, request = client.recv()  # the node's portopen request
    assert msg_type == 0x03, request
    client.send(0x03, {"id": request["id"]}, flags=1)
    sock = client.sock
    if echo:
        for _ in range(echo):
            client.send_raw(_read_frame(client))
        return
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got = len(client._buf)
    t0 = time.perf_counter()
    while got < total:
        n = sock.recv_into(view)
        if not n:
            break
        got += n
    q.put((got, time.perf_counter() - t0))


def _read_frame(client: RawFrameClient) -> bytes:
    header = client._read(8)
    length = int.from_bytes(header[4:8], "big")
    return header + client._read(length)


def node_sender(port: int, node: bytes, target: bytes, total: int, frame_size: int, q: mp.Queue, rtt: int) -> None:  # type: ignore[type-arg]  # noqa: E501
    client, _key = _device(port, node, total)
    client.send(0x03, {"id": 3, "device": target, "port": 1, "flags": "rw"})
    _t, _f, answer = client.recv()
    ref = answer["ref"]
    if rtt:
        header, data = encode_portsend_parts(ref, b"x" * 64)
        frame = header + data
        times = []
        for _ in range(rtt):
            t0 = time.perf_counter()
            client.send_raw(frame)
            _read_frame(client)
            times.append(time.perf_counter() - t0)
        q.put(times)
        return
    header, data = encode_portsend_parts(ref, BLOCK[:frame_size])
    frame = header + data
    sent = 0
    while sent < total:
        client.send_raw(frame)
        sent += len(frame)
    q.put(sent)
    time.sleep(2)


def bench_node(identity_dir: str, total_mb: int, frame_kib: int, rtt: int) -> tuple[float, list[float]]:
    ctx = mp.get_context("fork")
    port_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    stop = ctx.Event()
    node_proc = ctx.Process(target=run_node, args=(identity_dir, port_q, stop))
    node_proc.start()
    port = port_q.get(timeout=30)
    node = load_node_identity(Path(identity_dir)).address
    frame = frame_kib * 1024
    frame_len = len(b"".join(encode_portsend_parts(1, BLOCK[:frame])))
    total = (total_mb * 1_000_000 // frame_len + 1) * frame_len
    try:
        results = []
        for mode in ("throughput", "rtt"):
            q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
            echo = rtt if mode == "rtt" else 0
            recv = ctx.Process(target=node_receiver, args=(port, node, total, q, echo))
            recv.start()
            target = q.get(timeout=30)
            send = ctx.Process(target=node_sender, args=(port, node, target, total, frame, q, echo))
            send.start()
            if mode == "throughput":
                first = q.get(timeout=600)
                second = q.get(timeout=600)
                got, seconds = first if isinstance(first, tuple) else second
                results.append(got / seconds / 1e6)
            else:
                results.append(q.get(timeout=600))
            send.join(10)
            recv.join(10)
            for proc in (send, recv):
                if proc.is_alive():
                    proc.kill()
        return results[0], results[1]
    finally:
        stop.set()
        node_proc.join(10)
        if node_proc.is_alive():
            node_proc.kill()


# ---- socat ------------------------------------------------------------------------------------


def _p256_identity(directory: str) -> tuple[str, str]:
    """socat pins its ECDHE group to P-256 (no option to change it), which rules out a secp256k1
    certificate; the baseline therefore runs ECDHE-ECDSA on P-256 with the same AEAD suite and TLS
    1.2, which moves bulk data exactly like the node's secp256k1 sessions (only the handshake
    differs, and it is not measured)."""
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
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
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


def socat_receiver(listen: socket.socket, key_pem: str, cert: str, total: int, q: mp.Queue, echo: int) -> None:  # type: ignore[type-arg]  # noqa: E501
    ctx = _baseline_context(True, cert, key_pem)
    raw, _addr = listen.accept()
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = ctx.wrap_socket(raw, server_side=True)
    if echo:
        for _ in range(echo):
            sock.sendall(_recv_exact(sock, echo_size()))
        return
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got = 0
    t0 = time.perf_counter()
    while got < total:
        n = sock.recv_into(view)
        if not n:
            break
        got += n
    q.put((got, time.perf_counter() - t0))


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    """Wait until something listens on ``port`` without connecting (socat serves one connection)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in psutil.net_connections("tcp")):
            return
        time.sleep(0.05)
    raise TimeoutError(f"socat did not listen on port {port} within {timeout} s")


def echo_size() -> int:
    header, data = encode_portsend_parts(1, b"x" * 64)
    return len(header) + len(data)


def _recv_exact(sock: ssl.SSLSocket, size: int) -> bytes:
    parts = bytearray()
    while len(parts) < size:
        chunk = sock.recv(size - len(parts))
        if not chunk:
            raise ConnectionError("closed")
        parts += chunk
    return bytes(parts)


def socat_sender(port: int, total: int, frame_size: int, q: mp.Queue, rtt: int) -> None:  # type: ignore[type-arg]
    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = _baseline_context(False).wrap_socket(raw)
    if rtt:
        header, data = encode_portsend_parts(1, b"x" * 64)
        frame = header + data
        times = []
        for _ in range(rtt):
            t0 = time.perf_counter()
            sock.sendall(frame)
            _recv_exact(sock, len(frame))
            times.append(time.perf_counter() - t0)
        q.put(times)
        return
    header, data = encode_portsend_parts(1, BLOCK[:frame_size])
    frame = header + data
    sent = 0
    while sent < total:
        sock.sendall(frame)
        sent += len(frame)
    q.put(sent)
    time.sleep(2)


def bench_socat(identity_dir: str, total_mb: int, frame_kib: int, rtt: int) -> tuple[float, list[float]]:
    cert, key = _p256_identity(identity_dir)
    ctx = mp.get_context("fork")
    frame = frame_kib * 1024
    frame_len = len(b"".join(encode_portsend_parts(1, BLOCK[:frame])))
    total = (total_mb * 1_000_000 // frame_len + 1) * frame_len
    results = []
    for mode in ("throughput", "rtt"):
        echo = rtt if mode == "rtt" else 0
        listen = socket.socket()
        listen.bind(("127.0.0.1", 0))
        listen.listen(4)
        back_port = listen.getsockname()[1]
        front_port = _free_port()
        q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        recv = ctx.Process(
            target=socat_receiver, args=(listen, key, cert, total, q, echo)
        )
        recv.start()
        socat = subprocess.Popen(
            [
                "socat",
                f"OPENSSL-LISTEN:{front_port},bind=127.0.0.1,reuseaddr,cert={cert},key={key},verify=0,nodelay",
                f"OPENSSL-CONNECT:127.0.0.1:{back_port},verify=0,nodelay",
            ]
        )
        try:
            _wait_listening(front_port)
            send = ctx.Process(target=socat_sender, args=(front_port, total, frame, q, echo))
            send.start()
            if mode == "throughput":
                first = q.get(timeout=600)
                second = q.get(timeout=600)
                got, seconds = first if isinstance(first, tuple) else second
                results.append(got / seconds / 1e6)
            else:
                results.append(q.get(timeout=600))
            send.join(10)
        finally:
            socat.kill()
            socat.wait()
            recv.join(5)
            if recv.is_alive():
                recv.kill()
            listen.close()
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="megabytes to move per run (default 200)")
    parser.add_argument("--frame-kib", type=int, default=256, help="port data per frame, KiB (default 256)")
    parser.add_argument("--rtt", type=int, default=2000, help="small-message round trips (default 2000)")
    args = parser.parse_args()
    if shutil.which("socat") is None:
        sys.exit("socat is not installed (apt-get install -y socat)")
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        load_node_identity(Path(tmp))
        t0 = time.time()
        node_mbs, node_rtt = bench_node(tmp, args.mb, args.frame_kib, args.rtt)
        t1 = time.time()
        socat_mbs, socat_rtt = bench_socat(tmp, args.mb, args.frame_kib, args.rtt)
        print(f"(node runs {t1 - t0:.1f} s, socat runs {time.time() - t1:.1f} s)")
    ratio = node_mbs / socat_mbs
    print(f"relay throughput, {args.mb} MB in {args.frame_kib} KiB frames, TLS 1.2 both sides:")
    print(f"  chr-node: {node_mbs:8.1f} MB/s")
    print(f"  socat   : {socat_mbs:8.1f} MB/s")
    print(f"  ratio   : {ratio:8.2f}  (target >= 0.80: {'OK' if ratio >= 0.8 else 'MISSED'})")
    n_med, s_med = statistics.median(node_rtt) * 1e6, statistics.median(socat_rtt) * 1e6
    rtt_ratio = n_med / s_med
    print(f"small-message round trip (64 B, median of {args.rtt}):")
    print(f"  chr-node: {n_med:8.1f} us   (p90 {statistics.quantiles(node_rtt, n=10)[-1] * 1e6:.1f} us)")
    print(f"  socat   : {s_med:8.1f} us   (p90 {statistics.quantiles(socat_rtt, n=10)[-1] * 1e6:.1f} us)")
    print(f"  ratio   : {rtt_ratio:8.2f}  (target <= 1.50: {'OK' if rtt_ratio <= 1.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
