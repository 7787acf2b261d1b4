"""Cross-node relay (SPEC 13): device -> node -> node -> device against the single-node relay.

    .venv/bin/python bench/bench_relay_net.py [--mb 50] [--frame-kib 256] [--rtt 500] [--rounds 10]

Two nodes in processes of their own (an EdgeServer each, joined over the peer port: TLS 1.2 on
secp256k1, the DHT, the relay); the receiving device connects to node B, whose ticket hook
publishes its location; the sending device connects to node A and opens a port to it by address
(A finds the location in the DHT and relays over its link to B). The client programs are those
of bench_relay.py. Targets: throughput >= 0.8x, round trip <= 1.5x the single-node relay's.

Four relays are set up side by side, each with its two devices connected and the port open:

- the single-node relay (the baseline of the targets),
- the two-node relay,
- socat relaying TLS -> TLS, one hop and a chain of two hops: the same two topologies relayed by
  a C program, i.e. what one more TLS hop costs on this machine whatever relays it.

Each round moves ``--mb`` through each relay in turn, then ``--rtt`` small round trips through
each (the order rotates from round to round), so the figures of one round are taken within a
second or two of each other and a change of load on the machine hits them alike. Prints every
round, then the median and range over the rounds of each figure and of the per-round ratios.
Round trips are given as each batch's median and its 10th percentile (the floor: the path's own
cost, least disturbed by the other processes of a shared machine). Last, the CPU the relay's own
processes used per GB and per round trip, which that load disturbs least.

Reading the figures: the two-node relay does twice the work of the single node (each byte is
decrypted and encrypted once per node), so where the relays and their devices share fewer cores
than the four processes of the chain (a 2-core machine), throughput is bounded by the CPU of the
whole chain, and each round trip pays one more TLS hop (two more process wake-ups). socat's 2-hop
/ 1-hop ratios show what that costs on the machine with no relay code at all; the relay code's
own share is what the node's figures add to socat's (CPU per GB and per round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_relay import _p256_identity, _reap, _wait_listening, run_node
from relay_devices import Endpoint, device_main

from chrnode.dht.ids import Contact
from chrnode.edge.hooks import DefaultHooks
from chrnode.identity import load_node_identity
from chrnode.objects.kinds import make_location
from chrnode.testing.netnodes import NetNode, start_net_node
from chrnode.ticket import Ticket

Queue = Any


class PublishingHooks(DefaultHooks):
    """DefaultHooks whose accepted tickets publish the device's location (as the node does)."""

    node: NetNode | None = None
    published: set[bytes] = set()

    async def store_ticket(self, ticket: Ticket, device: bytes) -> None:
        await super().store_ticket(ticket, device)
        node = self.node
        if node is not None and device not in self.published:
            self.published.add(device)
            now = time.time()
            obj = make_location(node.key, ticket, seq=int(now * 1000), expires=int(now) + 600)
            await node.dht.publish(obj)


def run_net_node(data_dir: str, index: int, seed: tuple[bytes, int] | None, port_q: Queue, stop: Any) -> None:
    async def serve() -> None:
        hooks = PublishingHooks(epoch=1000)
        node = await start_net_node(Path(data_dir), index, hooks=hooks, connection_timeout=30.0)
        hooks.node = node
        if seed is not None:
            result = await node.dht.join([Contact(seed[0], "127.0.0.1", seed[1])])
            assert result.ok, "node B could not join node A"
        port_q.put((node.edge.port, node.key.address, node.record.data["peer_port"]))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await node.stop()

    asyncio.run(serve())


