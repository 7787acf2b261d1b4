"""Connectivity: are the configured ports listening, are the fleet seed nodes reachable, and what
public host does this node announce (as configured: CHR_HOST). Runs as the Cron job
`connectivity_check` and publishes snapshot "connectivity" for `health` and `chr_node_info`."""

from __future__ import annotations

import socket
import time
from typing import Any

from actors import messages as m
from actors.base import ChrActor
from chrnode.config_fields import parse_fleet_node

PORT_TIMEOUT = 1.0
SEED_TIMEOUT = 2.0


def tcp_reachable(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__


class Connectivity(ChrActor):
    SUBSCRIBE = ("snapshot",)

    def on_start(self, init: m.Init) -> None:
        cfg = self.config
        self.ports: dict[str, Any] = {
            "rpc": cfg.rpc_port, "rpcs": cfg.rpcs_port, "edge2": list(cfg.edge2_ports), "peer2": cfg.peer2_port,
        }
        self.result: dict[str, Any] = {"host": cfg.host, "checked_at": None, "listeners": {}, "seeds": []}

    def on_published(self, topic: str, key: str, payload: Any) -> None:
        if key == "node" and isinstance(payload, dict):
            self.ports = dict(payload.get("ports", self.ports))

    def receiveMsg_RunJob(self, msg: m.RunJob, sender: Any) -> None:
        started = time.perf_counter()
        self.result = self.check()
        self.publish("snapshot", "connectivity", self.result)
        down = [name for name, row in self.result["listeners"].items() if not row["listening"]]
        self.send(sender, m.JobDone(msg.name, not down, f"not listening: {', '.join(down)}" if down else "",
                                    time.perf_counter() - started))

    def check(self) -> dict[str, Any]:
        cfg = self.config
        listeners: dict[str, Any] = {}
        for kind, value in self.ports.items():
            for port in value if isinstance(value, list) else [value]:
                if not port:
                    continue
                ok, error = tcp_reachable("127.0.0.1", int(port), PORT_TIMEOUT)
                listeners[f"{kind}:{port}"] = {"kind": kind, "port": int(port), "listening": ok, "error": error}
        seeds = []
        for entry in cfg.fleet_nodes:
            node = parse_fleet_node(entry)
            ok, error = tcp_reachable(node.host, node.port, SEED_TIMEOUT)
            seeds.append({"node": node.address, "host": node.host, "port": node.port, "reachable": ok, "error": error})
        return {"host": cfg.host, "checked_at": time.time(), "listeners": listeners, "seeds": seeds}
