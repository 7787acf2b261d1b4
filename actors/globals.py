"""Globals: the node's identity and shared settings (seed: Globals), published as snapshot "node".

The daemon creates the node key before the tree starts (so a bad key stops start-up with a clear
message); Globals reads it, holds the address, start time and the ports the listeners actually
bound, and answers `GetGlobals`. Once every listener has reported, it writes the ports file
(`<data_dir>/ports.json`, chrnode.ports_file) that tools and tests read when a port is 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors import messages as m
from actors.base import ChrActor
from chrnode import __version__
from chrnode.errors import ChrError
from chrnode.identity import load_or_create_node_key
from chrnode.ports_file import LISTENER_KINDS, read_ports, write_ports


@dataclass(frozen=True)
class GetGlobals:
    pass


class Globals(ChrActor):
    def on_start(self, init: m.Init) -> None:
        cfg = self.config
        # Only the key: the daemon made the certificate before the tree started, and checking it
        # here (cryptography, OpenSSL) cost this small actor about 1.5 MiB of private memory.
        key = load_or_create_node_key(Path(cfg.node_key_path))
        self.daemon_pid = init.daemon_pid
        self.written: dict[str, Any] | None = None
        self.info: dict[str, Any] = {
            "address": "0x" + key.address.hex(),
            "version": __version__,
            "started_at": time.time(),
            "host": cfg.host,
            "ports": {
                "rpc": cfg.rpc_port,
                "rpcs": cfg.rpcs_port,
                "edge2": list(cfg.edge2_ports),
                "peer2": cfg.peer2_port,
                # The daemon passes the admin port it actually bound (it may be configured 0).
                "actor_admin": cfg.actor_admin_port,
            },
            "data_dir": str(cfg.data_dir),
            "listening": [],  # kinds whose listener reported its bound ports (PortsBound)
        }
        self._adopt_ports_file()

    def _adopt_ports_file(self) -> None:
        """A restarted Globals takes the ports its predecessor wrote for this daemon, so that
        chr_node_info does not show configured zeros until every listener has reported again."""
        try:
            written = read_ports(self.config.data_dir)
        except ChrError:
            return
        if not written or written.get("pid") != self.daemon_pid or not self.daemon_pid:
            return
        kinds = [k for k in written.get("listening", ()) if k in self.info["ports"] and k in written]
        for kind in kinds:
            self.info["ports"][kind] = written[kind]
        self.info["listening"] = sorted(kinds)
        self.written = written

    def on_pubsub_ready(self) -> None:
        self.publish("snapshot", "node", dict(self.info))

    def receiveMsg_PortsBound(self, msg: m.PortsBound, sender: Any) -> None:
        ports = self.info["ports"]
        bound = list(msg.ports) if msg.kind == "edge2" else msg.ports[0]
        if msg.kind in self.info["listening"] and ports.get(msg.kind) == bound:
            # The listeners repeat their ports on every registry push (so that a restarted
            # Globals hears them): publishing the unchanged snapshot again each time sent four
            # snapshots to every subscriber per push, in the middle of every restart.
            return
        ports[msg.kind] = bound
        if msg.kind not in self.info["listening"]:
            self.info["listening"] = sorted([*self.info["listening"], msg.kind])
        self.publish("snapshot", "node", dict(self.info))
        self._write_ports_file()

    def _write_ports_file(self) -> None:
        """Once every listener has reported, and again when a port changes (a restarted listener
        that could not get its old port back)."""
        if not set(LISTENER_KINDS) <= set(self.info["listening"]):
            return
        content = {**self.info["ports"], "pid": self.daemon_pid, "listening": self.info["listening"]}
        if content == self.written:
            return
        try:
            write_ports(self.config.data_dir, content)
        except OSError as exc:
            self.log.error("cannot write the ports file in %s: %s", self.config.data_dir, exc)
            return
        self.written = content
        self.log.info("ports bound: %s", ", ".join(f"{k}={v}" for k, v in sorted(self.info["ports"].items())))

    def receiveMsg_GetGlobals(self, msg: GetGlobals, sender: Any) -> None:
        self.send(sender, dict(self.info))
