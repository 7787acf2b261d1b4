"""tools/bootstrap and tools/run as a new user runs them, on a scratch copy of the checkout with
its own .venv and node_modules (never this checkout's, which may be shared)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from chrnode.testing.checkout import clean_env, scratch_copy

pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")


def bootstrap(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "tools" / "bootstrap")],
        cwd=root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = scratch_copy(tmp_path_factory.mktemp("checkout"))
    first = bootstrap(root)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installing chr-node" in first.stdout
    yield root


def has_npm() -> bool:
    if shutil.which("npm") is None:
        if IN_CI:
            pytest.fail("npm is missing in CI (.ci/run installs nodejs and npm)", pytrace=False)
        return False
    return True


def test_a_second_bootstrap_is_a_no_op_until_setup_py_changes(checkout: Path) -> None:
    site = next((checkout / ".venv" / "lib").glob("python*/site-packages"))
    installed = {p.name: p.stat().st_mtime_ns for p in site.iterdir()}
    stamp = (checkout / ".venv" / ".chr-bootstrap").read_text()
    npm = has_npm()
    if npm:
        modules_stamp = (checkout / "node_modules" / ".chr-bootstrap").read_text()
        assert modules_stamp.startswith("package-lock.json ")
    again = bootstrap(checkout)
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stdout, again.stdout
    assert ".venv is up to date with setup.py" in again.stdout
    if npm:
        assert "node_modules is up to date with package-lock.json" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in site.iterdir()} == installed, "nothing reinstalled"
    assert (checkout / ".venv" / ".chr-bootstrap").read_text() == stamp
    # No setuptools warning in what a user sees (the editable install is a plain .pth entry).
    assert "Warning:" not in again.stdout + again.stderr

    with open(checkout / "setup.py", "a", encoding="utf-8") as setup_py:
        setup_py.write("# changed\n")
    changed = bootstrap(checkout)
    assert changed.returncode == 0, changed.stderr
    assert "installing chr-node" in changed.stdout
    assert "Warning:" not in changed.stdout + changed.stderr, changed.stderr
    assert (checkout / ".venv" / ".chr-bootstrap").read_text() != stamp


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout} s")


def read_json(path: Path) -> dict[str, object] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_run(checkout: Path, data: Path) -> subprocess.Popen[str]:
    env = clean_env(
        CHR_DATA_DIR=str(data),
        CHR_RPC_PORT="0",
        CHR_RPCS_PORT="0",
        CHR_EDGE2_PORTS="0,0",
        CHR_PEER2_PORT="0",
        CHR_ACTOR_ADMIN_PORT="0",
        DEVCHAIN_PORT="0",
    )
    with open(data.parent / f"{data.name}-run.log", "a") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [str(checkout / "tools" / "run")],
            cwd=checkout,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def test_tools_run_stops_the_chain_it_started_and_leaves_one_it_found(checkout: Path, tmp_path: Path) -> None:
    if not has_npm():
        pytest.skip("no npm: tools/run starts no chain")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    run = start_run(checkout, data)
    try:
        ports = wait_for(lambda: read_json(data / "ports.json"), 180, "the node's ports file")
        anvil = read_json(data / "chain" / "anvil.json")
        assert anvil is not None, "tools/run started the local chain"
        daemon, chain = int(str(ports["pid"])), int(str(anvil["pid"]))
        assert alive(daemon) and alive(chain)
        run.send_signal(signal.SIGTERM)
        assert run.wait(90) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    wait_for(lambda: not alive(daemon) and not alive(chain), 30, "node and chain gone")
    assert not (data / "ports.json").exists()
    assert not (data / "chain" / "anvil.json").exists()

    # A chain that was running before tools/run is not tools/run's to stop.
    devchain = [str(checkout / ".venv" / "bin" / "python"), str(checkout / "tools" / "devchain")]
    subprocess.run([*devchain, "--data-dir", str(data), "--port", "0"], check=True, timeout=180,
                   capture_output=True, env=clean_env())  # fmt: skip
    found = read_json(data / "chain" / "anvil.json")
    assert found is not None
    try:
        run = start_run(checkout, data)
        wait_for(lambda: (p := read_json(data / "ports.json")) and p["pid"] != daemon, 180, "the node again")
        run.send_signal(signal.SIGINT)  # as Ctrl-C (the terminal would signal the node too)
        assert run.wait(90) in (0, 130)
        assert alive(int(str(found["pid"]))), "the chain it found is still running"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        subprocess.run(
            [*devchain, "--data-dir", str(data), "--stop"], timeout=60, capture_output=True, env=clean_env()
        )
