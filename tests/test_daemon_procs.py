"""The node's processes as an operator sees them (a real `chr-node start`): each names itself,
holds only its own sockets and logs through the daemon; when the root supervisor, Thespian's admin
or its logger is killed the daemon says why within a second and the tree is whole again, or it
exits non-zero with a clear line."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from chrnode.procwatch import LOGGER_TITLE
from chrnode.testing.node import NodeProcess

pytestmark = pytest.mark.slow


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError, RuntimeError, KeyError, TypeError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def zombies_under(pid: int) -> list[int]:
    """The defunct processes under `pid`; one that exits while being looked at is not one."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
        except psutil.NoSuchProcess:  # reaped between the listing and the look: gone, not defunct
            pass
    return found


def title(pid: int) -> str:
    """What ps shows (setproctitle pads argv with NULs, which psutil splits on)."""
    return " ".join(part for part in psutil.Process(pid).cmdline() if part)


def tree_pids(node: NodeProcess) -> dict[str, int]:
    return {a["name"]: int(a["pid"]) for a in node.rpc("chr_node_info")["tree"]}


def footing(node: NodeProcess) -> dict[str, int]:
    """The pids the tree stands on: root supervisor, Thespian admin, logger."""
    root = psutil.Process(tree_pids(node)["Globals"]).ppid()
    admin = psutil.Process(root).ppid()
    logger = next(p.pid for p in psutil.Process(admin).children() if title(p.pid) == LOGGER_TITLE)
    return {"root": root, "admin": admin, "logger": logger}


def whole_again(node: NodeProcess, old: dict[str, int]) -> dict[str, int]:
    """Every actor of the tree running again, in new processes."""

    def check() -> dict[str, int] | None:
        tree = node.rpc("chr_node_info")["tree"]
        if not tree or any(a["state"] != "running" for a in tree):
            return None
        pids = {a["name"]: int(a["pid"]) for a in tree}
        return pids if set(pids) == set(old) and not set(pids.values()) & set(old.values()) else None

    return wait_until(check, what="the whole tree again")  # type: ignore[no-any-return]


def logged_at(node: NodeProcess, pattern: str) -> float:
    """When the daemon logged the first line matching `pattern` (from its own timestamp)."""
    for line in (node.data_dir / "chr-node.log").read_text().splitlines():
        if re.search(pattern, line):
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise AssertionError(f"no log line matches {pattern!r}")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("procs") / "data").start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0


def test_every_process_names_itself(node: NodeProcess) -> None:
    for name, pid in tree_pids(node).items():
        assert title(pid) == f"chr-node: {name}"
    pids = footing(node)
    assert title(pids["root"]) == "chr-node: ChronaraNode.Supervisor"
    assert title(pids["admin"]) == "chr-node: Thespian admin"
    assert psutil.Process(pids["admin"]).ppid() == node.proc.pid, "the daemon adopted the admin"  # type: ignore[union-attr]


def test_no_defunct_process_under_the_daemon(node: NodeProcess) -> None:
    assert node.proc is not None
    daemon = node.proc.pid
    wait_until(lambda: not zombies_under(daemon), timeout=5, what="no zombie child of the daemon")


def test_each_listening_socket_belongs_to_one_process(node: NodeProcess) -> None:
    daemon = psutil.Process(node.proc.pid)  # type: ignore[union-attr]
    owners: dict[tuple[str, int], list[int]] = {}
    for process in [daemon, *daemon.children(recursive=True)]:
        for conn in process.net_connections("inet"):
            if conn.status == psutil.CONN_LISTEN:
                owners.setdefault((conn.laddr.ip, conn.laddr.port), []).append(process.pid)
    # The node's public ports are the exception, by design: the daemon binds them once and every
    # process keeps them (chrnode.held_ports), so that a restarting listener takes its port back.
    info = node.rpc("chr_node_info")["ports"]
    public = {info["rpc"], info["rpcs"], info["peer2"], *info["edge2"]}
    everyone = sorted(owners[("127.0.0.1", node.rpc_port)])
    assert daemon.pid in everyone and tree_pids(node)["Network.RpcHttp"] in everyone
    shared = {addr: pids for addr, pids in owners.items() if len(pids) > 1 and addr[1] not in public}
    assert not shared, f"listening sockets held by more than one process: {shared}"
    # each actor holds its own Thespian port, and no other
    thespian = [addr for addr, pids in owners.items() if addr[1] not in public]
    assert len(thespian) >= len(tree_pids(node)) + 1


