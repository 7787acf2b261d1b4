"""`chr-node config` says where every contract address the node uses came from (issue 7)."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

from chrnode.chain.deploy import Deployment
from chrnode.cli import main

FILE = Deployment(
    chain_id=31337,
    bns="0x" + "b1" * 20,
    fleet="0x" + "f1" * 20,
    chai="0x" + "c1" * 20,
    ticket_registry="0x" + "71" * 20,
    deployer="0x" + "d1" * 20,
)


def config_output(env: dict[str, str]) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["config"], env) == 0
    return out.getvalue()


def contract_lines(text: str) -> dict[str, str]:
    block = text.split("# Contract addresses in use", 1)[1]
    rows = {}
    for line in block.splitlines()[1:]:
        if "_contract = " in line:
            key, _, rest = line.strip("# ").partition(" = ")
            rows[key] = rest
    return rows


def test_addresses_from_contracts_json_and_from_env_are_named_as_such(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "contracts.json").write_text(FILE.to_json())
    fleet = "0x" + "ee" * 20
    text = config_output({"CHR_DATA_DIR": str(data), "CHR_FLEET_CONTRACT": fleet})
    rows = contract_lines(text)
    where = f"file:{data / 'contracts.json'} (tools/devchain)"
    assert rows["bns_contract"].split()[0].lower() == FILE.bns and rows["bns_contract"].endswith(where)
    assert rows["chai_contract"].endswith(where) and rows["ticket_registry_contract"].endswith(where)
    assert rows["fleet_contract"].split()[0].lower() == fleet and rows["fleet_contract"].endswith(
        "env:CHR_FLEET_CONTRACT"
    )
    assert "not configured" not in text


def test_without_addresses_it_says_none_and_why(tmp_path: Path) -> None:
    text = config_output({"CHR_DATA_DIR": str(tmp_path / "data")})
    rows = contract_lines(text)
    assert all(value.startswith("(none)") and value.endswith("# none") for value in rows.values()), rows
    assert "not configured: no address for " in text and "run tools/devchain" in text


def test_a_file_for_another_chain_is_not_used(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "contracts.json").write_text(FILE.to_json())
    text = config_output({"CHR_DATA_DIR": str(data), "CHR_CHAIN_ID": "1"})
    assert all(v.startswith("(none)") for v in contract_lines(text).values())
    assert "is for chain 31337, the node is for chain 1" in text
