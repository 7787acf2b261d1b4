"""The committed contract artifacts are what the pinned solcjs makes of contracts/*.sol (SPEC 7)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from chrnode.testing.anvil import REPO_ROOT, skip_or_fail_without_anvil

BUILD = REPO_ROOT / "tools" / "build_contracts.py"


def load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_contracts", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.chain
def test_committed_artifacts_are_up_to_date() -> None:
    skip_or_fail_without_anvil()  # solc and anvil come from the same `npm ci`
    proc = subprocess.run(
        [sys.executable, str(BUILD), "--check"], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "artifacts up to date (4 contracts)" in proc.stdout


def test_check_names_stale_missing_and_extra_artifacts(tmp_path: Path) -> None:
    build = load_build_module()
    committed = tmp_path / "committed"
    shutil.copytree(build.ARTIFACTS_DIR, committed)
    assert build.differing_artifacts(build.ARTIFACTS_DIR, committed) == []
    fleet = json.loads((committed / "Fleet.json").read_text())
    fleet["bytecode"] += "00"
    (committed / "Fleet.json").write_text(json.dumps(fleet))
    (committed / "BnsRegistry.json").unlink()
    (committed / "Old.json").write_text("{}")
    assert build.differing_artifacts(build.ARTIFACTS_DIR, committed) == [
        "BnsRegistry.json",
        "Old.json",
        "Fleet.json",
    ]


def test_artifacts_have_abi_and_bytecode_only() -> None:
    build = load_build_module()
    for name in build.CONTRACT_NAMES:
        artifact = json.loads((build.ARTIFACTS_DIR / f"{name}.json").read_text())
        assert set(artifact) == {"abi", "bytecode"}
        assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 1000
