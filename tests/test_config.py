"""Configuration loading (SPEC 11): layering, sources, the default file, rendering, paths.

Bad values, broken files and generated input are in test_config_validation.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
import stat
import tomllib
from pathlib import Path

import pytest

from chrnode.config import (
    SECTIONS,
    SPECS,
    Config,
    ConfigError,
    FleetNode,
    LoadedConfig,
    env_name,
    load,
    resolve_config_path,
    validate_data_dir,
)
from chrnode.config_file import toml_value

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "conf" / "chronara.toml"
ADDR = "0x" + "ab" * 20


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def env_text(value: object) -> str:
    """A typed value written the way an operator would put it in a CHR_ variable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def defaults(cwd: Path) -> Config:
    return dataclasses.replace(Config(), data_dir=cwd / "data")


def test_defaults_without_file_or_env(tmp_path: Path) -> None:
    loaded = load({}, None, cwd=tmp_path)
    assert loaded.config == defaults(tmp_path)
    assert loaded.sources == dict.fromkeys(SPECS, "default")
    assert loaded.path is None


def test_spec_values_fixed_by_spec() -> None:
    # SPEC 11 names these defaults; other modules and outside tests rely on them.
    config = Config()
    assert config.edge2_ports == (41046, 41047)
    assert (config.peer2_port, config.rpc_port, config.rpcs_port) == (51055, 8545, 8443)
    assert (config.max_connections, config.connection_timeout, config.worker_pool_size) == (1000, 30.0, 10)
    assert config.data_dir == Path("./data")
    assert config.max_frame_size == 1024 * 1024
    # JSON-RPC on loopback unless the operator opens it (issue 7; as geth and bitcoind).
    assert config.rpc_bind == "127.0.0.1"


def test_env_names_follow_the_rule() -> None:
    fixed = {
        "data_dir": "CHR_DATA_DIR", "rpc_port": "CHR_RPC_PORT", "rpcs_port": "CHR_RPCS_PORT",
        "edge2_ports": "CHR_EDGE2_PORTS", "peer2_port": "CHR_PEER2_PORT", "host": "CHR_HOST",
        "chain_rpc": "CHR_CHAIN_RPC", "fleet_nodes": "CHR_FLEET_NODES",
        "require_tickets": "CHR_REQUIRE_TICKETS", "max_connections": "CHR_MAX_CONNECTIONS",
        "log_level": "CHR_LOG_LEVEL",
    }  # fmt: skip
    for name, var in fixed.items():
        assert env_name(name) == var
    assert all(env_name(name) == "CHR_" + name.upper() for name in SPECS)


# One representative key per kind: (key, TOML text in the file, env text, value from file, value from env)
KINDS = [
    ("rpc_port", "[network]\nrpc_port = 9001", "9002", 9001, 9002),
    ("connection_timeout", "[performance]\nconnection_timeout = 12", "7.5", 12.0, 7.5),
    ("require_tickets", "[security]\nrequire_tickets = false", "YES", False, True),
    ("host", '[network]\nhost = "node.example.org"', "10.0.0.1", "node.example.org", "10.0.0.1"),
    ("edge2_ports", "[network]\nedge2_ports = [1000, 1001]", " 2000 , 2001 ", (1000, 1001), (2000, 2001)),
    (
        "chain_rpc", '[chain]\nchain_rpc = ["https://a.example/rpc"]', "http://b:1,https://c:2",
        ("https://a.example/rpc",), ("http://b:1", "https://c:2"),
    ),
    ("log_level", '[logging]\nlog_level = "debug"', "WARNING", "debug", "warning"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "toml", "env", "from_file", "from_env"), KINDS, ids=[k[0] for k in KINDS])
