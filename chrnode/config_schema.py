"""The configuration schema (SPEC 11): the `Config` dataclass, the table of its keys, cross-key checks.

`Config` holds the defaults and nothing else, so it reads like the default config file. `SPECS`
gives each key its TOML section, kind, check, allowed values and help text (see
`chrnode.config_fields`); the two are checked against each other at import. The environment
variable of a key is always `CHR_` + the key in upper case. Loading lives in `chrnode.config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chrnode import config_fields as cf
from chrnode.config_fields import FieldSpec, FleetNode, Kind, RuleError
from chrnode.errors import ConfigError

SOURCE_CODE = "code"  # a Config built directly, e.g. by a test: Config(rpc_port=0)
SOURCE_DEFAULT = "default"


@dataclass(frozen=True)
class Config:
    """Every setting of the node with its default. Build one with `chrnode.config.load()`."""

    # [network]
    host: str = "127.0.0.1"
    bind_address: str = "0.0.0.0"
    edge2_ports: tuple[int, ...] = (41046, 41047)
    peer2_port: int = 51055
    rpc_port: int = 8545
    rpcs_port: int = 8443
    rpc_bind: str = "127.0.0.1"  # loopback unless the operator opens it (as geth, bitcoind)
    actor_admin_port: int = 41900
    # [storage]
    data_dir: Path = Path("./data")
    cache_size: int = 10000
    db_pool_size: int = 5
    # [performance]
    max_connections: int = 1000
    connection_timeout: float = 30.0
    idle_timeout: float = 300.0
    hello_timeout: float = 10.0
    handshake_deadline: float = 5.0
    worker_pool_size: int = 10
    max_frame_size: int = 1048576
    max_open_files: int = 0
    channel_max_members: int = 256
    channel_max_lag: int = 4194304
    channel_slow_timeout: float = 10.0
    # [security]
    require_tickets: bool = True
    rate_limiting: bool = True
    conn_rate_per_ip: float = 20.0
    max_conns_per_ip: int = 64
    max_conns_per_subnet: int = 256
    frame_rate_per_device: float = 5000.0
    ticket_timeout: float = 30.0
    ticket_grace_bytes: int = 4194304
    ticket_request_timeout: float = 15.0
    node_key_file: str = ""
    rpcs_cert_file: str = ""
    rpcs_key_file: str = ""
    max_ticket_jump: int = 10**12
    # [rpc]
    rpc_max_body: int = 1048576
    rpc_max_batch: int = 100
    rpc_max_connections: int = 1000
    rpc_header_timeout: float = 10.0
    rpc_body_timeout: float = 30.0
    # [chain]
    chain_rpc: tuple[str, ...] = ("http://127.0.0.1:8547",)
    chain_id: int = 31337
    epoch_length: int = 2592000
    chain_timeout: float = 5.0
    ticket_submit_interval: float = 3600.0
    bns_contract: str = ""
    fleet_contract: str = ""
    chai_contract: str = ""
    ticket_registry_contract: str = ""
    # [fleet]
    fleet_nodes: tuple[str, ...] = ()
    peer_max_links: int = 512  # a routing table's contacts in a network of thousands (docs/dht.md)
    peer_max_conns_per_ip: int = 16
    peer_max_conns_per_subnet: int = 64
    dht_request_timeout: float = 5.0
    location_ttl: int = 600
    # [logging]
    log_level: str = "info"
    log_file: str = "chr-node.log"
    # [supervision]
    max_restarts: int = 5
    restart_window: float = 5.0
    heartbeat_timeout: float = 10.0
    max_rebuilds: int = 3
    rebuild_window: float = 60.0

    def __post_init__(self) -> None:
        # A Config built in code (tests, tools) gets the same checks as a loaded one. Checks may
        # normalise (int -> float, "INFO" -> "info", str -> Path), which a frozen dataclass allows
        # only through object.__setattr__.
        for name, spec in SPECS.items():
            value = getattr(self, name)
            normal = check_value(name, spec, value, value, SOURCE_CODE)
            if normal != value or type(normal) is not type(value):
                object.__setattr__(self, name, normal)
        check_cross_fields(dataclasses.asdict(self), dict.fromkeys(SPECS, SOURCE_CODE))

    # Derived paths. Relative file settings are taken relative to data_dir, like log_file.
    @property
    def node_key_path(self) -> Path:
        return self.data_dir / (self.node_key_file or "node.key")

    @property
    def cookie_path(self) -> Path:
        """The admin token file (SPEC 8, 11)."""
        return self.data_dir / ".cookie"

    @property
    def contracts_path(self) -> Path:
        """Contract addresses written by tools/devchain, used where *_contract is empty."""
        return self.data_dir / "contracts.json"

    @property
    def log_path(self) -> Path | None:
        return self.data_dir / self.log_file if self.log_file else None

    @property
    def rpcs_cert_path(self) -> Path | None:
        return self.data_dir / self.rpcs_cert_file if self.rpcs_cert_file else None

    @property
    def rpcs_key_path(self) -> Path | None:
        return self.data_dir / self.rpcs_key_file if self.rpcs_key_file else None

    @property
    def fleet_seed_nodes(self) -> tuple[FleetNode, ...]:
        return tuple(cf.parse_fleet_node(entry) for entry in self.fleet_nodes)


def _spec(section: str, kind: Kind, rule: tuple[cf.Check, str], help_text: str) -> FieldSpec:
    check, allowed = rule
    return FieldSpec(section, kind, check, allowed, help_text)


_STR, _INT, _FLOAT, _BOOL = Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL
_WEEK = 7 * 86400.0  # longer timeouts overflow selector timeouts and are surely typos
_SECONDS = cf.float_range(_WEEK, "a number of seconds > 0 and at most 604800 (a week)")
_FILE = "a file path (relative to data_dir) without control characters or a leading '~'"
_PORT = cf.port()

SPECS: dict[str, FieldSpec] = {
    "host": _spec("network", _STR, cf.host(), "public host name or IP this node announces to peers"),
    "bind_address": _spec("network", _STR, cf.host(), "address the edge and peer listeners bind"),
    "edge2_ports": _spec(
        "network",
        Kind.INT_LIST,
        cf.list_of(_PORT[0], _PORT[1], min_len=1, max_len=16, repeatable=0),
        "EdgeV2 device ports (TLS, SPEC 4)",
    ),
    "peer2_port": _spec("network", _INT, _PORT, "node-to-node port (Kademlia and relay, SPEC 4, 6)"),
    "rpc_port": _spec("network", _INT, _PORT, "JSON-RPC over HTTP port; also serves /metrics and /health"),
    "rpcs_port": _spec("network", _INT, _PORT, "JSON-RPC over HTTPS port"),
    "rpc_bind": _spec("network", _STR, cf.host(), "address the JSON-RPC listeners bind"),
    "actor_admin_port": _spec(
        "network", _INT, _PORT, "Thespian admin port, always bound to 127.0.0.1 (SPEC 9)"
    ),
    "data_dir": _spec(
        "storage",
        Kind.PATH,
        cf.path(),
        "directory for the database, node key, cookie and logs; made absolute at load",
    ),
    "cache_size": _spec("storage", _INT, cf.int_range(1, 10**8), "entries kept in the L1 memory cache"),
    "db_pool_size": _spec("storage", _INT, cf.int_range(1, 256), "SQLite connections"),
    "max_connections": _spec(
        "performance", _INT, cf.int_range(1, 1_000_000), "device connections accepted at once"
    ),
    "connection_timeout": _spec("performance", _FLOAT, _SECONDS, "seconds to finish connecting and TLS"),
    "idle_timeout": _spec("performance", _FLOAT, _SECONDS, "seconds without traffic before closing"),
    "hello_timeout": _spec("performance", _FLOAT, _SECONDS, "seconds after TLS for a device's hello"),
    "handshake_deadline": _spec(
        "performance",
        _FLOAT,
        _SECONDS,
        "seconds from TCP accept to an accepted hello (TLS handshake included); then the connection is cut",
    ),
    "worker_pool_size": _spec("performance", _INT, cf.int_range(1, 256), "threads for blocking work"),
    "max_frame_size": _spec(
        "performance",
        _INT,
        cf.int_range(1024, 16 * 2**20, "a number of bytes from 1024 to 16777216 (16 MiB)"),
        "largest EdgeV2/peer frame payload accepted, in bytes (SPEC 4)",
    ),
    "max_open_files": _spec(
        "performance",
        _INT,
        cf.int_range(0, 2**31 - 1, "0 (raise the soft limit to the hard one) or a number of descriptors"),
        "soft RLIMIT_NOFILE the node sets at start; 0 = raise it to the hard limit",
    ),
    "channel_max_members": _spec(
        "performance",
        _INT,
        cf.int_range(1, 100_000),
        "devices reading one shared port (channel, flag 's') at once; more are refused busy",
    ),
    "channel_max_lag": _spec(
        "performance",
        _INT,
        # Below the 32 MiB at which a session that reads nothing is cut whole (edge/session.py).
        cf.int_range(65536, 16 * 2**20, "a number of bytes from 65536 to 16777216 (16 MiB)"),
        "bytes a channel reader may fall behind (past its connection's buffer) before it is closed too_slow",
    ),
    "channel_slow_timeout": _spec(
        "performance",
        _FLOAT,
        _SECONDS,
        "seconds a channel reader may stay unable to keep up before it is closed too_slow",
    ),
    "require_tickets": _spec("security", _BOOL, cf.boolean(), "disconnect devices that do not pay (SPEC 5)"),
    "rate_limiting": _spec(
        "security", _BOOL, cf.boolean(), "apply conn_rate_per_ip and frame_rate_per_device"
    ),
    "conn_rate_per_ip": _spec(
        "security",
        _FLOAT,
        cf.float_range(1e6, "a rate > 0 and at most 1000000"),
        "new connections per second per IP address (burst 2x)",
    ),
    "max_conns_per_ip": _spec(
        "security",
        _INT,
        cf.int_range(0, 1_000_000, "0 (no cap) or a number of connections up to 1000000"),
        "concurrent device connections from one IP address; 0 = no cap",
    ),
    "max_conns_per_subnet": _spec(
        "security",
        _INT,
        cf.int_range(0, 1_000_000, "0 (no cap) or a number of connections up to 1000000"),
        "concurrent device connections from one /24 (IPv4) or /64 (IPv6); 0 = no cap",
    ),
    "frame_rate_per_device": _spec(
        "security",
        _FLOAT,
        cf.float_range(1e9, "a rate > 0 and at most 1000000000"),
        "frames per second per device (burst 2x)",
    ),
    "ticket_timeout": _spec(
        "security", _FLOAT, _SECONDS, "seconds after hello to send a valid ticket (SPEC 5)"
    ),
    "ticket_grace_bytes": _spec(
        "security",
        _INT,
        cf.int_range(0, 2**63 - 1),
        "bytes a device may use beyond its tickets before it is sent ticket_request",
    ),
    "ticket_request_timeout": _spec(
        "security", _FLOAT, _SECONDS, "seconds to answer a ticket_request before disconnection"
    ),
    "node_key_file": _spec(
        "security",
        _STR,
        cf.plain_string(_FILE + ", or empty for <data_dir>/node.key"),
        "node secp256k1 key file; empty = <data_dir>/node.key, made on first start (SPEC 2)",
    ),
    "rpcs_cert_file": _spec(
        "security",
        _STR,
        cf.plain_string(_FILE + ", or empty for a self-signed certificate"),
        "HTTPS certificate (PEM); empty = self-signed, made on first start (SPEC 3)",
    ),
    "rpcs_key_file": _spec(
        "security",
        _STR,
        cf.plain_string(_FILE + ", or empty for a self-signed certificate"),
        "HTTPS private key (PEM); set together with rpcs_cert_file",
    ),
    "max_ticket_jump": _spec(
        "security",
        _INT,
        cf.int_range(1, 2**256 - 1, "a number of bytes from 1 to 2**256-1"),
        "largest rise of total_bytes accepted in one ticket, in bytes (SPEC 5 step 5)",
    ),
    "rpc_max_body": _spec(
        "rpc",
        _INT,
        cf.int_range(1024, 64 * 2**20, "a number of bytes from 1024 to 67108864 (64 MiB)"),
        "largest JSON-RPC request body, in bytes",
    ),
    "rpc_max_batch": _spec("rpc", _INT, cf.int_range(1, 10000), "most calls in one JSON-RPC batch"),
    "rpc_max_connections": _spec(
        "rpc", _INT, cf.int_range(1, 1_000_000), "concurrent connections per JSON-RPC port"
    ),
    "rpc_header_timeout": _spec(
        "rpc", _FLOAT, _SECONDS, "seconds for a request's headers to arrive (also the keep-alive idle limit)"
    ),
    "rpc_body_timeout": _spec("rpc", _FLOAT, _SECONDS, "seconds for a request's body to arrive"),
    "chain_rpc": _spec(
        "chain",
        Kind.STR_LIST,
        cf.list_of(cf.url_check, "an http(s) URL", min_len=1, max_len=16),
        "Ethereum JSON-RPC endpoints, tried in order with failover (SPEC 7)",
    ),
    "chain_id": _spec("chain", _INT, cf.int_range(1, 2**63 - 1), "chain id the endpoints must serve"),
    "epoch_length": _spec("chain", _INT, cf.int_range(1, 2**32), "seconds per ticket epoch (SPEC 5)"),
    "chain_timeout": _spec(
        "chain",
        _FLOAT,
        cf.float_range(600.0, "a number of seconds > 0 and at most 600"),
        "seconds to wait for one chain endpoint before failing over",
    ),
    "ticket_submit_interval": _spec(
        "chain",
        _FLOAT,
        _SECONDS,
        "seconds between submissions of the previous epoch's best tickets to the ticket registry",
    ),
    "bns_contract": _spec("chain", _STR, cf.address(), "BNS registry contract address"),
    "fleet_contract": _spec("chain", _STR, cf.address(), "fleet contract address (the node's default fleet)"),
    "chai_contract": _spec("chain", _STR, cf.address(), "CHAI ERC-20 token contract address"),
    "ticket_registry_contract": _spec("chain", _STR, cf.address(), "ticket registry contract address"),
    "fleet_nodes": _spec(
        "fleet",
        Kind.STR_LIST,
        cf.list_of(cf.fleet_node_check, cf.FLEET_NODE_ALLOWED, min_len=0, max_len=1000),
        "seed nodes to join the network through",
    ),
    "peer_max_links": _spec(
        "fleet", _INT, cf.int_range(1, 10000), "peer links kept at once (fleet nodes are always kept)"
    ),
    "peer_max_conns_per_ip": _spec(
        "fleet",
        _INT,
        cf.int_range(0, 1_000_000, "0 (no cap) or a number of connections up to 1000000"),
        "concurrent peer-port connections from one IP address, proven or not; 0 = no cap",
    ),
    "peer_max_conns_per_subnet": _spec(
        "fleet",
        _INT,
        cf.int_range(0, 1_000_000, "0 (no cap) or a number of connections up to 1000000"),
        "concurrent peer-port connections from one /24 (IPv4) or /64 (IPv6); 0 = no cap",
    ),
    "dht_request_timeout": _spec(
        "fleet",
        _FLOAT,
        cf.float_range(60.0, "a number of seconds > 0 and at most 60"),
        "seconds before an unanswered DHT request to a peer counts as failed",
    ),
    "location_ttl": _spec(
        "fleet",
        _INT,
        cf.int_range(10, 7200),
        "seconds a device's location lives after its last republish (its lapse after the device left)",
    ),
    "log_level": _spec("logging", _STR, cf.choice(("debug", "info", "warning", "error")), "log level"),
    "log_file": _spec(
        "logging",
        _STR,
        cf.plain_string(_FILE + ", or empty for no log file"),
        "log file, relative to data_dir; empty = log to stderr only",
    ),
    "max_restarts": _spec(
        "supervision", _INT, cf.int_range(0, 10000), "restarts allowed within restart_window"
    ),
    "restart_window": _spec(
        "supervision",
        _FLOAT,
        cf.float_range(86400.0, "a number of seconds > 0 and at most 86400"),
        "seconds over which max_restarts is counted (SPEC 9)",
    ),
    "heartbeat_timeout": _spec(
        "supervision",
        _FLOAT,
        cf.float_range(3600.0, "a number of seconds > 0 and at most 3600"),
        "seconds a child actor may leave its supervisor's heartbeat unanswered before it is "
        "reported hung, killed and restarted",
    ),
    "max_rebuilds": _spec(
        "supervision",
        _INT,
        cf.int_range(0, 1000),
        "rebuilds of the whole actor system (root supervisor, Thespian admin or logger died) "
        "allowed within rebuild_window before the daemon exits with status 1",
    ),
    "rebuild_window": _spec(
        "supervision",
        _FLOAT,
        cf.float_range(86400.0, "a number of seconds > 0 and at most 86400"),
        "seconds over which max_rebuilds is counted",
    ),
}

# Keys grouped by section, in the order of the table (which is the order of the config file).
SECTIONS: dict[str, tuple[str, ...]] = {}
for _name, _field_spec in SPECS.items():
    SECTIONS[_field_spec.section] = (*SECTIONS.get(_field_spec.section, ()), _name)

_FIELD_NAMES = [f.name for f in dataclasses.fields(Config)]
if _FIELD_NAMES != list(SPECS):  # a key added to one but not the other is a programming error
    raise RuntimeError(f"Config fields and SPECS differ: {sorted(set(_FIELD_NAMES) ^ set(SPECS))}")


def check_value(name: str, spec: FieldSpec, value: Any, shown: object, source: str) -> Any:
    """Run the key's check; a failure becomes a ConfigError showing `shown` (the raw value)."""
    try:
        return spec.check(value)
    except RuleError as exc:
        raise ConfigError(name, shown, source, exc.allowed) from exc


