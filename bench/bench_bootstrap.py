"""A second `tools/bootstrap` (what every `tools/run` and `tools/test` starts with), in seconds.

On a scratch copy of the checkout with its own .venv and node_modules (never this checkout's):
one first bootstrap, then `--runs` more, each timed. The baseline, measured in the same run on
the same copy, is what bootstrap did on every run before its stamps: `pip install -e ".[dev]"`
(after `pip install --upgrade pip`) and `npm ci`.

    .venv/bin/python bench/bench_bootstrap.py [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chrnode.testing.checkout import clean_env, scratch_copy


def timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=clean_env(), check=True, capture_output=True, timeout=900)
    return time.perf_counter() - started


def summary(name: str, seconds: list[float]) -> str:
    median, low, high = statistics.median(seconds), min(seconds), max(seconds)
    return f"{name:<40} median {median:8.2f} s  range {low:.2f}-{high:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = scratch_copy(Path(tmp) / "checkout")
        bootstrap = [str(root / "tools" / "bootstrap")]
        print(f"first bootstrap: {timed(bootstrap, root):.1f} s")
        again = [timed(bootstrap, root) for _ in range(args.runs)]
        pip = str(root / ".venv" / "bin" / "python")
        baseline = []
        for _ in range(args.runs):
            seconds = timed([pip, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], root)
            seconds += timed([pip, "-m", "pip", "install", "--quiet", "-e", ".[dev]"], root)
            if shutil.which("npm"):
                seconds += timed(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], root)
            baseline.append(seconds)
        print(summary("second bootstrap (stamps up to date)", again))
        print(summary("baseline: reinstall (pip -e, npm ci)", baseline))
        print(f"ratio: {statistics.median(again) / statistics.median(baseline):.4f} of the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
