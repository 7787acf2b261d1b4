"""`chr-node fleet ...` on a real anvil: list, open, close, allow, revoke; operator keys (issue 7)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chrnode.chain.contracts import Fleet
from chrnode.cli import main
from chrnode.device.key import DeviceKey
from chrnode.testing.anvil import DEPLOYER, DEV_KEYS, AnvilProcess, DevChain, deploy_all

pytestmark = pytest.mark.chain

DEVICE_A, DEVICE_B, NODE = "0x" + "a1" * 20, "0x" + "b2" * 20, "0x" + "c3" * 20


def env_for(chain: DevChain, data_dir: Path, **extra: str) -> dict[str, str]:
    """A node config on the test chain whose fleet comes from contracts.json, as tools/devchain leaves it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "contracts.json").write_text(chain.deployment.to_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHR_")}
    env.update(
        CHR_DATA_DIR=str(data_dir),
        CHR_CHAIN_RPC=chain.rpc_url,
        CHR_CHAIN_ID=str(chain.anvil.chain_id),
        **extra,
    )
    return env


def run(capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    code = main(["fleet", *argv], env)
    out, err = capsys.readouterr()
    return code, out, err


def test_operator_opens_closes_allows_revokes_and_lists(
    chain: DevChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_for(chain, tmp_path / "data")
    fleet = Fleet(chain.rpc, chain.address("fleet"))

    code, out, _ = run(capsys, env, "allow", DEVICE_A, DEVICE_B)
    assert code == 0 and f"device {DEVICE_A} allowed in fleet" in out
    assert fleet.device_listed(DEVICE_A) and fleet.device_listed(DEVICE_B)
    code, out, _ = run(capsys, env, "revoke", DEVICE_B)
    assert code == 0 and f"device {DEVICE_B} revoked from" in out and not fleet.device_allowed(DEVICE_B)
    assert run(capsys, env, "allow", "--node", NODE)[0] == 0 and fleet.node_allowed(NODE)

    code, out, _ = run(capsys, env, "open")
    assert code == 0 and "device list open" in out and fleet.device_allowed(DEVICE_B)
    code, out, _ = run(capsys, env, "list")
    assert code == 0 and "device list: OPEN" in out
    code, out, _ = run(capsys, env, "close")
    assert code == 0 and not fleet.devices_open() and not fleet.device_allowed(DEVICE_B)

    code, out, _ = run(capsys, env, "list", "--json")
    listing = json.loads(out)  # the session chain may list others that earlier tests allowed
    assert code == 0 and DEVICE_A in listing["devices"] and DEVICE_B not in listing["devices"]
    assert NODE in listing["nodes"]
    assert listing["devices_open"] is False and listing["operator"] == "0x" + DEPLOYER.address.hex()
    code, out, _ = run(capsys, env, "list")
    assert "device list: closed" in out and f"\n  {DEVICE_A}" in out and DEVICE_B not in out


def test_a_named_key_file_must_be_the_operator(
    chain: DevChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_for(chain, tmp_path / "data")
    operator = DeviceKey.create(tmp_path / "operator.key")
    stranger = DeviceKey.create(tmp_path / "stranger.key")
    fleet = Fleet(chain.rpc, chain.address("fleet"))
    chain.fund(operator.address)
    fleet.set_operator(DEPLOYER, operator.address)

    code, _, err = run(capsys, env, "allow", DEVICE_A, "--key-file", str(stranger.path))
    assert code == 2 and f"is {stranger.hex_address.lower()}" in err and "only its operator" in err
    code, _, err = run(capsys, env, "open")  # the dev deployer key is no longer the operator
    assert code == 2 and "the development deployer key" in err
    assert not fleet.device_allowed(DEVICE_A)
    code, _, _ = run(capsys, env, "allow", DEVICE_A, "--key-file", str(operator.path))
    assert code == 0 and fleet.device_listed(DEVICE_A)


def test_clear_errors_before_any_transaction(
    chain: DevChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = env_for(chain, tmp_path / "data")
    code, _, err = run(capsys, env, "allow", "0x1234")
    assert code == 2 and "40 hex digits" in err
    code, _, err = run(capsys, env, "list", "--fleet", "0x" + "99" * 20)
    assert code == 2 and "no contract at 0x9999" in err
    other_chain = env_for(chain, tmp_path / "other")
    (tmp_path / "other" / "contracts.json").unlink()
    code, _, err = run(capsys, other_chain, "list")
    assert code == 2 and "no fleet to manage" in err


def test_a_real_chain_needs_the_operators_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off the dev chain (31337) no key is assumed: the operator names theirs."""
    with AnvilProcess(chain_id=4242) as anvil:
        deployment = deploy_all(anvil.rpc_url, chain_id=4242)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHR_")}
        env.update(
            CHR_DATA_DIR=str(tmp_path),
            CHR_CHAIN_RPC=anvil.rpc_url,
            CHR_CHAIN_ID="4242",
            CHR_FLEET_CONTRACT=deployment["fleet"],
        )
        code, _, err = run(capsys, env, "open")
        assert code == 2 and "needs its operator's key: pass --key-file" in err
        key = tmp_path / "operator.key"
        key.write_text(DEV_KEYS[0].hex() + "\n")
        key.chmod(0o600)
        code, out, _ = run(capsys, env, "open", "--key-file", str(key))
        assert code == 0 and "device list open" in out
        with anvil.rpc() as rpc:
            assert Fleet(rpc, deployment["fleet"]).devices_open()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60).filter(lambda t: not t.startswith("-")))
def test_any_bad_address_is_refused_clearly_before_the_chain(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assume(not re.fullmatch(r"\s*0[xX][0-9a-fA-F]{40}\s*", text))
    env = {"CHR_DATA_DIR": str(tmp_path), "CHR_CHAIN_RPC": "http://127.0.0.1:9"}  # nothing is asked
    code, out, err = run(capsys, env, "revoke", text)
    assert code == 2 and out == "" and err.startswith("chr-node: error: address") and "Traceback" not in err