def test_precedence_default_file_env(
    tmp_path: Path, key: str, toml: str, env: str, from_file: object, from_env: object
) -> None:
    path = write(tmp_path, toml)
    var = env_name(key)

    only_file = load({}, path, cwd=tmp_path)
    assert getattr(only_file.config, key) == from_file
    assert type(getattr(only_file.config, key)) is type(from_file)
    assert only_file.sources[key] == f"file:{path}"

    both = load({var: env}, path, cwd=tmp_path)
    assert getattr(both.config, key) == from_env
    assert both.sources[key] == f"env:{var}"

    only_env = load({var: env}, None, cwd=tmp_path)
    assert getattr(only_env.config, key) == from_env
    assert only_env.sources[key] == f"env:{var}"

    # Every other key stays at its default, with its source saying so.
    others = {name for name, source in both.sources.items() if source == "default"}
    assert others == set(SPECS) - {key}


def test_data_dir_is_made_absolute_against_cwd(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage]\ndata_dir = "var/chr"')
    assert load({}, path, cwd=tmp_path).config.data_dir == tmp_path / "var" / "chr"
    loaded = load({"CHR_DATA_DIR": "/srv/chr"}, path, cwd=tmp_path)
    assert loaded.config.data_dir == Path("/srv/chr")
    assert loaded.sources["data_dir"] == "env:CHR_DATA_DIR"


def test_every_key_settable_from_its_env_var(tmp_path: Path) -> None:
    base = defaults(tmp_path)
    env = {env_name(name): env_text(getattr(base, name)) for name in SPECS}
    loaded = load(env, None, cwd=tmp_path)
    assert loaded.config == base
    assert loaded.sources == {name: f"env:{env_name(name)}" for name in SPECS}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Yes", True),
     ("false", False), ("False", False), ("0", False), ("no", False), (" NO ", False)],
)  # fmt: skip
def test_env_booleans(tmp_path: Path, text: str, expected: bool) -> None:
    assert load({"CHR_REQUIRE_TICKETS": text}, None, cwd=tmp_path).config.require_tickets is expected


def test_env_comma_lists(tmp_path: Path) -> None:
    other = "0x" + "cd" * 20
    env = {
        "CHR_FLEET_NODES": f"{ADDR}@10.0.0.2:51055, {other}@[::1]:5",
        "CHR_CHAIN_RPC": "http://127.0.0.1:8547",
        "CHR_EDGE2_PORTS": "41046",
    }
    config = load(env, None, cwd=tmp_path).config
    assert config.fleet_nodes == (f"{ADDR}@10.0.0.2:51055", f"{other}@[::1]:5")
    assert config.fleet_seed_nodes == (FleetNode(ADDR, "10.0.0.2", 51055), FleetNode(other, "::1", 5))
    assert config.fleet_seed_nodes[0].address_bytes == bytes.fromhex("ab" * 20)
    assert config.chain_rpc == ("http://127.0.0.1:8547",)
    assert config.edge2_ports == (41046,)
    # An empty variable clears a list that may be empty.
    assert load({"CHR_FLEET_NODES": ""}, None, cwd=tmp_path).config.fleet_nodes == ()


def test_port_zero_allowed_and_repeatable(tmp_path: Path) -> None:
    env = {name: "0" for name in ("CHR_RPC_PORT", "CHR_RPCS_PORT", "CHR_PEER2_PORT", "CHR_ACTOR_ADMIN_PORT")}
    config = load({**env, "CHR_EDGE2_PORTS": "0,0"}, None, cwd=tmp_path).config
    assert (config.rpc_port, config.rpcs_port, config.peer2_port, config.actor_admin_port) == (0, 0, 0, 0)
    assert config.edge2_ports == (0, 0)


def test_load_never_reads_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHR_RPC_PORT", "1234")
    monkeypatch.setenv("CHR_CONFIG", str(tmp_path / "missing.toml"))
    loaded = load({}, None, cwd=tmp_path)
    assert loaded.config.rpc_port == 8545
    assert resolve_config_path(None, {}, cwd=tmp_path) is None


def test_unknown_chr_variable_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chrnode.config"):
        load({"CHR_RPC_PROT": "1", "CHR_CONFIG": "x", "PATH": "/bin"}, None, cwd=tmp_path)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "CHR_RPC_PROT" in messages[0] and "CHR_RPC_PORT" in messages[0]


