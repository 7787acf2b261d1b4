"""An idle node's memory, by actor and in all (issue 9: within 200 MiB PSS, a trivial actor within
5 MiB private).

    .venv/bin/python bench/bench_memory.py [--runs 3] [--idle 5] [--baseline /work/main]

Starts a real `chr-node start` (no devices, no chain), waits `--idle` seconds, and reads every
process of the node with psutil `memory_full_info()`: PSS (each shared page divided among the
processes that map it, so the sum is the node's real footprint), USS (private: what the process
alone holds) and RSS. Repeated `--runs` times; prints the median and range of the totals, and a
table by actor for the last run. In the same run it measures the baseline it compares against:
the same node from another checkout (`--baseline`, e.g. the main branch before this work) and
a bare `python -c pass`-like interpreter, and a plain Thespian actor forked the way the node's
are (the floor any actor process starts from, before chr-node adds anything).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.testing.node import NodeProcess

MIB = 1024 * 1024
TARGET_TOTAL_PSS = 200
TARGET_TRIVIAL_USS = 5
TRIVIAL = ("Globals", "Stats")


def title(process: psutil.Process) -> str:
    parts = [p for p in process.cmdline() if p]
    text = " ".join(parts)
    return text.removeprefix("chr-node: ") if text.startswith("chr-node: ") else "daemon"


def node_processes(node: NodeProcess) -> list[psutil.Process]:
    daemon = psutil.Process(node.proc.pid)  # type: ignore[union-attr]
    found = {daemon.pid: daemon}
    for process in daemon.children(recursive=True):
        found[process.pid] = process
    # Without the subreaper (older checkouts) the admin is init's child: find it from the actors.
    for actor in node.rpc("chr_node_info")["tree"]:
        process = psutil.Process(int(actor["pid"]))
        while process.ppid() not in (1, daemon.pid):
            process = process.parent()
        for p in [process, *process.children(recursive=True)]:
            found[p.pid] = p
    return [p for p in found.values() if p.status() != psutil.STATUS_ZOMBIE]


def measure(node: NodeProcess, names_by_pid: dict[int, str]) -> dict[str, tuple[float, float, float]]:
    """name -> (PSS, USS, RSS) in MiB."""
    out: dict[str, tuple[float, float, float]] = {}
    for process in node_processes(node):
        info = process.memory_full_info()
        name = names_by_pid.get(process.pid) or title(process)
        while name in out:
            name += "'"
        out[name] = (info.pss / MIB, info.uss / MIB, info.rss / MIB)
    return out


def one_run(checkout: str, idle: float) -> dict[str, tuple[float, float, float]]:
    """One node of `checkout` (its directory is the node's cwd and PYTHONPATH: `python -m`
    puts the cwd first on sys.path)."""
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeProcess(Path(tmp) / "data", PYTHONPATH=checkout)
        here = os.getcwd()
        os.chdir(checkout)
        try:
            node.start()
        finally:
            os.chdir(here)
        try:
            time.sleep(idle)
            names = {int(a["pid"]): a["name"] for a in node.rpc("chr_node_info")["tree"]}
            return measure(node, names)
        finally:
            node.stop()


# A plain Thespian actor forked the way the node's are (multiprocTCPBase, fork, the node's modules
# imported first), after 50 messages: what any actor process costs before chr-node adds anything.
BARE_ACTOR = """
import json, os, sys, time
from datetime import timedelta
import psutil
from thespian.actors import Actor, ActorSystem
import chrnode.daemon
from actors.tree import node_tree
from chrnode.actorsys import free_port
chrnode.daemon.preload_actor_modules(node_tree())
class Bare(Actor):
    def receiveMessage(self, message, sender):
        self.send(sender, os.getpid())
if __name__ == "__main__":
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": free_port(), "Process Startup Method": "fork"})
    try:
        actor = asys.createActor(Bare)
        pid = [asys.ask(actor, "pid", timedelta(seconds=10)) for _ in range(50)][-1]
        time.sleep(2)
        info = psutil.Process(pid).memory_full_info()
        print(json.dumps([info.pss, info.uss, info.rss]))
    finally:
        asys.shutdown()
"""


def bare_actor(checkout: str) -> tuple[float, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", BARE_ACTOR],
        capture_output=True,
        text=True,
        check=True,
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": checkout},
        timeout=120,
    ).stdout
    pss, uss, rss = json.loads(out.strip().splitlines()[-1])
    return pss / MIB, uss / MIB, rss / MIB


def bare_interpreter() -> tuple[float, float, float]:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as proc:
        time.sleep(1.0)
        info = psutil.Process(proc.pid).memory_full_info()
        proc.kill()
    return info.pss / MIB, info.uss / MIB, info.rss / MIB


def summary(label: str, runs: list[dict[str, tuple[float, float, float]]]) -> None:
    def line(what: str, values: list[float]) -> str:
        return f"median {statistics.median(values):7.1f}  range {min(values):6.1f}-{max(values):6.1f}"

    pss = [sum(v[0] for v in r.values()) for r in runs]
    rss = [sum(v[2] for v in r.values()) for r in runs]
    count = [len(r) for r in runs]
    print(f"\n== {label}: {len(runs)} runs, {statistics.median(count):.0f} processes")
    print(f"  total PSS MiB  {line('pss', pss)}   (target <= {TARGET_TOTAL_PSS})")
    print(f"  total RSS MiB  {line('rss', rss)}")
    for name in TRIVIAL:
        uss = [r[name][1] for r in runs if name in r]
        if uss:
            print(f"  {name:<8} USS  {line('uss', uss)}   (target <= {TARGET_TRIVIAL_USS})")


def table(run: dict[str, tuple[float, float, float]]) -> None:
    print(f"\n  {'process':<28} {'PSS':>7} {'USS':>7} {'RSS':>7}  (MiB, last run)")
    for name, (pss, uss, rss) in sorted(run.items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:<28} {pss:7.1f} {uss:7.1f} {rss:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before measuring")
    parser.add_argument("--baseline", default="", help="another checkout to measure the same way")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parent.parent)
    load_before = os.getloadavg()
    runs, base = [], []
    for _ in range(args.runs):  # interleaved, so both see the same load on the machine
        runs.append(one_run(here, args.idle))
        if args.baseline:
            base.append(one_run(args.baseline, args.idle))
    floor = bare_interpreter()
    actors = [bare_actor(here) for _ in range(args.runs)]
    summary(f"this checkout ({here})", runs)
    table(runs[-1])
    if base:
        summary(f"baseline ({args.baseline})", base)
        table(base[-1])
    print(f"\n== bare interpreter (floor): PSS {floor[0]:.1f}  USS {floor[1]:.1f}  RSS {floor[2]:.1f} MiB")
    uss = [a[1] for a in actors]
    load_after = os.getloadavg()
    print(
        "== load average (1, 5, 15 min): before "
        + " ".join(f"{v:.2f}" for v in load_before)
        + ", after "
        + " ".join(f"{v:.2f}" for v in load_after)
    )
    print(
        f"== bare Thespian actor (floor of any actor process, {len(actors)} runs): USS median "
        f"{statistics.median(uss):.1f}  range {min(uss):.1f}-{max(uss):.1f} MiB"
    )


if __name__ == "__main__":
    main()
