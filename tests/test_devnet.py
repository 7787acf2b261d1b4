"""compose.yaml's deploy step (chrnode.testing.devnet) on a real anvil: contracts, contracts.json,
the node in the fleet allowlist; idempotent; a chain that does not answer is a clear error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from chrnode.chain.contracts import Fleet
from chrnode.crypto import PrivateKey
from chrnode.testing.anvil import DevChain

pytestmark = pytest.mark.chain


def devnet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chrnode.testing.devnet", *args],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CHR_")}, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_it_deploys_records_and_allows_the_node_once(chain: DevChain, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CHR_DATA_DIR": str(data), "CHR_CHAIN_RPC": chain.rpc_url}
    first = devnet(env)
    assert first.returncode == 0, first.stderr
    record = json.loads((data / "contracts.json").read_text())
    assert record["chain_id"] == chain.anvil.chain_id
    node = PrivateKey.from_hex((data / "node.key").read_text().strip()).address
    assert Fleet(chain.rpc, bytes.fromhex(record["fleet"][2:])).node_allowed(node)
    assert "added to the fleet allowlist" in first.stderr

    again = devnet(env)
    assert again.returncode == 0, again.stderr
    assert json.loads((data / "contracts.json").read_text()) == record, "nothing deployed twice"
    assert "already deployed" in again.stderr and "added to the fleet" not in again.stderr


def test_a_chain_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        out = devnet({"CHR_DATA_DIR": str(tmp_path / "data"), "CHR_CHAIN_RPC": url}, "--wait", "1")
    assert out.returncode == 1
    assert f"the chain at {url} did not answer within 1 s" in out.stderr