# --- the default config file -----------------------------------------------------------------------


def test_default_file_gives_the_defaults(tmp_path: Path) -> None:
    loaded = load({}, DEFAULT_FILE, cwd=tmp_path)
    assert loaded.config == defaults(tmp_path)
    assert loaded.sources == dict.fromkeys(SPECS, f"file:{DEFAULT_FILE}")


def test_default_file_documents_every_key() -> None:
    lines = DEFAULT_FILE.read_text(encoding="utf-8").splitlines()
    section = None
    seen: dict[str, str] = {}
    for number, line in enumerate(lines):
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            section = header.group(1)
            continue
        assignment = re.match(r"(\w+) = ", line)
        if assignment is None:
            continue
        key = assignment.group(1)
        comments = []
        above = number - 1
        while above >= 0 and lines[above].startswith("#"):
            comments.append(lines[above])
            above -= 1
        assert comments, f"{key} has no comment above it"
        assert env_name(key) in "\n".join(comments), f"the comment of {key} does not name {env_name(key)}"
        assert section is not None
        seen[key] = section
    assert seen == {name: spec.section for name, spec in SPECS.items()}
    assert list(dict.fromkeys(seen.values())) == list(SECTIONS)


def test_docs_list_every_key_and_variable() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in SPECS:
        assert f"| `{name}` |" in text and f"`{env_name(name)}`" in text


# --- resolve_config_path ----------------------------------------------------------------------------


def test_resolve_config_path_order(tmp_path: Path) -> None:
    assert resolve_config_path(None, {}, cwd=tmp_path) is None
    default = tmp_path / "conf" / "chronara.toml"
    default.parent.mkdir()
    default.write_text("", encoding="utf-8")
    assert resolve_config_path(None, {}, cwd=tmp_path) == default
    assert resolve_config_path(None, {"CHR_CONFIG": ""}, cwd=tmp_path) == default
    assert resolve_config_path(None, {"CHR_CONFIG": "/etc/x.toml"}, cwd=tmp_path) == Path("/etc/x.toml")
    assert resolve_config_path("cli.toml", {"CHR_CONFIG": "/etc/x.toml"}, cwd=tmp_path) == Path("cli.toml")


