#!/usr/bin/env python3
"""Compile contracts/*.sol with the pinned solcjs and write chrnode/chain/artifacts/<Name>.json (SPEC 7).

    python tools/build_contracts.py            # (re)write the committed artifacts
    python tools/build_contracts.py --check    # recompile in a temp dir; exit 1 if committed ones differ

The compiler is `solc` from ./node_modules (pinned in package-lock.json; run `npm ci` first),
driven through its standard-JSON interface by a small node script, with fixed settings, so the
same sources always give byte-identical artifacts. Each artifact is `{"abi": [...], "bytecode": "0x..."}`.
Exit codes: 0 ok, 1 artifacts differ or the compiler reported errors, 2 the toolchain is missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = ROOT / "contracts"
ARTIFACTS_DIR = ROOT / "chrnode" / "chain" / "artifacts"
SOLC_DIR = ROOT / "node_modules" / "solc"
CONTRACT_NAMES = ("BnsRegistry", "ChaiToken", "Fleet", "TicketRegistry")

# Fixed so builds are reproducible; the metadata hash is left out of the bytecode so that the
# artifacts depend on the code only, not on comments or file paths.
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
}

# Reads the standard-JSON input on stdin, writes solc's standard-JSON output on stdout.
NODE_DRIVER = """
const solc = require(process.argv[1]);
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  process.stdout.write(JSON.stringify({version: solc.version(), output: JSON.parse(solc.compile(input))}));
});
"""


class BuildError(Exception):
    """The toolchain is missing or the compiler refused the sources."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def standard_input() -> dict[str, Any]:
    sources = {}
    for name in CONTRACT_NAMES:
        path = CONTRACTS_DIR / f"{name}.sol"
        if not path.is_file():
            raise BuildError(f"missing {path}: expected one source file per contract {CONTRACT_NAMES}")
        sources[f"contracts/{name}.sol"] = {"content": path.read_text(encoding="utf-8")}
    return {"language": "Solidity", "sources": sources, "settings": SETTINGS}


def compile_contracts() -> dict[str, dict[str, Any]]:
    """Compile every contract; return {name: {"abi": [...], "bytecode": "0x..."}}."""
    if not (SOLC_DIR / "package.json").is_file():
        raise BuildError(f"solcjs not found in {SOLC_DIR}: run `npm ci` in {ROOT}", exit_code=2)
    try:
        proc = subprocess.run(
            ["node", "-e", NODE_DRIVER, str(SOLC_DIR)],
            input=json.dumps(standard_input()),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BuildError("`node` is not on PATH: install Node.js 20 or later", exit_code=2) from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError("solcjs did not finish within 300 s") from exc
    if proc.returncode != 0:
        raise BuildError(f"solcjs failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise BuildError(f"solcjs printed something that is not JSON: {proc.stdout[:200]!r}") from exc
    output = result["output"]
    # Warnings count as errors: the contracts are small and must compile cleanly.
    problems = [e.get("formattedMessage", e.get("message", "?")) for e in output.get("errors", [])]
    if problems:
        raise BuildError(f"solc {result['version']} reported:\n" + "\n".join(problems))
    artifacts = {}
    for name in CONTRACT_NAMES:
        compiled = output["contracts"][f"contracts/{name}.sol"][name]
        artifacts[name] = {"abi": compiled["abi"], "bytecode": "0x" + compiled["evm"]["bytecode"]["object"]}
    return artifacts


def write_artifacts(artifacts: dict[str, dict[str, Any]], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name, artifact in artifacts.items():
        text = json.dumps(artifact, indent=1, sort_keys=True) + "\n"
        (dest / f"{name}.json").write_text(text, encoding="utf-8")


def differing_artifacts(fresh_dir: Path, committed_dir: Path) -> list[str]:
    """Names of artifacts that are missing, extra or different in `committed_dir`."""
    fresh = {p.name for p in fresh_dir.glob("*.json")}
    committed = {p.name for p in committed_dir.glob("*.json")} if committed_dir.is_dir() else set()
    differing = sorted(fresh ^ committed)
    for name in sorted(fresh & committed):
        if (fresh_dir / name).read_bytes() != (committed_dir / name).read_bytes():
            differing.append(name)
    return differing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed artifacts are stale")
    args = parser.parse_args(argv)
    try:
        artifacts = compile_contracts()
    except BuildError as exc:
        print(f"build_contracts: {exc}", file=sys.stderr)
        return exc.exit_code
    if not args.check:
        write_artifacts(artifacts, ARTIFACTS_DIR)
        print(f"wrote {len(artifacts)} artifacts to {ARTIFACTS_DIR.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write_artifacts(artifacts, Path(tmp))
        differing = differing_artifacts(Path(tmp), ARTIFACTS_DIR)
    if differing:
        print(
            f"build_contracts: committed artifacts are stale: {', '.join(differing)}; "
            "run `python tools/build_contracts.py` and commit the result",
            file=sys.stderr,
        )
        return 1
    print(f"artifacts up to date ({len(artifacts)} contracts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
