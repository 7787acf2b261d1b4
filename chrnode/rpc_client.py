"""A small JSON-RPC client for the CLI and the admin shell (reads the admin cookie itself)."""

from __future__ import annotations

import http.client
import itertools
import json
import time
from pathlib import Path
from typing import Any

from chrnode.errors import ChrError, RpcError


class RpcClient:
    def __init__(self, host: str, port: int, token: str | None = None, timeout: float = 15.0) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.timeout = timeout
        self._ids = itertools.count(1)

    @classmethod
    def for_config(cls, cfg: Any) -> RpcClient:
        host = "127.0.0.1" if cfg.rpc_bind in ("0.0.0.0", "", "::") else cfg.rpc_bind
        from chrnode.rpc_server import read_cookie

        try:
            token: str | None = read_cookie(Path(cfg.cookie_path))
        except (OSError, ChrError):
            token = None  # read methods still work; admin ones will say the token is missing
        from chrnode.ports_file import cli_port

        return cls(host, cli_port(cfg.data_dir, "rpc", cfg.rpc_port), token)

    def call(self, method: str, params: list[Any] | dict[str, Any] | None = None) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []})
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", "/rpc", body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except OSError as exc:
            raise ChrError(
                f"cannot reach the node's JSON-RPC at {self.host}:{self.port} ({exc}); "
                "is `chr-node start` running?"
            ) from exc
        finally:
            conn.close()
        try:
            reply = json.loads(raw)
        except ValueError as exc:
            raise ChrError(f"the node answered HTTP {response.status} with a body that is not JSON") from exc
        if not isinstance(reply, dict):
            raise ChrError(f"unexpected JSON-RPC answer: {reply!r}")
        if "error" in reply:
            err = reply["error"]
            raise RpcError(int(err.get("code", -32603)), str(err.get("message")), err.get("data"))
        return reply.get("result")


def _age(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    return " ".join([*parts, f"{hours:02d}:{minutes:02d}:{secs:02d}"])


def format_status(info: dict[str, Any], health: dict[str, Any]) -> str:
    """What `chr-node status` prints: identity, ports, health by layer, then the actor tree."""
    lines = [
        f"node     {info.get('address')}   chr-node {info.get('version')}",
        f"uptime   {_age(float(info.get('uptime', 0)))}   host {info.get('host')}",
        "ports    " + "  ".join(f"{k}={v}" for k, v in sorted((info.get("ports") or {}).items())),
        f"health   {health.get('status', '?')}",
    ]
    for name, layer in (health.get("layers") or {}).items():
        lines.append(f"  {name:<12} {layer.get('status', '?'):<9} {layer.get('reason', '')}")
    lines.append("actors")
    for actor in info.get("tree") or []:
        reason = f"  ({actor['reason']})" if actor.get("reason") else ""
        lines.append(
            f"  {actor.get('name', '?'):<28} {actor.get('state', '?'):<10}"
            f" restarts={actor.get('restarts', 0)} pid={actor.get('pid', 0)}{reason}"
        )
    lines.append(f"as of    {time.strftime('%Y-%m-%d %H:%M:%S')}")
    return "\n".join(lines)