def test_a_log_flood_from_several_actors_is_kept_whole(node: NodeProcess) -> None:
    """Four actor processes log 4 x 12,000 distinct lines (about 11 MiB, past one rotation):
    every line is in chr-node.log or its backups, written by the daemon alone."""
    from chrnode.testing.chatter import Chatter, Chattered
    from chrnode.testing.join import joined

    count = 12_000
    with joined(node.admin_port) as system:
        boxes = [system.asys.createActor("chrnode.testing.chatter.Chatterbox") for _ in range(4)]
        for n, box in enumerate(boxes):
            system.asys.tell(box, Chatter(f"flood{n}", count, 240))
        done = set()
        deadline = time.monotonic() + 240
        while len(done) < len(boxes) and time.monotonic() < deadline:
            reply = system.asys.listen(1)
            if isinstance(reply, Chattered):
                done.add(reply.pid)
        assert len(done) == len(boxes)
        for box in boxes:
            system.asys.tell(box, __import__("thespian.actors").actors.ActorExitRequest())
    logs = [node.data_dir / "chr-node.log"] + [node.data_dir / f"chr-node.log.{n}" for n in (1, 2, 3)]
    pattern = re.compile(r"chrnode\.actor\.Chatterbox: (flood\d) (\d+) ")

    def all_there() -> list[tuple[str, int]] | None:
        seen = set()
        for path in logs:
            if path.exists():
                for match in pattern.finditer(path.read_text(errors="replace")):
                    seen.add((match.group(1), int(match.group(2))))
        missing = [(f"flood{n}", i) for n in range(4) for i in range(count) if (f"flood{n}", i) not in seen]
        return None if missing else missing or [("all", 0)]

    wait_until(all_there, timeout=60, what="every flood line in the log files")
    assert (node.data_dir / "chr-node.log.1").exists(), "the flood went past one rotation"
    assert sum(p.stat().st_size for p in logs if p.exists()) <= 40 * 1024 * 1024


def _kill_and_recover(tmp_path: Path, nodes: list[NodeProcess], role: str, died: str) -> NodeProcess:
    node = NodeProcess(tmp_path / "data")
    nodes.append(node)
    node.start()
    before = tree_pids(node)
    target = footing(node)[role]
    killed_at = time.time()
    os.kill(target, signal.SIGKILL)
    whole_again(node, before)
    noticed = logged_at(node, rf"ERROR +chrnode\.daemon: {died} \(pid {target}\) died")
    assert noticed - killed_at < 1.0, f"noticed {noticed - killed_at:.2f} s after the kill"
    return node


def test_sigkill_of_the_root_supervisor_rebuilds_the_tree(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    node = _kill_and_recover(tmp_path, nodes, "root", "root supervisor")
    assert "actor system rebuilt" in (node.data_dir / "chr-node.log").read_text()
    assert node.rpc("chr_node_info")["ports"]["rpc"] == node.rpc_port
    assert node.stop() == 0
    assert node.leftovers() == []


def test_sigkill_of_thespians_admin_rebuilds_the_system(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    node = _kill_and_recover(tmp_path, nodes, "admin", "Thespian admin")
    text = (node.data_dir / "chr-node.log").read_text()
    daemon_lines = [line for line in text.splitlines() if "chrnode.daemon" in line]
    assert re.search(r"Thespian admin \(pid \d+\) died: killed by SIGKILL", text), daemon_lines
    assert node.stop() == 0
    assert node.leftovers() == []


def test_sigkill_of_the_logger_is_survived_and_logs_still_arrive(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    """Thespian 4.0.1's admin used to crash restarting its logger; now it starts a new one and the
    tree stays up, in the same processes."""
    from chrnode.testing.chatter import Chatter, Chattered
    from chrnode.testing.join import joined

    node = NodeProcess(tmp_path / "data")
    nodes.append(node)
    node.start()
    before, pids = tree_pids(node), footing(node)
    os.kill(pids["logger"], signal.SIGKILL)
    wait_until(
        lambda: "started a new logger" in (node.data_dir / "chr-node.log").read_text(), what="a new logger"
    )
    assert footing(node)["logger"] != pids["logger"] and footing(node)["admin"] == pids["admin"]
    assert tree_pids(node) == before
    with joined(node.admin_port) as system:
        box = system.asys.createActor("chrnode.testing.chatter.Chatterbox")
        assert isinstance(system.asys.ask(box, Chatter("after-logger", 3), 30), Chattered)
    wait_until(
        lambda: "after-logger 2" in (node.data_dir / "chr-node.log").read_text(), what="an actor's line"
    )
    assert node.stop() == 0


def test_past_max_rebuilds_the_daemon_exits_1_with_a_clear_line(
    tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    node = NodeProcess(tmp_path / "data", CHR_MAX_REBUILDS="0")
    nodes.append(node)
    node.start()
    node._remember_descendants()
    os.kill(footing(node)["root"], signal.SIGKILL)
    assert node.proc is not None
    assert node.proc.wait(30) == 1
    text = (node.data_dir / "chr-node.log").read_text()
    assert "giving up: the actor system was rebuilt 0 times within 60 s; exiting with status 1" in text
    wait_until(lambda: not node.leftovers(), timeout=15, what="no process left")


@pytest.mark.parametrize(("role", "named"), [("root", "root supervisor"), ("admin", "Thespian admin")])
def test_a_stopped_root_or_admin_is_killed_and_the_tree_rebuilt(
    tmp_path: Path, nodes: list[NodeProcess], role: str, named: str
) -> None:
    """SIGSTOP leaves a process alive that answers nothing: the daemon kills it after 5 s."""
    node = NodeProcess(tmp_path / "data")
    nodes.append(node)
    node.start()
    before = tree_pids(node)
    target = footing(node)[role]
    stopped_at = time.time()
    os.kill(target, signal.SIGSTOP)
    whole_again(node, before)
    noticed = logged_at(node, rf"{named} \(pid {target}\) was stopped \(SIGSTOP\) for 5 s: killed it")
    assert 5.0 <= noticed - stopped_at < 6.5
    assert node.proc is not None
    daemon = node.proc.pid
    wait_until(
        lambda: not zombies_under(daemon),
        timeout=5,
        what="no zombie after the rebuild",
    )
    assert node.stop() == 0
    assert node.leftovers() == []
