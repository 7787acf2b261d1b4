"""Chaos on a running node, as an operator would do it (issue 9, "How it will be checked").

    with Chaos.on(NodeProcess(tmp / "data").start()) as chaos:
        chaos.kill("Stats")                    # SIGKILL, then wait: whole again, or gone non-zero
        chaos.freeze("Cron")                   # SIGSTOP: the heartbeat must report and replace it
    print(table(chaos.rounds))

A process is named as `ps` shows it: an actor by its name (`chr-node: Stats`), the tree's footing
as `ChronaraNode.Supervisor`, `Thespian admin`, `Thespian logger` (chrnode.procwatch). While it
kills, a device pair relays a checked byte stream through the node and the RPC is polled
(chrnode.testing.chaos_probes). After each signal the round waits until either

* the node is **whole**: every actor `running` in `chr_node_info`, each in a live process of its
  own name (ps and the RPC agree, one process a name, none stopped), the footing there, `/health`
  not down in its process layer, and the edge port accepting a new device; or
* the daemon **gave up**: it exited with a non-zero status and logged an ERROR line saying why.

Anything else within `whole_timeout` (still up but not whole, or an exit with status 0) is a
half-alive node: the round's outcome says so and `Round.ok` is False. `tools/chaos` runs every
process through both signals and prints `table(rounds)`.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from chrnode.crypto import parse_address
from chrnode.procwatch import ADMIN, LOGGER, ROOT
from chrnode.testing.chaos_probes import Relay, RpcPoller, get, rpc, title
from chrnode.testing.node import NodeProcess

__all__ = ["FOOTING", "SPARED", "Chaos", "Round", "hang_logged", "kill_daemon", "table"]

ROOT_NAME = "ChronaraNode.Supervisor"
FOOTING = (ROOT_NAME, ADMIN, LOGGER)
PREFIX = "chr-node: "
# Actors device traffic does not need: a crash of one leaves device sessions (and so the relayed
# port) open (issue 9 item 5, docs/architecture.md). Channels is not in this tree yet.
SPARED = frozenset({"Stats", "Network.Stats", "Cron", "PubSub", "Connectivity", "Channels"})


@dataclass
class Round:
    """One signal sent to one process, and what followed."""

    process: str
    signal: str
    outcome: str  # "whole", "gave up (exit N)", or what made the node half-alive
    seconds: float  # from the signal to whole (or to the daemon's exit)
    port_survived: bool | None  # None: the daemon exited
    rpc_gap: float  # longest time the RPC did not answer, seconds
    reported: bool | None = None  # SIGSTOP: the hang was logged (None for SIGKILL)

    @property
    def ok(self) -> bool:
        whole_or_gone = self.outcome == "whole" or self.outcome.startswith(("gave up", "gone"))
        spared = self.process not in SPARED or self.port_survived is not False
        return whole_or_gone and spared and self.reported is not False


class Chaos:
    """Signals for one running node, with a relaying device pair and an RPC poller around them."""

    def __init__(self, node: NodeProcess, whole_timeout: float = 60.0) -> None:
        assert node.proc is not None, "start the node first"
        self.node = node
        self.whole_timeout = whole_timeout
        self.rounds: list[Round] = []
        info = node.rpc("chr_node_info")
        self.actors = [row["name"] for row in info["tree"]]
        self.relay = Relay("127.0.0.1", node.edge_ports[0], parse_address(info["address"])).start()
        self.poller = RpcPoller(node.rpc_port).start()
        self.gone: int | None = None  # the daemon's exit status, once it exited
        self.broken: str | None = None  # why a round left the node half-alive (no more rounds)

    @classmethod
    @contextmanager
    def on(cls, node: NodeProcess, whole_timeout: float = 60.0) -> Iterator[Chaos]:
        chaos = cls(node, whole_timeout)
        try:
            yield chaos
        finally:
            chaos.close()

    def close(self) -> None:
        self.poller.stop()
        self.relay.close()

    @property
    def processes(self) -> list[str]:
        """Every process of the node an operator can signal: the footing, then each actor."""
        return [*FOOTING, *self.actors]

    # ---- the kinds of round ----------------------------------------------------------------

    def kill(self, name: str) -> Round:
        """SIGKILL the process named `name` and wait for whole or a non-zero exit."""
        pid = self.pid_of(name)
        return self._round(name, "SIGKILL", lambda: _signal(pid, signal.SIGKILL), [])

    def freeze(self, name: str) -> Round:
        """SIGSTOP it: the supervisor's heartbeat (or the daemon's watch, for the footing) must
        log it and replace it. SIGCONT afterwards, so that nothing is left stopped."""
        pid = self.pid_of(name)
        return self._round(name, "SIGSTOP", lambda: _signal(pid, signal.SIGSTOP), [pid], hang_of=pid)

    def kill_replacement(self, name: str) -> Round:
        """SIGKILL it, and then its replacement as soon as `ps` shows it (before it can report
        Started): the supervisor must see a child that dies while it starts, too."""
        pid = self.pid_of(name)

        def deliver() -> int:
            _signal(pid, signal.SIGKILL)
            deadline = time.monotonic() + self.whole_timeout
            while time.monotonic() < deadline:
                pids = [p for p in self.ps().get(PREFIX + name, []) if p != pid]
                if pids:
                    return _signal(pids[0], signal.SIGKILL)
                time.sleep(0.005)
            return pid  # no replacement appeared: the settle says what is missing

        return self._round(name, "SIGKILL x2", deliver, [])

    def kill_with_sibling_stopped(self, name: str, sibling: str) -> Round:
        """SIGSTOP `sibling`, then SIGKILL `name`, whose restart (rest_for_one) must stop the hung
        sibling: it waits the sibling's shutdown timeout, then kills it. SIGCONT afterwards."""
        pid, hung = self.pid_of(name), self.pid_of(sibling)

        def deliver() -> int:
            _signal(hung, signal.SIGSTOP)
            return _signal(pid, signal.SIGKILL)

        return self._round(f"{name} (+{sibling} stopped)", "SIGKILL+STOP", deliver, [hung], also_gone=hung)

    def _round(
        self,
        name: str,
        label: str,
        deliver: Callable[[], int],
        resume: list[int],
        hang_of: int = 0,
        also_gone: int = 0,
    ) -> Round:
        """Send the signals (`deliver` returns the pid that must be gone), settle, SIGCONT the
        pids in `resume`, and record the round."""
        if self.gone is not None or self.broken is not None:
            raise RuntimeError(f"this node is done: exit status {self.gone}, half-alive: {self.broken}")
        log_from = self._log_size()
        if self.relay.broken is not None:
            self.relay.reconnect()
        started = time.monotonic()
        try:
            pid = deliver()
            outcome, seconds = self._settle([pid, also_gone], started)
        finally:
            for stopped in resume:
                _signal(stopped, signal.SIGCONT)
        survived = None if self.gone is not None else self.relay.broken is None and self.relay.flowing()
        reported = hang_logged(self._log_text(log_from), name, hang_of) if hang_of else None
        gap = self.poller.gap(started, started + seconds)
        result = Round(name, label, outcome, seconds, survived, gap, reported)
        self.rounds.append(result)
        return result

    def wait_whole(self) -> str:
        """Wait (up to `whole_timeout`) for whole or the daemon's exit, after a signal sent by
        hand; the outcome, as a round's."""
        return self._settle([], time.monotonic())[0]

    def _settle(self, pids: list[int], started: float) -> tuple[str, float]:
        """Wait for whole, or the daemon's exit; say which and how long it took."""
        assert self.node.proc is not None
        deadline = started + self.whole_timeout
        why: str | None = "not checked"
        while time.monotonic() < deadline:
            code = self.node.proc.poll()
            if code is not None:
                self.gone = code
                return self._exit_outcome(code), time.monotonic() - started
            why = self.not_whole(*pids)
            if why is None:
                return "whole", time.monotonic() - started
            time.sleep(0.05)
        self.broken = f"HALF-ALIVE after {self.whole_timeout:g} s: {why}"
        return self.broken, time.monotonic() - started

    def _exit_outcome(self, code: int) -> str:
        lines = [
            line for line in self._log_text(0).splitlines() if " ERROR " in line and "chrnode.daemon" in line
        ]
        if code == 0:
            return "EXITED 0 after a failure"
        if not lines:
            return f"EXITED {code} with no ERROR line from chrnode.daemon"
        return f"gave up (exit {code})"

    # ---- what "whole" means ----------------------------------------------------------------

    def not_whole(self, *signalled: int) -> str | None:
        """None when the node is whole; else the first thing that is not (see the module doc)."""
        assert self.node.proc is not None
        seen = self.ps()
        for label, pids in seen.items():
            if len(pids) > 1:
                return f"{len(pids)} processes named {label!r}: {pids}"
        left = set(signalled) & {p for pids in seen.values() for p in pids}
        if left:
            return f"the signalled process {sorted(left)} is still there"
        for label in FOOTING:
            if PREFIX + label not in seen:
                return f"no {label} process"
        try:
            info = rpc(self.node.rpc_port, "chr_node_info")
            health = get(self.node.rpc_port, "/health")
        except (OSError, ValueError, KeyError) as exc:
            return f"the RPC does not answer ({type(exc).__name__})"
        rows = {row["name"]: row for row in info["tree"]}
        if sorted(rows) != sorted(self.actors):
            return f"the tree has {sorted(set(rows) ^ set(self.actors))} changed"
        for name, row in rows.items():
            if row["state"] != "running":
                return f"{name} is {row['state']}"
            if seen.get(PREFIX + name) != [int(row["pid"])]:
                return f"{name}: chr_node_info says pid {row['pid']}, ps {seen.get(PREFIX + name)}"
        if health["layers"]["process"]["status"] == "down":
            return f"/health: {health['layers']['process']['reason']}"
        if not self.relay.probe():
            return "the edge port accepts no new device"
        return None

    def ps(self) -> dict[str, list[int]]:
        """Title -> pids of the daemon's live descendants; a stopped one counts under its own
        title with ' (stopped)' added, so that it is never taken for a live actor."""
        assert self.node.proc is not None
        found: dict[str, list[int]] = {}
        try:
            children = psutil.Process(self.node.proc.pid).children(recursive=True)
        except psutil.Error:
            return found
        for child in children:
            try:
                status = child.status()
                if status == psutil.STATUS_ZOMBIE:
                    continue
                label = title(child.pid) + (" (stopped)" if status == psutil.STATUS_STOPPED else "")
            except psutil.Error:
                continue
            found.setdefault(label, []).append(child.pid)
        return found

    def pid_of(self, name: str) -> int:
        pids = self.ps().get(PREFIX + name, [])
        if len(pids) != 1:
            raise LookupError(f"ps shows {len(pids)} processes named {PREFIX + name!r}")
        return pids[0]

    def _log_size(self) -> int:
        try:
            return (self.node.data_dir / "chr-node.log").stat().st_size
        except OSError:
            return 0

    def _log_text(self, offset: int) -> str:
        try:
            with open(self.node.data_dir / "chr-node.log", "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def _signal(pid: int, sig: signal.Signals) -> int:
    """Send `sig` to `pid` (already gone is fine: it is what a kill wants); returns `pid`."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    return pid


def hang_logged(log: str, name: str, pid: int) -> bool:
    """The log says the stopped process `name` (pid `pid`) was seen hung: its supervisor's line
    (`X is hung: ...`) or, for the footing, the daemon's (`root supervisor (pid N) was stopped
    ...`, or its heartbeat to the root overdue)."""
    daemon_name = ROOT if name == ROOT_NAME else name
    return (
        f"{name} is hung" in log
        or f"{daemon_name} (pid {pid}) was stopped" in log
        or (name == ROOT_NAME and "did not answer the daemon's heartbeat" in log)
    )


def kill_daemon(chaos: Chaos) -> Round:
    """SIGKILL the daemon itself: nothing is left to log or rebuild, so every process of the node
    must end with it (a service manager then starts a clean node on free ports). Processes still
    alive after `whole_timeout` make the node half-alive; they are killed before returning."""
    node = chaos.node
    assert node.proc is not None
    pids = {pid for pids in chaos.ps().values() for pid in pids}
    started = time.monotonic()
    node.proc.kill()
    chaos.gone = node.proc.wait(30)
    left: list[int] = []
    while time.monotonic() < started + chaos.whole_timeout:
        left = [pid for pid in pids if _alive(pid)]
        if not left:
            break
        time.sleep(0.05)
    seconds = time.monotonic() - started
    if left:
        titles = sorted({_title_or_pid(pid) for pid in left})
        outcome = f"HALF-ALIVE: {len(left)} processes outlived the daemon ({', '.join(titles)})"
        node.kill()
    else:
        outcome = f"gone (every process ended, exit {chaos.gone})"
    result = Round(
        "chr-node (daemon)", "SIGKILL", outcome, seconds, None, chaos.poller.gap(started, started + seconds)
    )
    chaos.rounds.append(result)
    return result


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _title_or_pid(pid: int) -> str:
    try:
        return title(pid).removeprefix(PREFIX)
    except psutil.Error:
        return str(pid)


def _seconds(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def table(rounds: list[Round], key: Callable[[Round], tuple[str, str]] | None = None) -> str:
    """One line per (process, signal): time to whole median (range), port survived n/N, the
    longest RPC gap, and the outcomes (ok, or what went wrong)."""
    key = key or (lambda r: (r.process, r.signal))
    groups: dict[tuple[str, str], list[Round]] = {}
    for r in rounds:
        groups.setdefault(key(r), []).append(r)
    header = (
        "process",
        "signal",
        "n",
        "to whole s median (range)",
        "port survived",
        "rpc gap s max",
        "outcome",
    )
    lines = [header]
    for (process, sig), rs in groups.items():
        survived = [r.port_survived for r in rs if r.port_survived is not None]
        outcomes = sorted({r.outcome for r in rs})
        reported = [r.reported for r in rs if r.reported is not None]
        outcome = "; ".join(outcomes) + ("" if all(reported) else " (hang NOT logged)")
        mark = "" if all(r.ok for r in rs) else "FAIL "
        lines.append(
            (
                process,
                sig,
                str(len(rs)),
                _seconds([r.seconds for r in rs]),
                f"{sum(survived)}/{len(survived)}" + (" (spared)" if process in SPARED else ""),
                f"{max(r.rpc_gap for r in rs):.2f}",
                mark + outcome,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
