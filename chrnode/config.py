"""The node's configuration (SPEC 11): defaults in code, then a TOML file, then `CHR_*` variables.

    config = load(os.environ, resolve_config_path(args.config, os.environ)).config

`load(env, path)` is pure: it reads only the file it is given and the mapping it is given (only
`main()` passes `os.environ`; nothing here reads it, at import time or later). It records where
every value came from ("default", "file:<path>" or "env:CHR_X") and refuses a bad value with a
`ConfigError` naming the key, the value, its source and what is allowed. The keys, their defaults
and their checks are in `chrnode.config_schema`; the TOML side in `chrnode.config_file`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chrnode import config_fields
from chrnode.config_fields import FieldSpec, FleetNode, Kind, RuleError, env_name, parse_fleet_node
from chrnode.config_file import file_source, read_file, toml_value
from chrnode.config_schema import SECTIONS, SOURCE_DEFAULT, SPECS, Config, check_cross_fields, check_value
from chrnode.errors import ConfigError, ConfigFileError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "SECTIONS",
    "SPECS",
    "Config",
    "ConfigError",
    "ConfigFileError",
    "FieldSpec",
    "FleetNode",
    "LoadedConfig",
    "env_name",
    "load",
    "parse_fleet_node",
    "resolve_config_path",
    "validate_data_dir",
]

log = logging.getLogger("chrnode.config")

CONFIG_ENV = "CHR_CONFIG"
DEFAULT_CONFIG_PATH = Path("conf") / "chronara.toml"


@dataclass(frozen=True)
class LoadedConfig:
    """A loaded Config, where each key's value came from, and the file read (if any)."""

    config: Config
    sources: dict[str, str]
    path: Path | None = None

    def render(self) -> str:
        """Every key with its effective value and source, by section, as TOML (for `chr-node config`)."""
        header = f"config file: {self.path}" if self.path is not None else "no config file"
        lines = [
            "# chr-node effective configuration; each value's source follows it as a comment.",
            f"# {header}. Precedence: default < file < env (SPEC 11).",
        ]
        for section, names in SECTIONS.items():
            rows = [
                (f"{name} = {toml_value(getattr(self.config, name))}", self.sources[name]) for name in names
            ]
            width = max(len(text) for text, _ in rows)
            lines.append("")
            lines.append(f"[{section}]")
            lines.extend(f"{text.ljust(width)}  # {source}" for text, source in rows)
        return "\n".join(lines) + "\n"


def resolve_config_path(
    cli_path: str | Path | None, env: Mapping[str, str], cwd: Path | None = None
) -> Path | None:
    """The config file to read: `--config`, else `CHR_CONFIG`, else ./conf/chronara.toml if it exists.

    An explicit path (CLI or CHR_CONFIG) is returned even if missing, so that `load` reports it; an
    empty CHR_CONFIG counts as unset. `cwd` defaults to the process's working directory.
    """
    if cli_path is not None and str(cli_path) != "":
        return Path(cli_path)
    from_env = env.get(CONFIG_ENV, "").strip()
    if from_env:
        return Path(from_env)
    default = (cwd if cwd is not None else Path.cwd()) / DEFAULT_CONFIG_PATH
    return default if default.is_file() else None


def load(env: Mapping[str, str], path: Path | None, *, cwd: Path | None = None) -> LoadedConfig:
    """Defaults, then the TOML file at `path` (if given), then `CHR_*` entries of `env`; highest wins.

    Relative `data_dir` values are made absolute against `cwd` (default: the working directory).
    Raises ConfigError (ConfigFileError for an unreadable or malformed file).
    """
    values: dict[str, Any] = {}
    sources = dict.fromkeys(SPECS, SOURCE_DEFAULT)
    if path is not None:
        source = file_source(path)
        for name, raw in read_file(path).items():
            typed = _parse(name, SPECS[name], raw, source, config_fields.from_toml)
            values[name] = check_value(name, SPECS[name], typed, raw, source)
            sources[name] = source
    for name, spec in SPECS.items():
        var = env_name(name)
        if var in env:
            typed = _parse(name, spec, env[var], f"env:{var}", config_fields.from_env)
            values[name] = check_value(name, spec, typed, env[var], f"env:{var}")
            sources[name] = f"env:{var}"
    _warn_unknown_env(env)

    merged = {field.name: values.get(field.name, field.default) for field in dataclasses.fields(Config)}
    merged["data_dir"] = _absolute(merged["data_dir"], cwd)
    check_cross_fields(merged, sources)
    try:
        config = Config(**merged)
    except ConfigError as exc:  # cannot happen after the checks above; keep the real source if it does
        raise ConfigError(exc.key, exc.value, sources.get(exc.key, exc.source), exc.allowed) from exc
    return LoadedConfig(config, sources, path)


def _parse(name: str, spec: FieldSpec, raw: Any, source: str, parser: Callable[[Kind, Any], Any]) -> Any:
    try:
        return parser(spec.kind, raw)
    except RuleError as exc:
        raise ConfigError(name, raw, source, f"{spec.allowed}, written as {exc.allowed}") from exc


def _absolute(path: Path, cwd: Path | None) -> Path:
    # Path.absolute() (not resolve()): symlinks are the operator's business, and resolve() would
    # touch the file system. A data_dir that is "." becomes the working directory itself.
    return path if path.is_absolute() else (cwd if cwd is not None else Path.cwd()) / path


def _warn_unknown_env(env: Mapping[str, str]) -> None:
    # Environments carry unrelated variables; a CHR_ one we do not know is probably a typo, but
    # refusing it would break tools that add their own CHR_ variables, so it is only logged.
    known = {env_name(name) for name in SPECS} | {CONFIG_ENV}
    for var in sorted(env):
        if var.startswith(config_fields.ENV_PREFIX) and var not in known:
            log.warning("ignoring unknown environment variable %s (known: %s)", var, ", ".join(sorted(known)))


def validate_data_dir(path: Path, source: str = "data_dir setting") -> None:
    """Create `path` (mode 0700) if needed and check it is a writable directory.

    An existing directory keeps its mode; a group- or world-accessible one is logged as a warning,
    because it holds the node key and the admin cookie (SPEC 2, 8).
    """
    existed = path.is_dir()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ConfigError(
            "data_dir", str(path), source, "a directory, but a file of that name exists"
        ) from exc
    except NotADirectoryError as exc:
        raise ConfigError("data_dir", str(path), source, "a path whose parents are directories") from exc
    except OSError as exc:
        reason = f"a directory that can be created ({exc.strerror or exc})"
        raise ConfigError("data_dir", str(path), source, reason) from exc
    if not path.is_dir():
        raise ConfigError("data_dir", str(path), source, "a directory, but a file of that name exists")
    if not existed:
        path.chmod(0o700)  # mkdir's mode is filtered by the umask; make it exactly 0700
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("data_dir %s has mode %o; 0700 is advised, it holds the node key", path, mode)
    # os.access() says yes to root on a read-only mount; writing a file is the real test.
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
    except OSError as exc:
        reason = f"a writable directory ({exc.strerror or exc})"
        raise ConfigError("data_dir", str(path), source, reason) from exc
    os.close(fd)
    os.unlink(probe)
