"""Configuration validation (SPEC 11): every bad value is refused with a ConfigError naming key,
value and source; broken or unknown file content is refused; generated input raises nothing else."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrnode.config import SECTIONS, SPECS, ConfigError, ConfigFileError, env_name, load
from chrnode.config_file import toml_value

ADDR = "0x" + "ab" * 20

# (key, bad text for its env var, a word the message must contain)
BAD_ENV = [
    ("rpc_port", "70000", "1-65535"),
    ("rpc_port", "-1", "1-65535"),
    ("rpc_port", "abc", "digits"),
    ("rpc_port", "80.5", "digits"),
    ("rpc_port", "", "digits"),
    ("rpc_port", "8_545", "digits"),
    ("rpc_port", "\u0661\u0662", "digits"),  # Arabic-Indic digits, which int() would take
    ("rpcs_port", "65536", "1-65535"),
    ("peer2_port", "1e3", "digits"),
    ("actor_admin_port", "99999", "1-65535"),
    ("edge2_ports", "41046,", "empty item"),
    ("edge2_ports", "", "1 to 16"),
    ("edge2_ports", "1,2,1", "repeated"),
    ("edge2_ports", "1,70000", "70000"),
    ("edge2_ports", ",".join(str(port) for port in range(1000, 1017)), "1 to 16"),
    ("max_connections", "0", "from 1"),
    ("max_connections", "-5", "from 1"),
    ("cache_size", "1" + "0" * 5000, "digits"),
    ("db_pool_size", "1000", "256"),
    ("connection_timeout", "0", "> 0"),
    ("connection_timeout", "-1", "> 0"),
    ("connection_timeout", "nan", "decimal"),
    ("idle_timeout", "inf", "decimal"),
    ("hello_timeout", "1e999", "> 0"),
    ("hello_timeout", "ten", "decimal"),
    ("restart_window", "100000", "86400"),
    ("max_frame_size", "1023", "1024"),
    ("max_frame_size", str(16 * 2**20 + 1), "16 MiB"),
    ("rpc_max_body", "10", "1024"),
    ("ticket_grace_bytes", "-1", "from 0"),
    ("max_ticket_jump", "0", "from 1"),
    ("chain_id", "0", "from 1"),
    ("require_tickets", "maybe", "true/false"),
    ("rate_limiting", "2", "true/false"),
    ("log_level", "verbose", "debug, info, warning, error"),
    ("log_level", "", "debug"),
    ("chain_rpc", "ftp://x", "http://"),
    ("chain_rpc", "http://", "http://"),
    ("chain_rpc", "localhost:8545", "http://"),
    ("chain_rpc", "http://a b", "http://"),
    ("chain_rpc", "http://a:99999", "http://"),
    ("chain_rpc", "http://[::1", "http://"),
    ("chain_rpc", "", "1 to 16"),
    ("chain_rpc", "http://a,http://a", "repeated"),
    ("bns_contract", "0x123", "40 hex"),
    ("fleet_contract", "0x" + "g" * 40, "40 hex"),
    ("chai_contract", "ab" * 20, "40 hex"),
    ("ticket_registry_contract", ADDR + "00", "40 hex"),
    ("fleet_nodes", "0xabc@h:1", "0x<40 hex digits>@host:port"),
    ("fleet_nodes", f"{ADDR}@host", "host:port"),
    ("fleet_nodes", f"{ADDR}@host:0", "1-65535"),
    ("fleet_nodes", f"{ADDR}@host:70000", "1-65535"),
    ("fleet_nodes", f"{ADDR}@[zz]:1", "IPv6"),
    ("fleet_nodes", f"{ADDR}@bad host:1", "host:port"),
    ("fleet_nodes", f"{ADDR}@10.0.0.300:1", "DNS name"),
    ("fleet_nodes", f"{ADDR}@a:1,{ADDR}@a:1", "repeated"),
    ("host", "bad host", "IP address"),
    ("host", "", "IP address"),
    ("host", "-lead.example", "IP address"),
    ("bind_address", "999.1.1.1", "IP address"),
    ("rpc_bind", "a" * 64, "IP address"),
    ("data_dir", "", "non-empty"),
    ("data_dir", "~/chr", "'~'"),
    ("log_file", "~/x.log", "'~'"),
    ("node_key_file", "a\x01b", "control"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "text", "hint"), BAD_ENV, ids=[f"{k}={t[:20]!r}" for k, t, _ in BAD_ENV])
def test_bad_env_value_names_key_value_source(tmp_path: Path, key: str, text: str, hint: str) -> None:
    var = env_name(key)
    with pytest.raises(ConfigError) as info:
        load({var: text}, None, cwd=tmp_path)
    error = info.value
    assert (error.key, error.value, error.source) == (key, text, f"env:{var}")
    message = str(error)
    assert repr(key) in message and f"env:{var}" in message and repr(text)[:30] in message
    assert hint in error.allowed, error.allowed


# (TOML document, key named by the error, a word the message must contain)
BAD_FILE = [
    ('[network]\nrpc_port = "8545"', "rpc_port", "TOML integer"),
    ("[network]\nrpc_port = true", "rpc_port", "TOML integer"),
    ("[network]\nrpc_port = 8545.0", "rpc_port", "TOML integer"),
    ("[network]\nrpc_port = 0x10000", "rpc_port", "1-65535"),
    ('[security]\nrequire_tickets = "true"', "require_tickets", "boolean"),
    ("[security]\nrequire_tickets = 1", "require_tickets", "boolean"),
    ("[network]\nedge2_ports = 41046", "edge2_ports", "array of integers"),
    ("[network]\nedge2_ports = [true]", "edge2_ports", "array of integers"),
    ("[network]\nedge2_ports = []", "edge2_ports", "1 to 16"),
    ('[performance]\nconnection_timeout = "30"', "connection_timeout", "TOML number"),
    ("[performance]\nconnection_timeout = nan", "connection_timeout", "> 0"),
    ("[performance]\nidle_timeout = inf", "idle_timeout", "> 0"),
    ("[performance]\nidle_timeout = false", "idle_timeout", "TOML number"),
    ('[chain]\nchain_rpc = "http://a:1"', "chain_rpc", "array of strings"),
    ("[chain]\nchain_rpc = [1]", "chain_rpc", "array of strings"),
    ('[chain]\nchain_rpc = ["file:///x"]', "chain_rpc", "http://"),
    ("[storage]\ndata_dir = 5", "data_dir", "TOML string"),
    ('[storage]\ndata_dir = ""', "data_dir", "non-empty"),
    ('[logging]\nlog_level = "LOUD"', "log_level", "debug"),
    ('[logging]\nlog_file = "a\\u0000b"', "log_file", "control"),
    ('[fleet]\nfleet_nodes = ["nope"]', "fleet_nodes", "0x<40 hex digits>"),
    ("[fleet]\nfleet_nodes = [[]]", "fleet_nodes", "array of strings"),
    ("[chain]\nchain_id = 2022-01-01", "chain_id", "TOML integer"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("toml", "key", "hint"), BAD_FILE, ids=[t.split("\n")[1][:30] for t, _, _ in BAD_FILE]
)
def test_bad_file_value_names_key_value_source(tmp_path: Path, toml: str, key: str, hint: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load({}, path, cwd=tmp_path)
    error = info.value
    assert (error.key, error.source) == (key, f"file:{path}")
    assert hint in error.allowed, error.allowed
    assert repr(key) in str(error) and str(path) in str(error)


def test_env_overrides_a_bad_file_value_only_if_the_file_is_valid(tmp_path: Path) -> None:
    # The file is checked on its own: a bad value there is an error even if env would override it.
    path = tmp_path / "c.toml"
    path.write_text("[network]\nrpc_port = 70000\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load({"CHR_RPC_PORT": "9000"}, path, cwd=tmp_path)
    assert info.value.source == f"file:{path}"


@pytest.mark.parametrize(
    ("env", "blamed", "kept"),
    [
        ({"CHR_RPC_PORT": "8443"}, "rpc_port", "rpcs_port"),
        ({"CHR_PEER2_PORT": "41047"}, "peer2_port", "edge2_ports"),
        ({"CHR_EDGE2_PORTS": "8545"}, "edge2_ports", "rpc_port"),
        ({"CHR_ACTOR_ADMIN_PORT": "51055"}, "actor_admin_port", "peer2_port"),
        ({"CHR_RPC_PORT": "7000", "CHR_RPCS_PORT": "7000"}, "rpcs_port", "rpc_port"),
    ],
)
def test_duplicate_ports(tmp_path: Path, env: dict[str, str], blamed: str, kept: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env, None, cwd=tmp_path)
    assert info.value.key == blamed
    assert info.value.source == f"env:{env_name(blamed)}"
    assert kept in info.value.allowed


def test_cert_and_key_set_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load({"CHR_RPCS_CERT_FILE": "c.pem"}, None, cwd=tmp_path)
    assert info.value.key == "rpcs_key_file" and "CHR_RPCS_CERT_FILE" in info.value.allowed
    with pytest.raises(ConfigError) as info:
        load({"CHR_RPCS_KEY_FILE": "k.pem"}, None, cwd=tmp_path)
    assert info.value.key == "rpcs_cert_file"
    both = load({"CHR_RPCS_CERT_FILE": "c.pem", "CHR_RPCS_KEY_FILE": "k.pem"}, None, cwd=tmp_path)
    assert both.config.rpcs_cert_path == tmp_path / "data" / "c.pem"


# --- the file itself --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "line", "column"),
    [
        ("[network]\nrpc_port = \n", 2, 12),
        ("[network]\nrpc_port = 1\nrpc_port = 2\n", 3, 13),
        ("[network\n", 1, 9),
        ('# ok\n\n[chain]\nchain_rpc = ["http://a:1",\n', 5, 1),
        ('[network]\nhost = "abc', 2, 12),
    ],
)
def test_toml_syntax_error_names_file_line_column(tmp_path: Path, toml: str, line: int, column: int) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigFileError) as info:
        load({}, path, cwd=tmp_path)
    error = info.value
    assert (error.line, error.column) == (line, column)
    assert str(error).startswith(f"config file {path}, line {line}, column {column}: TOML syntax error")
    assert isinstance(error, ConfigError) and error.source == f"file:{path}"


def test_missing_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="does not exist"):
        load({}, tmp_path / "nope.toml", cwd=tmp_path)
    with pytest.raises(ConfigFileError, match="directory"):
        load({}, tmp_path, cwd=tmp_path)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[network]\n# caf\xe9\nhost = "a"\n')
    with pytest.raises(ConfigFileError, match="UTF-8") as info:
        load({}, latin, cwd=tmp_path)
    assert info.value.line == 2


def test_unknown_key_lists_known_keys_of_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[network]\nrpc_prot = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load({}, path, cwd=tmp_path)
    error = info.value
    assert (error.key, error.value, error.source) == ("network.rpc_prot", 1, f"file:{path}")
    assert all(name in error.allowed for name in SECTIONS["network"])
    assert "cache_size" not in error.allowed


def test_key_in_wrong_section_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[storage]\nrpc_port = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load({}, path, cwd=tmp_path)
    assert info.value.key == "storage.rpc_port" and "data_dir" in info.value.allowed


def test_unknown_section_lists_sections(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[netwrk]\nhost = 'a'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load({}, path, cwd=tmp_path)
    assert info.value.key == "netwrk"
    assert all(f"[{section}]" in info.value.allowed for section in SECTIONS)


def test_top_level_key_and_non_table_section(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("rpc_port = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load({}, path, cwd=tmp_path)
    assert info.value.key == "rpc_port" and "[network]" in info.value.allowed
    path.write_text("network = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load({}, path, cwd=tmp_path)
    assert info.value.key == "network" and "table" in info.value.allowed


# --- generated input --------------------------------------------------------------------------------

ENV_VARS = [env_name(name) for name in SPECS]
NASTY = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(string.digits + ",.:@[]-+eE x0")), max_size=60
)


@settings(max_examples=400, deadline=None)
@given(env=st.dictionaries(st.sampled_from(ENV_VARS), NASTY, max_size=4))
def test_arbitrary_env_strings_raise_only_config_error(env: dict[str, str]) -> None:
    try:
        loaded = load(env, None, cwd=Path("/nonexistent-cwd"))
    except ConfigError as error:
        # A cross-key error may blame a key left at its default (the cert whose key is missing).
        assert error.key in SPECS and (error.source.startswith("env:CHR_") or error.source == "default")
    else:
        for name, source in loaded.sources.items():
            assert (source == f"env:{env_name(name)}") == (env_name(name) in env)


TOML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
).filter(lambda value: value is not None)
_KEYS = sorted({*SPECS, "bogus"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    document=st.dictionaries(
        st.sampled_from([*SECTIONS, "extra"]),
        st.dictionaries(st.sampled_from(_KEYS), TOML_VALUES, max_size=3),
        max_size=3,
    )
)
def test_arbitrary_toml_values_raise_only_config_error(document: dict[str, dict[str, object]]) -> None:
    lines = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            try:
                lines.append(f"{key} = {toml_value(value)}")
            except (ValueError, TypeError):  # nan/inf or None have no TOML literal here
                lines.append(f"{key} = nan")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            load({}, path, cwd=Path(directory))
        except ConfigError as error:
            assert error.source == f"file:{path}"


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_file_bytes_raise_only_config_error(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "c.toml"
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        else:
            path.write_bytes(text)
        try:
            load({}, path, cwd=Path(directory))
        except ConfigError as error:
            assert error.source == f"file:{path}"
