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
RECHECK_DELAY = 1.0


def tcp_reachable(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__


class Connectivity(ChrActor):
    SUBSCRIBE = ("snapshot",)

    def on_start(self, init: m.Init) -> None:
        self.ports: dict[str, Any] = {}
        self.result: dict[str, Any] = {}
        self.recheck_pending = False

    def on_published(self, topic: str, key: str, payload: Any) -> None:
        if key == "node" and isinstance(payload, dict):
            # Only ports whose listener runs: the peer port has no listener until the DHT does.
            listening = set(payload.get("listening", ()))
            self.ports = {k: v for k, v in dict(payload.get("ports", {})).items() if k in listening}
            # A listener (re)bound its port: look again soon rather than at the next Cron run,
            # so `health` does not report a restarted listener as down for half a minute.
            if not self.recheck_pending:
                self.recheck_pending = True
                self.wakeupAfter(RECHECK_DELAY, payload="recheck")

    def on_timer(self, payload: Any) -> None:
        if payload == "recheck":
            self.recheck_pending = False
            self._check_and_publish()

    def receiveMsg_RunJob(self, msg: m.RunJob, sender: Any) -> None:
        started = time.perf_counter()
        self._check_and_publish()
        down = [name for name, up in self.result["listeners"].items() if not up]
        self.send(
            sender,
            m.JobDone(
                msg.name,
                not down,
                f"not listening: {', '.join(down)}" if down else "",
                time.perf_counter() - started,
            ),
        )

    def _check_and_publish(self) -> None:
        self.result = self.check()
        self.publish("snapshot", "connectivity", self.result)

    def check(self) -> dict[str, Any]:
        cfg = self.config
        listeners: dict[str, Any] = {}
        for kind, value in self.ports.items():
            for port in value if isinstance(value, list) else [value]:
                if not port:
                    continue
                ok, error = tcp_reachable("127.0.0.1", int(port), PORT_TIMEOUT)
                listeners[f"{kind}:{port}"] = {
                    "kind": kind,
                    "port": int(port),
                    "listening": ok,
                    "error": error,
                }
        seeds = []
        for entry in cfg.fleet_nodes:
            node = parse_fleet_node(entry)
            ok, error = tcp_reachable(node.host, node.port, SEED_TIMEOUT)
            seeds.append(
                {"node": node.address, "host": node.host, "port": node.port, "reachable": ok, "error": error}
            )
        reachable = sum(1 for seed in seeds if seed["reachable"])
        return {
            "host": cfg.host,
            "checked_at": time.time(),
            "listeners": {name: row["listening"] for name, row in listeners.items()},
            "listener_details": listeners,
            "seeds": len(seeds),
            "seeds_reachable": reachable,
            "seed_details": seeds,
        }
