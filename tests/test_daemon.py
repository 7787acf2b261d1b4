"""The daemon as an operator runs it: a real `chr-node start` process, real actors, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chrnode.actorsys import bind_error
from chrnode.testing.node import NodeProcess, node_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("node") / "data").start()
    try:
        yield proc
    finally:
        assert proc.stop() == 0
        assert proc.leftovers() == []


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout} s (last error: {last_error})")


def tree_whole(node: NodeProcess, old_pids: dict[str, int]) -> bool:
    tree = node.rpc("chr_node_info")["tree"]
    return (
        bool(tree)
        and all(a["state"] == "running" for a in tree)
        and {a["name"] for a in tree} == set(old_pids)
    )


def test_node_info_names_the_node_and_its_ports(node: NodeProcess) -> None:
    info = node.rpc("chr_node_info")
    key = (node.data_dir / "node.key").read_text().strip()
    from chrnode.crypto import PrivateKey

    assert info["address"] == "0x" + PrivateKey.from_hex(key).address.hex()
    assert info["ports"]["rpc"] == node.rpc_port
    assert node.env["CHR_RPC_PORT"] == "0" and node.env["CHR_EDGE2_PORTS"] == "0,0", "the OS picks"
    assert info["ports"]["edge2"] == node.edge_ports and len(set(node.edge_ports)) == 2
    assert all(p > 0 for p in (info["ports"]["rpc"], info["ports"]["rpcs"], info["ports"]["actor_admin"]))
    assert info["ports"]["peer2"] == node.ports["peer2"] > 0, "the peer port the OS picked (issue 10)"
    ports_file = json.loads((node.data_dir / "ports.json").read_text())
    listening = ["edge2", "peer2", "rpc", "rpcs"]
    assert ports_file == {**info["ports"], "pid": node.proc.pid, "listening": listening}  # type: ignore[union-attr]
    names = [a["name"] for a in info["tree"]]
    assert names[:3] == ["Globals", "Stats", "Network.Stats"], "children start in the seed's order"
    assert {"Model.Sql.Worker", "PubSub", "Cron", "Network.RpcHttp", "Network.EdgeV2.Listener"} <= set(names)
    assert oct((node.data_dir / ".cookie").stat().st_mode & 0o777) == "0o600"
    assert oct((node.data_dir / "node.key").stat().st_mode & 0o777) == "0o600"


def test_health_and_cron_come_from_live_state(node: NodeProcess) -> None:
    health = wait_until(
        lambda: (h := node.rpc("health")) and h["layers"]["storage"]["status"] == "ok" and h,
        what="storage layer ok",
    )
    assert set(health["layers"]) == {"process", "network", "storage", "performance", "integration"}
    assert health["layers"]["process"]["status"] == "ok"
    jobs = wait_until(
        lambda: [j for j in node.rpc("cron_jobs")["jobs"] if j["runs"] > 0], what="a cron job ran"
    )
    assert any(j["name"] == "connectivity_check" for j in jobs)
    status, _ = node.post(b"", path="/health")  # GET is what load balancers use; POST is refused
    assert status in (404, 405)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killing_any_actor_is_survived(node: NodeProcess) -> None:
    """And the node's public ports stay its own throughout: the daemon holds every listening
    socket (chrnode.held_ports), so a listener's death does not free its ports and nothing else
    can take them before its replacement is up. (A port configured 0 comes from the ephemeral
    range that every socket on the machine draws from, the node's own actors included: a
    whole-suite run once saw a restarted listener find its device port taken and move.)"""
    ports = node.rpc("chr_node_info")["ports"]
    public = [*ports["edge2"], ports["peer2"], ports["rpc"], ports["rpcs"]]
    for name in ("Globals", "Model.Sql.Worker", "PubSub", "Network.RpcHttp", "Network.EdgeV2.Listener"):
        before = {a["name"]: a["pid"] for a in node.rpc("chr_node_info")["tree"]}
        os.kill(before[name], signal.SIGKILL)
        wait_until(lambda pid=before[name]: not alive(pid), what=f"{name} gone")
        free = [port for port in public if bind_error("127.0.0.1", port) is None]  # as any program may
        assert free == [], f"ports free after {name}'s death"
        wait_until(
            lambda n=name, b=before: tree_whole(node, b) and node.actor_pid(n) != b[n],
            what=f"{name} replaced and the tree whole again",
        )
        info = node.rpc("chr_node_info")
        restarted = {a["name"]: a for a in info["tree"]}
        assert restarted[name]["restarts"] >= 1
        assert info["ports"] == ports, f"the ports as soon as {name} is back"
    # Listeners configured 0 bind their old ports again when restarted: clients keep reaching them.
    assert node.rpc("chr_node_info")["ports"] == ports
    assert json.loads((node.data_dir / "ports.json").read_text())["rpc"] == ports["rpc"]


def test_bad_json_rpc_is_answered_and_harmless(node: NodeProcess) -> None:
    _, reply = node.post("{not json")
    assert reply["error"]["code"] == -32700
    _, reply = node.post(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "nope"}))
    assert reply["error"]["code"] == -32601
    _, reply = node.post(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "admin_stop"}))
    assert reply["error"]["code"] == -32001, "admin without the cookie token is refused"
    _, reply = node.post(
        json.dumps({"jsonrpc": "2.0", "id": 3, "method": "admin_stop"}),
        {"Authorization": "Bearer " + "0" * 64},
    )
    assert reply["error"]["code"] == -32001
    _, reply = node.post(b"[" + b",".join([b'{"jsonrpc":"2.0","id":1,"method":"health"}'] * 1000) + b"]")
    assert reply["error"]["code"] == -32600 and "batch" in reply["error"]["message"]
    assert node.rpc("chr_node_info")["address"].startswith("0x")


def test_admin_restart_and_log_level(node: NodeProcess) -> None:
    before = node.actor_pid("Cron")
    node.rpc("admin_restart_actor", ["Cron"], admin=True)
    wait_until(lambda: node.actor_pid("Cron") not in (before, 0), what="Cron restarted by the admin")
    with pytest.raises(RuntimeError, match="-32602"):
        node.rpc("admin_restart_actor", ["NoSuchActor"], admin=True)
    log_file = node.data_dir / "chr-node.log"
    assert "subscribed to snapshot" not in log_file.read_text()  # a debug line, below "info"
    node.rpc("admin_set_log_level", ["debug"], admin=True)
    node.rpc("admin_restart_actor", ["Network.RpcHttps"], admin=True)  # it subscribes again
    wait_until(
        lambda: "Network.RpcHttps subscribed to snapshot" in log_file.read_text(),
        what="debug lines in the log after admin_set_log_level debug",
    )
    node.rpc("admin_set_log_level", ["info"], admin=True)


def test_an_rpc_listener_restarted_gracefully_binds_its_port_again(node: NodeProcess) -> None:
    """Its replacement starts once the old one said Exiting, before that process is reaped (so
    the old one must have closed its listening socket by then): the same port, not a fresh one."""
    port = node.ports["rpcs"]  # configured 0: the port it had is the one to bind again

    def listening(pid: int) -> set[int]:
        return {c.laddr.port for c in psutil.Process(pid).net_connections() if c.status == psutil.CONN_LISTEN}

    for _ in range(3):
        before = node.actor_pid("Network.RpcHttps")
        # A client connected meanwhile (the connection's task holds the server, and so its socket)
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        wait_until(lambda pid=before: len(psutil.Process(pid).net_connections()) > 1, what="accepted")
        node.rpc("admin_restart_actor", ["Network.RpcHttps"], admin=True)  # answers once it runs
        client.close()
        after = node.actor_pid("Network.RpcHttps")
        assert after not in (before, 0)
        wait_until(lambda pid=after: port in listening(pid), timeout=10, what=f"RpcHttps listening on {port}")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


def test_public_listeners_are_only_the_documented_ports(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    proc = NodeProcess(tmp_path / "data", CHR_BIND_ADDRESS="0.0.0.0", CHR_RPC_BIND="0.0.0.0")
    nodes.append(proc)
    proc.start()
    try:
        documented = {proc.rpc_port, proc.ports["rpcs"], proc.ports["peer2"], *proc.edge_ports}
        pids = {proc.proc.pid} | {p.pid for p in psutil.Process(proc.proc.pid).children(recursive=True)}  # type: ignore[union-attr]
        pids |= set(proc._descendants)
        public = set()
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.pid in pids and conn.laddr.ip != "127.0.0.1":
                public.add(conn.laddr.port)
        assert public <= documented, f"listening beyond loopback on undocumented ports {public - documented}"
        assert proc.rpc_port in public
    finally:
        proc.stop()


def test_sigterm_leaves_no_process(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    proc = NodeProcess(tmp_path / "data")
    nodes.append(proc)
    proc.start()
    pids = set(proc._descendants)
    assert len(pids) >= 10, "every actor is a process of its own"
    assert (proc.data_dir / "ports.json").exists()
    assert proc.stop() == 0
    assert proc.leftovers() == []
    assert "stopped" in proc.log()
    assert not (proc.data_dir / "ports.json").exists(), "a clean stop removes the ports file"


def test_sigkill_of_the_daemon_takes_the_tree_with_it(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    proc = NodeProcess(tmp_path / "data")
    nodes.append(proc)
    proc.start()
    pids = set(proc._descendants)
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGKILL)
    proc.proc.wait(10)
    wait_until(lambda: not proc.leftovers(), what="every actor process gone after the daemon's SIGKILL")
    assert pids
    stale = json.loads((proc.data_dir / "ports.json").read_text())
    assert stale["pid"] == proc.proc.pid, "a killed node cannot remove its ports file"
    again = NodeProcess(proc.data_dir)  # same data dir: the stale file is replaced, not believed
    nodes.append(again)
    again.start()
    assert again.proc is not None and again.ports["pid"] == again.proc.pid
    assert again.rpc("chr_node_info")["ports"]["rpc"] == again.rpc_port
    assert again.stop() == 0


def test_admin_stop_ends_the_daemon_cleanly(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    proc = NodeProcess(tmp_path / "data")
    nodes.append(proc)
    proc.start()
    proc.rpc("admin_stop", [], admin=True)
    assert proc.proc is not None
    assert proc.proc.wait(60) == 0
    wait_until(lambda: not proc.leftovers(), what="no process after admin_stop")


def test_acknowledged_writes_survive_sigkill_of_the_daemon(tmp_path: Path, nodes: list[NodeProcess]) -> None:
    """Writes acknowledged by Model.Sql.Worker are in the file after the whole node is SIGKILLed."""
    proc = NodeProcess(tmp_path / "data")
    nodes.append(proc)
    proc.start()
    port = str(proc.admin_port)
    acknowledged: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "chrnode.testing.write_stream", port, "100000"],
        stdout=subprocess.PIPE,
        text=True,
    ) as writer:
        assert writer.stdout is not None
        try:
            for line in writer.stdout:
                acknowledged.append(line.strip())
                if len(acknowledged) == 60:
                    assert proc.proc is not None
                    os.kill(proc.proc.pid, signal.SIGKILL)
                    proc.proc.wait(10)
                    break
            for line in writer.stdout:  # answers that were already on their way
                if line.strip():
                    acknowledged.append(line.strip())
        finally:
            writer.kill()
            proc.kill()
    wait_until(lambda: not proc.leftovers(), what="node gone")
    db = sqlite3.connect(proc.data_dir / "chr-node.sqlite")
    stored = {row[0] for row in db.execute("SELECT key FROM kv")}
    db.close()
    missing = [k for k in acknowledged if k not in stored]
    assert len(acknowledged) >= 60 and not missing, f"acknowledged but lost: {missing[:5]}"


def test_bad_config_stops_startup_naming_key_value_and_source(tmp_path: Path) -> None:
    env = node_env(tmp_path / "data", CHR_RPC_PORT="70000")
    out = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "start"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "rpc_port" in out.stderr and "70000" in out.stderr and "CHR_RPC_PORT" in out.stderr
    assert not (tmp_path / "data" / "chr-node.sqlite").exists()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = node_env(tmp_path / "data", CHR_RPC_PORT=str(taken.getsockname()[1]))
        out = subprocess.run(
            [sys.executable, "-m", "chrnode.cli", "start"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2
    assert "rpc_port" in out.stderr and "free port" in out.stderr


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = node_env(blocker / "data")
    out = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "start"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "data_dir" in out.stderr


def test_cli_config_rpc_and_status(node: NodeProcess, tmp_path: Path) -> None:
    env = dict(node.env)
    out = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "config"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "CHR_RPC_PORT" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "rpc", "chr_node_info"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and json.loads(out.stdout)["ports"]["rpc"] == node.rpc_port
    out = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "Model.Sql.Worker" in out.stdout and "storage" in out.stdout, out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "chrnode.cli", "rpc", "admin_restart_actor", "Bogus"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Bogus" in out.stderr


def test_status_shows_devices_ports_bytes_and_peers(node: NodeProcess, tmp_path: Path) -> None:
    """`chr-node status` from the node's live figures: a connected device is counted, the hello's
    bytes show as relayed, and peers are 0 of 0 until the peer network exists."""
    import asyncio

    from chrnode.crypto import parse_address
    from chrnode.device.client import connect
    from chrnode.device.key import DeviceKey

    key = DeviceKey.create(tmp_path / "device.key")
    address = parse_address(node.rpc("chr_node_info")["address"])

    def status() -> str:
        out = subprocess.run(
            [sys.executable, "-m", "chrnode.cli", "status"],
            env=node.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    async def while_connected() -> str:
        device = await connect("127.0.0.1", node.edge_ports[0], key, expect_node=address)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                None,
                lambda: wait_until(
                    lambda: (text := status()) and "devices  1 connected (1 connections)" in text and text,
                    what="the device in chr-node status",
                ),
            )
        finally:
            await device.close()

    text = asyncio.run(while_connected())
    assert "0 ports open" in text
    relayed = next(line for line in text.splitlines() if line.startswith("relayed"))
    assert relayed != "relayed  0 B in, 0 B out", "the hello came in and its answer went out"
    assert "peers    0 connected of 0 known (no peer network yet)" in text
    wait_until(lambda: "devices  0 connected" in status(), what="the device gone from chr-node status")


def test_admin_shell_commands_and_completion(node: NodeProcess) -> None:
    import io

    from chrnode.rpc.client import RpcClient
    from chrnode.shell import AdminShell

    client = RpcClient("127.0.0.1", node.rpc_port, node.token())
    out = io.StringIO()
    shell = AdminShell(
        client,
        history_file=None,
        stdin=io.StringIO("info\nhealth\ncall peer_list\nbogus\nquit\n"),
        stdout=out,
    )
    shell._refresh_names()
    assert "chr_node_info" in shell.complete_call("chr_", "call chr_", 5, 9)
    assert shell.complete_restart("Model.Sql.W", "restart Model.Sql.W", 8, 19) == ["Model.Sql.Worker"]
    assert shell.complete_loglevel("de", "loglevel de", 9, 11) == ["debug"]
    assert "restart" in shell.completenames("re")
    shell.cmdloop(intro="")
    text = out.getvalue()
    assert '"address"' in text and '"layers"' in text and "unknown command 'bogus'" in text


def test_minute_rollup_lands_in_node_stats(node: NodeProcess) -> None:
    from actors import messages as m
    from chrnode.testing.join import joined

    with joined(node.admin_port) as system:
        done = system.ask("Network.Stats", m.RunJob("stats_rollup"))
    assert isinstance(done, m.JobDone) and done.ok, done
    db = sqlite3.connect(f"file:{node.data_dir / 'chr-node.sqlite'}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT timestamp, connections, bandwidth_in, bandwidth_out, uptime_seconds FROM node_stats"
    ).fetchall()
    db.close()
    assert rows and rows[-1][4] >= 0
    minutes = wait_until(lambda: node.rpc("network_stats")["minutes"], what="the rollup in network_stats")
    assert minutes[-1]["timestamp"] == rows[-1][0]