def test_resolve_config_path_uses_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "chronara.toml").write_text("", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    found = resolve_config_path(None, {})
    assert found is not None and found.resolve() == (tmp_path / "conf" / "chronara.toml").resolve()


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    loaded = load({}, write(tmp_path, "# nothing\n[network]\n"), cwd=tmp_path)
    assert loaded.config == defaults(tmp_path)
    assert set(loaded.sources.values()) == {"default"}


# --- render -----------------------------------------------------------------------------------------


def test_render_lists_every_key_value_and_source(tmp_path: Path) -> None:
    path = write(tmp_path, '[network]\nrpc_port = 9001\n[logging]\nlog_file = "a \\"b\\"\\\\.log"\n')
    loaded = load({"CHR_EDGE2_PORTS": "1,2", "CHR_REQUIRE_TICKETS": "no"}, path, cwd=tmp_path)
    text = loaded.render()
    assert re.search(r"^rpc_port = 9001 +# file:.*c\.toml$", text, re.MULTILINE)
    assert re.search(r"^edge2_ports = \[1, 2\] +# env:CHR_EDGE2_PORTS$", text, re.MULTILINE)
    assert re.search(r"^require_tickets = false +# env:CHR_REQUIRE_TICKETS$", text, re.MULTILINE)
    assert re.search(r"^max_restarts = 5 +# default$", text, re.MULTILINE)
    for name in SPECS:
        assert re.search(rf"^{name} = ", text, re.MULTILINE), name
    # It is TOML, grouped by section, and loading it back gives the same configuration.
    document = tomllib.loads(text)
    assert list(document) == list(SECTIONS)
    again = load({}, write(tmp_path, text, "rendered.toml"), cwd=tmp_path)
    assert again.config == loaded.config


def test_toml_value_escapes() -> None:
    assert toml_value('a"\\\n\x7f') == '"a\\"\\\\\\u000a\\u007f"'
    assert tomllib.loads("x = " + toml_value('a"\\\n\x7f\u00e9'))["x"] == 'a"\\\n\x7f\u00e9'
    assert toml_value((1, 2)) == "[1, 2]"
    assert toml_value(1e20) == "1e+20" and tomllib.loads("x = 1e+20")["x"] == 1e20


# --- Config built in code -----------------------------------------------------------------------------


def test_config_in_code_is_checked_and_normalised() -> None:
    config = Config(connection_timeout=5, log_level="DEBUG", data_dir="rel")  # type: ignore[arg-type]
    assert config.connection_timeout == 5.0 and isinstance(config.connection_timeout, float)
    assert config.log_level == "debug"
    assert config.data_dir == Path("rel")
    with pytest.raises(ConfigError) as info:
        Config(rpc_port=70000)
    assert (info.value.key, info.value.value, info.value.source) == ("rpc_port", 70000, "code")
    with pytest.raises(ConfigError) as info:
        Config(rpc_port=41900)
    assert info.value.key in ("rpc_port", "actor_admin_port")


def test_config_is_frozen_hashable_and_picklable() -> None:
    config = Config(rpc_port=0, fleet_nodes=(f"{ADDR}@h:1",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rpc_port = 1  # type: ignore[misc]
    assert hash(config) == hash(pickle.loads(pickle.dumps(config)))
    assert pickle.loads(pickle.dumps(config)) == config


def test_derived_paths(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, rpcs_cert_file="c.pem", rpcs_key_file="/etc/k.pem")
    assert config.node_key_path == tmp_path / "node.key"
    assert config.cookie_path == tmp_path / ".cookie"
    assert config.contracts_path == tmp_path / "contracts.json"
    assert config.log_path == tmp_path / "chr-node.log"
    assert config.rpcs_cert_path == tmp_path / "c.pem"
    assert config.rpcs_key_path == Path("/etc/k.pem")
    bare = Config(data_dir=tmp_path, log_file="", node_key_file="keys/n.key")
    assert bare.log_path is None and bare.rpcs_cert_path is None
    assert bare.node_key_path == tmp_path / "keys" / "n.key"


def test_loaded_config_keeps_path(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    loaded = load({}, path, cwd=tmp_path)
    assert isinstance(loaded, LoadedConfig) and loaded.path == path
    assert f"config file: {path}" in loaded.render()


# --- data dir ---------------------------------------------------------------------------------------


def test_validate_data_dir_creates_private_dir(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    validate_data_dir(target)
    assert target.is_dir()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert list(target.iterdir()) == []  # the write probe is removed
    validate_data_dir(target)  # an existing one is fine


def test_validate_data_dir_keeps_existing_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "open"
    target.mkdir()
    target.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="chrnode.config"):
        validate_data_dir(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert any("0700" in record.getMessage() for record in caplog.records)


def test_validate_data_dir_refuses_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        validate_data_dir(blocker, "env:CHR_DATA_DIR")
    assert (info.value.key, info.value.value, info.value.source) == (
        "data_dir",
        str(blocker),
        "env:CHR_DATA_DIR",
    )
    assert "file of that name exists" in str(info.value)
    with pytest.raises(ConfigError) as info:
        validate_data_dir(blocker / "sub")
    assert "parents are directories" in info.value.allowed


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a mode 0500 directory")
def test_validate_data_dir_refuses_read_only(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigError, match="writable"):
            validate_data_dir(target)
    finally:
        target.chmod(0o700)


def test_validate_data_dir_refuses_read_only_mount(tmp_path: Path) -> None:
    # Works as root too: /proc refuses new files whoever asks.
    proc = Path("/proc/self")
    if not proc.is_dir():
        pytest.skip("no /proc")
    with pytest.raises(ConfigError) as info:
        validate_data_dir(proc)
    assert info.value.key == "data_dir" and "writable" in info.value.allowed
