"""Field kinds, parsers and validators for the configuration (SPEC 11).

Pure functions, no I/O. Each configuration key of `chrnode.config.Config` carries a `FieldSpec` in its
dataclass metadata: the TOML section it lives in, its kind (how a TOML value or an environment string
becomes a Python value), a check that validates and normalises the typed value, the description of
what is allowed (used in error messages and docs) and a help text (used for the documented config
file). A check raises `RuleError` with a specific reason; `chrnode.config` turns that into a
`ConfigError` that also names the key, the value and where it came from.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "CHR_"


def env_name(field_name: str) -> str:
    """The environment variable of a key: always `CHR_` + the upper-cased field name (SPEC 11)."""
    return ENV_PREFIX + field_name.upper()


class RuleError(ValueError):
    """A value breaks a rule; `allowed` says what would have been accepted (internal to config)."""

    def __init__(self, allowed: str) -> None:
        self.allowed = allowed
        super().__init__(allowed)


class Kind(enum.Enum):
    """How a raw value (TOML or environment string) is turned into a typed value."""

    STR = "string"
    INT = "integer"
    FLOAT = "number"
    BOOL = "boolean"
    PATH = "path"
    INT_LIST = "list of integers"
    STR_LIST = "list of strings"


Check = Callable[[Any], Any]


@dataclass(frozen=True)
class FieldSpec:
    """Everything known about one key besides its default."""

    section: str
    kind: Kind
    check: Check
    allowed: str
    help: str


# ---------------------------------------------------------------------------------------------------
# Parsing raw values into typed ones.

_INT_RE = re.compile(r"[+-]?[0-9]+")
# Plain decimal notation only: no "nan", "inf", hex or underscores, which float() would take.
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _int_from_text(text: str) -> int:
    # str.isdigit() and int() accept non-ASCII digits and underscores; an operator's "8_545" or
    # Arabic-Indic digits are far more likely a mistake than intended, so only [0-9] is taken.
    if not _INT_RE.fullmatch(text):
        raise RuleError("an integer of the digits 0-9")
    try:
        return int(text)
    except ValueError as exc:  # more than sys.get_int_max_str_digits() digits
        raise RuleError("an integer of at most a few hundred digits") from exc


def _float_from_text(text: str) -> float:
    if not _FLOAT_RE.fullmatch(text):
        raise RuleError("a decimal number such as 30 or 2.5")
    return float(text)


def _split_list(text: str) -> list[str]:
    # An empty variable means an empty list (e.g. CHR_FLEET_NODES= to clear the seed nodes);
    # otherwise every comma-separated item must be non-empty so "a,,b" or "a," is caught.
    if text == "":
        return []
    items = [item.strip() for item in text.split(",")]
    if any(item == "" for item in items):
        raise RuleError("a comma-separated list with no empty item")
    return items


def from_env(kind: Kind, text: str) -> Any:
    """Turn an environment string into a value of `kind` (surrounding whitespace is ignored)."""
    text = text.strip()
    if kind is Kind.STR:
        return text
    if kind is Kind.PATH:
        return Path(text) if text else text  # "" stays a str so the check can refuse it
    if kind is Kind.INT:
        return _int_from_text(text)
    if kind is Kind.FLOAT:
        return _float_from_text(text)
    if kind is Kind.BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise RuleError("a boolean: true/false, yes/no or 1/0 (any case)")
    if kind is Kind.INT_LIST:
        return tuple(_int_from_text(item) for item in _split_list(text))
    return tuple(_split_list(text))  # Kind.STR_LIST


def from_toml(kind: Kind, value: object) -> Any:
    """Turn a value parsed by tomllib into a value of `kind`; TOML types must match exactly."""
    # bool is a subclass of int in Python; `port = true` must not become port 1.
    if kind is Kind.STR and isinstance(value, str):
        return value
    if kind is Kind.PATH and isinstance(value, str):
        return Path(value) if value else value
    if kind is Kind.INT and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is Kind.FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is Kind.BOOL and isinstance(value, bool):
        return value
    if kind is Kind.INT_LIST and isinstance(value, list):
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return tuple(value)
        raise RuleError("a TOML array of integers, e.g. [41046, 41047]")
    if kind is Kind.STR_LIST and isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            return tuple(value)
        raise RuleError('a TOML array of strings, e.g. ["a", "b"]')
    raise RuleError(f"a TOML {_TOML_TYPE[kind]}")


_TOML_TYPE = {
    Kind.STR: "string",
    Kind.PATH: "string (a path)",
    Kind.INT: "integer",
    Kind.FLOAT: "number (integer or float)",
    Kind.BOOL: "boolean (true or false)",
    Kind.INT_LIST: "array of integers",
    Kind.STR_LIST: "array of strings",
}


# ---------------------------------------------------------------------------------------------------
# Checks on typed values. Each returns the (possibly normalised) value or raises RuleError.


def _require(value: object, types: type | tuple[type, ...], what: str) -> None:
    # bool is a subclass of int: True must not pass as the integer 1 unless bool is asked for.
    wanted = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
        raise RuleError(what)


def int_range(low: int, high: int, allowed: str | None = None) -> tuple[Check, str]:
    """An integer in [low, high]."""
    text = allowed or f"an integer from {low} to {high}"

    def check(value: object) -> int:
        _require(value, int, text)
        assert isinstance(value, int)
        if not low <= value <= high:
            raise RuleError(text)
        return value

    return check, text


def port() -> tuple[Check, str]:
    """A TCP port; 0 asks the OS for a free one (tests run every listener on port 0)."""
    return int_range(0, 65535, "a TCP port 1-65535, or 0 to pick a free port")


def float_range(high: float, allowed: str) -> tuple[Check, str]:
    """A finite number greater than 0 and at most `high`."""

    def check(value: object) -> float:
        _require(value, (int, float), allowed)
        assert isinstance(value, int | float)
        number = float(value)
        if not (math.isfinite(number) and 0.0 < number <= high):
            raise RuleError(allowed)
        return number

    return check, allowed


def boolean() -> tuple[Check, str]:
    text = "true or false"

    def check(value: object) -> bool:
        if not isinstance(value, bool):
            raise RuleError(text)
        return value

    return check, text


def choice(options: tuple[str, ...]) -> tuple[Check, str]:
    """One of `options`, case-insensitive, normalised to lower case."""
    text = "one of " + ", ".join(options)

    def check(value: object) -> str:
        _require(value, str, text)
        assert isinstance(value, str)
        if value.lower() not in options:
            raise RuleError(text)
        return value.lower()

    return check, text


_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def valid_host(value: str) -> bool:
    """An IP address or a DNS name (underscores allowed: Docker service names use them)."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    if not value or len(value) > 253:
        return False
    labels = value.split(".")
    # An all-digit last label is no DNS name: "10.0.0.256" is a mistyped address, not a host.
    return all(_LABEL_RE.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def host() -> tuple[Check, str]:
    text = "an IP address or a DNS host name"

    def check(value: object) -> str:
        _require(value, str, text)
        assert isinstance(value, str)
        if not valid_host(value):
            raise RuleError(text)
        return value

    return check, text


def _no_control(value: str) -> bool:
    return not any(ord(char) < 32 or ord(char) == 127 for char in value)


def path() -> tuple[Check, str]:
    """A directory or file path; "~" is refused because expanding it would read $HOME."""
    text = "a non-empty path, absolute or relative to the working directory, not starting with '~'"

    def check(value: object) -> Path:
        _require(value, (str, Path), text)
        raw = str(value)
        if value == "" or raw.startswith("~") or not _no_control(raw):
            raise RuleError(text)
        return value if isinstance(value, Path) else Path(raw)

    return check, text


_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


def address() -> tuple[Check, str]:
    """An Ethereum address, 0x + 40 hex digits (SPEC 2), or empty."""
    text = "an address: 0x followed by 40 hex digits, or empty to read it from <data_dir>/contracts.json"

    def check(value: object) -> str:
        _require(value, str, text)
        assert isinstance(value, str)
        if value and not _ADDRESS_RE.fullmatch(value):
            raise RuleError(text)
        return value

    return check, text


def http_url(value: str) -> bool:
    """True for an absolute http:// or https:// URL with a host and a valid port."""
    if not value or not _no_control(value) or " " in value:
        return False
    try:
        parts = urlsplit(value)
        port_number = parts.port  # raises ValueError for a bad port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    return port_number != 0 and valid_host(parts.hostname)  # hostname drops IPv6 brackets


@dataclass(frozen=True)
class FleetNode:
    """A seed node from `fleet_nodes`: `0x<address>@host:peer_port` (SPEC 11)."""

    address: str  # 0x + 40 lower-case hex
    host: str  # without IPv6 brackets
    port: int

    @property
    def address_bytes(self) -> bytes:
        return bytes.fromhex(self.address[2:])


_FLEET_RE = re.compile(r"(0x[0-9a-fA-F]{40})@(\[[^\]]*\]|[^@:\[\]]+):([0-9]{1,5})")
FLEET_NODE_ALLOWED = "0x<40 hex digits>@host:port, e.g. 0x" + "ab" * 20 + "@10.0.0.2:51055"


def parse_fleet_node(text: str) -> FleetNode:
    """Parse one `fleet_nodes` entry; raises RuleError naming the expected format."""
    match = _FLEET_RE.fullmatch(text)
    if match is None:
        raise RuleError(FLEET_NODE_ALLOWED)
    addr, host_text, port_text = match.groups()
    if host_text.startswith("["):
        host_text = host_text[1:-1]
        try:
            ipaddress.IPv6Address(host_text)
        except ValueError as exc:
            raise RuleError(FLEET_NODE_ALLOWED + " (bracketed hosts must be IPv6 addresses)") from exc
    elif not valid_host(host_text):
        raise RuleError(FLEET_NODE_ALLOWED + " (the host is not an IP address or DNS name)")
    port_number = int(port_text)
    if not 1 <= port_number <= 65535:
        raise RuleError(FLEET_NODE_ALLOWED + " (port 1-65535)")
    return FleetNode(addr.lower(), host_text, port_number)


def list_of(
    item: Callable[[Any], Any],
    item_allowed: str,
    *,
    min_len: int,
    max_len: int,
    repeatable: object = None,
) -> tuple[Check, str]:
    """A tuple of `min_len`..`max_len` distinct items each passing `item`; `repeatable` may repeat."""
    text = f"a list of {min_len} to {max_len} items, each {item_allowed}, no duplicates"
    if repeatable is not None:
        text += f" except {repeatable!r}"

    def check(value: object) -> tuple[Any, ...]:
        _require(value, tuple, text)
        assert isinstance(value, tuple)
        if not min_len <= len(value) <= max_len:
            raise RuleError(text)
        items = []
        for element in value:
            try:
                items.append(item(element))
            except RuleError as exc:
                raise RuleError(f"{text}; item {element!r} is not {exc.allowed}") from exc
            if items[-1] != repeatable and items[-1] in items[:-1]:
                raise RuleError(f"{text}; {element!r} is repeated")
        return tuple(items)

    return check, text


def url_check(value: object) -> str:
    if not isinstance(value, str) or not http_url(value):
        raise RuleError("an http:// or https:// URL with a host")
    return value


def fleet_node_check(value: object) -> str:
    if not isinstance(value, str):
        raise RuleError(FLEET_NODE_ALLOWED)
    parse_fleet_node(value)
    return value


def plain_string(allowed: str) -> tuple[Check, str]:
    """Any string without control characters or a leading "~" (file names relative to data_dir)."""

    def check(value: object) -> str:
        _require(value, str, allowed)
        assert isinstance(value, str)
        if not _no_control(value) or value.startswith("~"):
            raise RuleError(allowed)
        return value

    return check, allowed