def check_cross_fields(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Checks that involve more than one key: no port used twice, HTTPS cert and key set together."""
    seen: dict[int, str] = {}
    # Port 0 means "pick a free one", so zeros never collide. actor_admin_port is included:
    # 127.0.0.1:N and 0.0.0.0:N collide on Linux just like two identical listeners do.
    for name in ("rpc_port", "rpcs_port", "edge2_ports", "peer2_port", "actor_admin_port"):
        value = values[name]
        for number in value if isinstance(value, tuple) else (value,):
            if number == 0:
                continue
            if number in seen:
                other = seen[number]
                # Blame the key the operator set rather than one left at its default.
                blamed, kept = (other, name) if sources[name] == SOURCE_DEFAULT else (name, other)
                allowed = f"a port not already used by {kept} (from {sources[kept]})"
                raise ConfigError(blamed, number, sources[blamed], allowed)
            seen[number] = name
    if bool(values["rpcs_cert_file"]) != bool(values["rpcs_key_file"]):
        given, missing = (
            ("rpcs_cert_file", "rpcs_key_file")
            if values["rpcs_cert_file"]
            else ("rpcs_key_file", "rpcs_cert_file")
        )
        allowed = f"a file path too, since {given} is set (from {sources[given]}); or both empty"
        raise ConfigError(missing, values[missing], sources[missing], allowed)
