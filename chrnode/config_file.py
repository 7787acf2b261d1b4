"""The TOML side of the configuration (SPEC 11): reading a config file and writing values back.

`read_file` returns the raw values of a file by key, refusing syntax errors (with file, line and
column), unknown sections and unknown keys (listing the known ones). `toml_value` writes a typed
value as TOML, so `chr-node config` prints something that can be pasted into a config file.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

from chrnode.config_schema import SECTIONS, SPECS
from chrnode.errors import ConfigError, ConfigFileError

_POSITION_RE = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$", re.DOTALL)
_AT_END = " (at end of document)"


def file_source(path: Path) -> str:
    """The source label of values read from `path`."""
    return f"file:{path}"


def _parse(path: Path) -> dict[str, object]:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigFileError(path, "the file does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigFileError(path, "it is a directory, not a TOML file") from exc
    except OSError as exc:
        raise ConfigFileError(path, f"it cannot be read: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigFileError(path, "TOML files must be UTF-8: invalid byte", line=line) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError carries the position only in its message.
        message = str(exc)
        match = _POSITION_RE.match(message)
        if match is not None:
            line, column = int(match["line"]), int(match["column"])
            message = match["msg"]
        elif message.endswith(_AT_END):  # tomllib names no position here; compute it as tomllib would
            line = text.count("\n") + 1
            column = len(text) - text.rfind("\n")
            message = message.removesuffix(_AT_END) + " (at end of file)"
        else:
            raise ConfigFileError(path, f"TOML syntax error: {message}") from exc
        raise ConfigFileError(path, f"TOML syntax error: {message}", line=line, column=column) from exc


def read_file(path: Path) -> dict[str, object]:
    """The raw values of `path` by key name. Raises ConfigFileError or ConfigError (unknown names)."""
    source = file_source(path)
    document = _parse(path)
    values: dict[str, object] = {}
    known_sections = ", ".join(f"[{name}]" for name in SECTIONS)
    for section, table in document.items():
        if section not in SECTIONS:
            if section in SPECS:  # a key written above every [section] header
                where = f"a table [{SPECS[section].section}] holding {section}"
                raise ConfigError(section, table, source, f"{where}; top-level keys are not allowed")
            raise ConfigError(section, table, source, f"a known section: {known_sections}")
        if not isinstance(table, dict):
            raise ConfigError(section, table, source, f"a table: [{section}] followed by its keys")
        known = SECTIONS[section]
        for key, raw in table.items():
            if key not in known:
                raise ConfigError(
                    f"{section}.{key}", raw, source, f"a key of [{section}]: {', '.join(known)}"
                )
            values[key] = raw
    return values


def _toml_string(text: str) -> str:
    # TOML basic strings: escape quote, backslash and every control character (DEL included).
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 32 or code == 127:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def toml_value(value: object) -> str:
    """`value` as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no TOML form for the non-finite number {value!r} in a config")
        return repr(value)
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")