class Relay:
    """One relay with its two devices connected: orders go to them over their pipes."""

    def __init__(self, name: str, procs: list[Any], sender: Connection, receiver: Connection) -> None:
        self.name = name
        self.procs = procs  # relay processes (nodes, socat), then the two devices
        self.relay_procs = procs[:-2]
        self.sender = sender
        self.receiver = receiver
        self.frame = sender.recv()
        if receiver.recv() != self.frame:
            raise AssertionError(f"{name}: the devices disagree on the frame size")

    def cpu(self) -> float:
        """CPU seconds used so far by the relay's processes (not its devices), all threads: from
        /proc/PID/task/*/schedstat (nanoseconds; psutil's clock ticks are too coarse for a batch)."""
        total = 0
        for proc in self.relay_procs:
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                try:
                    total += int((task / "schedstat").read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    pass  # a thread that just ended
        return total / 1e9

    def throughput(self, total_mb: int) -> tuple[float, float]:
        """(MB/s, relay CPU seconds per GB) of one batch."""
        total = (total_mb * 1_000_000 // self.frame + 1) * self.frame  # whole frames
        before = self.cpu()
        self.receiver.send(("count", total))
        self.sender.send(("send", total))
        got, seconds = self.receiver.recv()
        self.sender.recv()
        return float(got / seconds / 1e6), (self.cpu() - before) / (got / 1e9)

    def round_trips(self, count: int) -> tuple[list[float], float]:
        """(seconds of each round trip, relay CPU seconds per round trip) of one batch."""
        before = self.cpu()
        self.receiver.send(("echo", count))
        self.sender.send(("rtt", count))
        times: list[float] = self.sender.recv()
        self.receiver.recv()
        return times, (self.cpu() - before) / count

    def close(self) -> None:
        for pipe in (self.sender, self.receiver):
            try:
                pipe.send(("stop", 0))
            except OSError:
                pass


def _devices(
    name: str, procs: list[Any], sender_at: Endpoint, receiver_at: Endpoint, frame: int, ticket: int
) -> Relay:
    ctx = mp.get_context("fork")
    pipes = []
    for role, endpoint in (("receiver", receiver_at), ("sender", sender_at)):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=device_main, args=(role, endpoint, theirs, frame, ticket), daemon=True)
        proc.start()
        procs.append(proc)
        pipes.append(mine)
        if role == "receiver" and endpoint[0] == "node":
            address = mine.recv()  # the receiving device's address, for the sender's portopen
    receiver, sender = pipes
    if sender_at[0] == "node":
        sender.send(address)
    return Relay(name, procs, sender, receiver)


def start_single(tmp: str, stop: Any, frame: int, ticket: int) -> Relay:
    ctx = mp.get_context("fork")
    port_q: Queue = ctx.Queue()
    node_proc = ctx.Process(target=run_node, args=(f"{tmp}/single", port_q, stop))
    node_proc.start()
    port = port_q.get(timeout=60)
    node = load_node_identity(Path(f"{tmp}/single")).address
    at = ("node", port, node)
    return _devices("single node", [node_proc], at, at, frame, ticket)


def start_pair(tmp: str, stop: Any, frame: int, ticket: int) -> Relay:
    ctx = mp.get_context("fork")
    port_q: Queue = ctx.Queue()
    a_proc = ctx.Process(target=run_net_node, args=(f"{tmp}/a", 0, None, port_q, stop))
    a_proc.start()
    a_port, a_addr, a_peer = port_q.get(timeout=60)
    b_proc = ctx.Process(target=run_net_node, args=(f"{tmp}/b", 1, (a_addr, a_peer), port_q, stop))
    b_proc.start()
    b_port, b_addr, _ = port_q.get(timeout=60)
    return _devices(
        "two nodes", [a_proc, b_proc], ("node", a_port, a_addr), ("node", b_port, b_addr), frame, ticket
    )


def start_socat(tmp: str, hops: int, buffer: int, frame: int) -> Relay:
    """``hops`` socat relays in a chain, TLS -> TLS each (P-256: see bench_relay._p256_identity)."""
    cert, key = _p256_identity(tmp)
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    listen.listen(4)
    ports = []
    for _ in range(hops):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    nexts = [*ports[1:], listen.getsockname()[1]]  # relay i listens on ports[i], dials the next
    relays = [
        subprocess.Popen(
            [
                "socat",
                "-b",
                str(buffer),
                f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,cert={cert},key={key},verify=0,nodelay",
                f"OPENSSL-CONNECT:127.0.0.1:{nxt},verify=0,nodelay",
            ],
            stderr=subprocess.DEVNULL,
        )
        for port, nxt in zip(ports, nexts, strict=True)
    ]
    try:
        for port in ports:
            _wait_listening(port)
    except BaseException:
        for proc in relays:
            proc.kill()
        raise
    name = f"socat {hops} hop{'s' if hops > 1 else ''}"
    chain = _devices(
        name, list(relays), ("tls-client", ports[0]), ("tls-server", listen, cert, key), frame, 0
    )
    listen.close()
    return chain


def _stop(relays: list[Relay], stop: Any) -> None:
    for relay in relays:
        relay.close()
    stop.set()
    for relay in relays:
        for proc in relay.procs:
            if isinstance(proc, subprocess.Popen):
                proc.kill()
                proc.wait()
        _reap(*[p for p in relay.procs if not isinstance(p, subprocess.Popen)])


def _spread(values: list[float], unit: str, scale: float = 1.0) -> str:
    shown = [v * scale for v in values]
    return f"median {statistics.median(shown):7.1f} {unit} (range {min(shown):.1f}-{max(shown):.1f})"


def _ratio(values: list[float], target: str = "", ok: bool | None = None) -> str:
    text = f"median {statistics.median(values):.2f} (range {min(values):.2f}-{max(values):.2f})"
    return text if ok is None else f"{text}; target {target}: {'OK' if ok else 'MISSED'}"


def _floor(rtts: list[float]) -> float:
    return statistics.quantiles(rtts, n=10)[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=50, help="megabytes per relay and round (default 50)")
    parser.add_argument("--frame-kib", type=int, default=256, help="port data per frame, KiB (default 256)")
    parser.add_argument("--rtt", type=int, default=500, help="round trips per relay and round (default 500)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds (default 10)")
    parser.add_argument("--socat-buffer", type=int, default=65536, help="socat -b block size (default 65536)")
    parser.add_argument("--no-socat", action="store_true", help="leave out the socat relays")
    args = parser.parse_args()
    if not args.no_socat and shutil.which("socat") is None:
        sys.exit("socat is not installed (apt-get install -y socat), or pass --no-socat")
    frame = args.frame_kib * 1024
    ticket = args.rounds * (args.mb * 1_000_000 + frame) + (args.rtt * 1000)
    stop = mp.get_context("fork").Event()
    relays: list[Relay] = []
    with tempfile.TemporaryDirectory(prefix="bench-relay-net-") as tmp:
        try:
            load_node_identity(Path(tmp) / "single")
            relays.append(start_single(tmp, stop, frame, ticket))
            relays.append(start_pair(tmp, stop, frame, ticket))
            if not args.no_socat:
                relays.append(start_socat(tmp, 1, args.socat_buffer, frame))
                relays.append(start_socat(tmp, 2, args.socat_buffer, frame))
            tput: dict[str, list[float]] = {r.name: [] for r in relays}
            rtts: dict[str, list[list[float]]] = {r.name: [] for r in relays}
            cpu: dict[str, tuple[list[float], list[float]]] = {r.name: ([], []) for r in relays}
            for i in range(args.rounds):
                order = relays[i % len(relays) :] + relays[: i % len(relays)]
                for relay in order:
                    mbs, per_gb = relay.throughput(args.mb)
                    tput[relay.name].append(mbs)
                    cpu[relay.name][0].append(per_gb)
                for relay in order:
                    times, per_rtt = relay.round_trips(args.rtt)
                    rtts[relay.name].append(times)
                    cpu[relay.name][1].append(per_rtt)
                shown = ", ".join(
                    f"{r.name} {tput[r.name][-1]:.0f} MB/s {statistics.median(rtts[r.name][-1]) * 1e6:.0f} us"
                    for r in relays
                )
                print(f"  round {i + 1}: {shown}", flush=True)
        finally:
            _stop(relays, stop)
    _report(args, tput, rtts)
    _report_cpu(cpu)


def _report_cpu(cpu: dict[str, tuple[list[float], list[float]]]) -> None:
    """Where the time goes: CPU of the relay processes, which load on the machine disturbs less."""
    print("CPU of the relay's own processes (nodes or socat; all their threads, not the devices):")
    for name, (per_gb, per_rtt) in cpu.items():
        print(f"  {name:13s}: {_spread(per_gb, 's per GB')}; {_spread(per_rtt, 'us per round trip', 1e6)}")
    pairs = [("two nodes", "single node")]
    if "socat 2 hops" in cpu:
        pairs += [("single node", "socat 1 hop"), ("socat 2 hops", "socat 1 hop")]
    for top, bottom in pairs:
        bulk = _ratio(ratios(cpu[top][0], cpu[bottom][0]))
        small = _ratio(ratios(cpu[top][1], cpu[bottom][1]))
        print(f"  {top} / {bottom}: per GB {bulk}; per round trip {small}")


def ratios(top: list[float], bottom: list[float]) -> list[float]:
    return [t / b for t, b in zip(top, bottom, strict=True)]


def _report(
    args: argparse.Namespace, tput: dict[str, list[float]], rtts: dict[str, list[list[float]]]
) -> None:
    socat = "socat 2 hops" in tput
    medians = {name: [statistics.median(batch) for batch in runs] for name, runs in rtts.items()}
    floors = {name: [_floor(batch) for batch in runs] for name, runs in rtts.items()}
    print(
        f"throughput, {args.mb} MB per relay and round in {args.frame_kib} KiB frames, {args.rounds} rounds:"
    )
    for name, values in tput.items():
        print(f"  {name:13s}: {_spread(values, 'MB/s')}")
    two = ratios(tput["two nodes"], tput["single node"])
    print(f"  two nodes / single node : {_ratio(two, '>= 0.80', statistics.median(two) >= 0.8)}")
    if socat:
        print(f"  socat 2 hops / 1 hop    : {_ratio(ratios(tput['socat 2 hops'], tput['socat 1 hop']))}")
        print(f"  single node / socat     : {_ratio(ratios(tput['single node'], tput['socat 1 hop']))}")
    print(f"small-message round trip (64 B, {args.rtt} per relay and round; the batch's median, its p10):")
    for name in rtts:
        print(f"  {name:13s}: {_spread(medians[name], 'us', 1e6)}; p10 {_spread(floors[name], 'us', 1e6)}")
    rtt = ratios(medians["two nodes"], medians["single node"])
    print(f"  two nodes / single node : {_ratio(rtt, '<= 1.50', statistics.median(rtt) <= 1.5)}")
    print(f"    at the p10 floor      : {_ratio(ratios(floors['two nodes'], floors['single node']))}")
    if socat:
        print(
            f"  socat 2 hops / 1 hop    : {_ratio(ratios(medians['socat 2 hops'], medians['socat 1 hop']))}"
        )
        print(f"    at the p10 floor      : {_ratio(ratios(floors['socat 2 hops'], floors['socat 1 hop']))}")


if __name__ == "__main__":
    main()
