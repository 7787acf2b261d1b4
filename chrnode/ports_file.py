"""`<data_dir>/ports.json`: the ports a running node actually bound (SPEC 8 `chr_node_info.ports`).

Any port may be configured as 0 ("pick a free one"), so the configuration alone does not say
where a node listens. Globals writes this file once every listener has reported its bound ports
(and again whenever one of them changes); the daemon removes it before the tree starts (a file
left by a killed node is stale) and after a clean stop. Tools and tests read it instead of
guessing a free port. In a node the daemon runs, a listener serves the socket the daemon bound
and holds (chrnode.held_ports), so its port never changes; in an actor system without the daemon
(tests), a restarted listener configured with 0 binds the port it had before, so that clients
keep reaching it. The format (docs/configuration.md, "The ports file"):

    {"pid": 1234, "rpc": 8545, "rpcs": 8443, "edge2": [41046, 41047], "peer2": 51055,
     "actor_admin": 41900, "listening": ["edge2", "peer2", "rpc", "rpcs"]}

`pid` is the daemon's process id; `listening` names the kinds whose listener has reported (a port
of a kind not listed is the configured value: nothing listens there yet, 0 if configured 0).
The file is replaced atomically (written beside it, then renamed), so a reader never sees half.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chrnode.errors import ChrError

PORTS_FILE = "ports.json"

# Listeners that must report before the file is first written; a new listener adds its kind here.
LISTENER_KINDS = ("rpc", "rpcs", "edge2", "peer2")

# How long a restarted listener that binds for itself (no held socket) tries the ports it had
# before taking fresh ones: their old holder may still be letting go of them
# (actors/edge_listener.py, actors/rpc_http.py).
REBIND_SECONDS = 3.0


def ports_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / PORTS_FILE


def write_ports(data_dir: Path | str, ports: dict[str, Any]) -> Path:
    """Replace the ports file atomically with `ports` (a JSON object)."""
    path = ports_path(data_dir)
    tmp = path.with_name(f".{PORTS_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(ports, out, sort_keys=True)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return path


def read_ports(data_dir: Path | str) -> dict[str, Any] | None:
    """The ports file's content, or None when there is none (no node running, or not ready yet)."""
    path = ports_path(data_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ChrError(f"cannot read the ports file {path}: {exc.strerror}") from exc
    try:
        ports = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError included
        raise ChrError(f"the ports file {path} is not JSON ({exc}); remove it and restart the node") from exc
    if not isinstance(ports, dict):
        raise ChrError(f"the ports file {path} does not hold a JSON object; remove it and restart the node")
    return ports


def remove_ports(data_dir: Path | str) -> None:
    try:
        ports_path(data_dir).unlink()
    except FileNotFoundError:
        pass


def _port(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
    return value if ok else None


def previous_ports(data_dir: Path | str, kind: str) -> list[int | None]:
    """The ports of `kind` this node bound before (a listener's restart), one per listener of it;
    [] when unknown. A bad or missing file is no reason to refuse to start: it gives []."""
    try:
        ports = read_ports(data_dir)
    except ChrError:
        return []
    if ports is None or kind not in ports.get("listening", ()):
        return []
    value = ports.get(kind)
    return [_port(v) for v in value] if isinstance(value, list) else [_port(value)]


def ports_to_bind(configured: tuple[int, ...], previous: list[int | None]) -> tuple[int, ...]:
    """Configured ports, each 0 replaced by the port bound before at its position (if known)."""
    return tuple(
        (previous[i] or 0) if port == 0 and i < len(previous) else port for i, port in enumerate(configured)
    )


def cli_port(data_dir: Path | str, kind: str, configured: int) -> int:
    """The port a client on this machine should use: the configured one, or the bound one when
    it is configured 0 (read from the ports file)."""
    if configured:
        return configured
    ports = read_ports(data_dir)
    bound = _port(ports.get(kind)) if ports is not None else None
    if bound is None:
        raise ChrError(
            f"{kind} port is configured 0 and {ports_path(data_dir)} names no bound port; "
            "is the node running (and ready)?"
        )
    return bound
