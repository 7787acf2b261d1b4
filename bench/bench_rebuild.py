"""Time from the death of the root supervisor / Thespian's admin to a whole tree again (issue 9).

    .venv/bin/python bench/bench_rebuild.py [--kills 5]

On one real `chr-node start` (no chain, no devices), SIGKILL the root supervisor `--kills` times,
then Thespian's admin as many times, and time each from the kill to the moment `chr_node_info`
answers with every actor running in new processes. Prints median and range of each, against the
baseline measured the same way in the same run: the node's own cold start, from `chr-node start`
to the whole tree (`--kills` starts). A rebuild is a shutdown of what is left plus a cold start
of the actor system, so it should cost about one start more the detection (polled every 0.25 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.testing.node import NodeProcess


def tree(node: NodeProcess) -> dict[str, int] | None:
    try:
        actors: list[dict[str, Any]] = node.rpc("chr_node_info")["tree"]
    except (OSError, ValueError, RuntimeError, KeyError):
        return None
    if not actors or any(a["state"] != "running" for a in actors):
        return None
    return {a["name"]: int(a["pid"]) for a in actors}


def whole_again(node: NodeProcess, old: dict[str, int], timeout: float = 120) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = tree(node)
        if now is not None and set(now) == set(old) and not set(now.values()) & set(old.values()):
            return now
        time.sleep(0.02)
    raise RuntimeError(f"no whole tree within {timeout} s:\n{node.log()}")


def footing(pids: dict[str, int]) -> dict[str, int]:
    root = psutil.Process(pids["Globals"]).ppid()
    return {"root": root, "admin": psutil.Process(root).ppid()}


def cold_start(tmp: Path, n: int) -> float:
    node = NodeProcess(tmp / f"cold{n}")
    started = time.monotonic()
    node.start()
    took = time.monotonic() - started
    node.stop()
    return took


def show(label: str, values: list[float]) -> None:
    print(
        f"  {label:<34} median {statistics.median(values) * 1000:7.0f} ms   "
        f"range {min(values) * 1000:6.0f}-{max(values) * 1000:6.0f} ms   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"root": [], "admin": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        node = NodeProcess(tmp / "data", CHR_MAX_REBUILDS="1000")
        node.start()
        try:
            for role in ("root", "admin"):
                for _ in range(args.kills):
                    pids = tree(node) or {}
                    killed = time.monotonic()
                    os.kill(footing(pids)[role], signal.SIGKILL)
                    whole_again(node, pids)
                    times[role].append(time.monotonic() - killed)
        finally:
            node.stop()
        cold = [cold_start(tmp, n) for n in range(args.kills)]
    print("\n== time to a whole tree again (kill -> chr_node_info all running, new pids)")
    show("SIGKILL of the root supervisor", times["root"])
    show("SIGKILL of Thespian's admin", times["admin"])
    show("baseline: cold `chr-node start`", cold)


if __name__ == "__main__":
    main()
