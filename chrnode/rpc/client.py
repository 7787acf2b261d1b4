"""A small JSON-RPC client for the CLI and the admin shell (reads the admin cookie itself)."""

from __future__ import annotations

import http.client
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chrnode.errors import ChrError, RpcError


def parse_params(raw: Sequence[str]) -> list[Any] | dict[str, Any]:
    """`chr-node rpc M a b` (and the shell's `call M a b`) -> positional params; each is JSON if it
    parses, else a string. A single JSON object or array is passed as the params themselves."""
    if len(raw) == 1:
        try:
            whole = json.loads(raw[0])
        except ValueError:
            whole = None
        if isinstance(whole, (dict, list)):
            return whole
    out: list[Any] = []
    for item in raw:
        try:
            out.append(json.loads(item))
        except ValueError:
            out.append(item)
    return out


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
        from chrnode.rpc.server import read_cookie

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


def _chain_lines(chain: Any) -> list[str]:
    """The chain as an operator needs it (issue 7): head, the node's balance and whether it pays
    for ticket submission, and each endpoint's state."""
    if not isinstance(chain, dict) or not chain.get("configured"):
        return []
    balance = chain.get("node_balance") or {}
    if balance.get("known"):
        pays = "can pay ticket submission" if balance.get("can_pay") else "CANNOT pay ticket submission gas"
        money = f"balance {balance.get('eth')} ETH ({pays})"
    else:
        money = "balance unknown"
    head = chain.get("head_block")
    lines = [f"chain    head {head if head is not None else '?'}   {money}"]
    for ep in chain.get("endpoints") or []:
        latency = f" {ep['latency_ms']} ms" if ep.get("latency_ms") is not None else ""
        error = f"  ({ep['error']})" if ep.get("error") else ""
        lines.append(f"  {ep.get('url')}  {ep.get('state')}{latency}{error}")
    return lines


def _bytes(count: Any) -> str:
    value = float(count) if isinstance(count, int | float) and not isinstance(count, bool) else 0.0
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_traffic(stats: dict[str, Any]) -> list[str]:
    """Devices, their open ports, bytes relayed and peers, from `network_stats` (the edge
    listener's and connectivity's last reports)."""
    edge = stats.get("edge") or {}
    p2p = stats.get("p2p") or {}
    connected, known = p2p.get("connected", 0), p2p.get("known", 0)
    peers = f"{connected} connected of {known} known"
    if not known:
        peers += " (no peer network yet)"
    return [
        f"devices  {edge.get('devices', 0)} connected ({edge.get('connections', 0)} connections),"
        f" {edge.get('ports_open', 0)} ports open",
        f"relayed  {_bytes(edge.get('bytes_in', 0))} in, {_bytes(edge.get('bytes_out', 0))} out",
        f"peers    {peers}",
    ]


def format_status(info: dict[str, Any], health: dict[str, Any], stats: dict[str, Any] | None = None) -> str:
    """What `chr-node status` prints: identity, ports, traffic, the chain (from `network_stats`),
    health by layer, then the actor tree."""
    lines = [
        f"node     {info.get('address')}   chr-node {info.get('version')}",
        f"uptime   {_age(float(info.get('uptime', 0)))}   host {info.get('host')}",
        "ports    " + "  ".join(f"{k}={v}" for k, v in sorted((info.get("ports") or {}).items())),
    ]
    if stats is not None:
        lines.extend(format_traffic(stats))
    lines.extend(_chain_lines((stats or {}).get("chain")))
    lines.append(f"health   {health.get('status', '?')}")
    for name, layer in (health.get("layers") or {}).items():
        lines.append(f"  {name:<12} {layer.get('status', '?'):<9} {layer.get('reason', '')}")
    lines.append("actors")
    for actor in info.get("tree") or []:
        reason = f"  ({actor['reason']})" if actor.get("reason") else ""
        if not reason and actor.get("restarts") and actor.get("last_exit"):
            reason = f"  (last exit: {actor['last_exit']})"
        lines.append(
            f"  {actor.get('name', '?'):<28} {actor.get('state', '?'):<10}"
            f" restarts={actor.get('restarts', 0)} pid={actor.get('pid', 0)}{reason}"
        )
    lines.append(f"as of    {time.strftime('%Y-%m-%d %H:%M:%S')}")
    return "\n".join(lines)
