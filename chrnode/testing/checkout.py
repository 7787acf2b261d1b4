"""A scratch copy of this checkout, for tests and benchmarks of the set-up tools (tools/bootstrap,
tools/run) that must never touch the real .venv or node_modules (worktrees may share them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# The interpreter the current venv was made from: a scratch .venv is made with it, as a user's is.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def scratch_copy(target: Path, root: Path = REPO_ROOT) -> Path:
    """The checkout's tracked files as they are in the working tree (uncommitted edits included),
    without .venv, node_modules, data or anything else untracked."""
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True, timeout=60
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = root / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def clean_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment without this process's venv, node settings (CHR_*) or PYTHON* variables;
    PYTHON names the base interpreter for tools/bootstrap."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(("CHR_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PYTHON"] = BASE_PYTHON
    env.update(extra)
    return env
