"""Network.EdgeV2.Listener: the network process with the device port (SPEC 3-5), transient.

A NetworkServer (chrnode.net) runs on an asyncio loop in a thread of this actor's process and
hosts the EdgeServer's listeners and the peer side (chrnode.net.node_network: the peer port, its
links, the DHT, the node's objects, MERKLE); every byte stream and the whole relay stay inside
it, and this actor only starts, stops and reports. What the edge needs of
the rest of the node (tickets, names, fleet and payment checks) it asks through `ActorHooks`,
which turns each hook into a message to the actor that owns the answer, awaited on the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import msgpack

from actors import chain_messages as cm
from actors import messages as m
from actors.base import ChrActor, LoopAsks, LoopThread
from chrnode.edge.hooks import NameRecord
from chrnode.edge.server import EdgeServer
from chrnode.errors import ChrError, StorageError
from chrnode.identity import edge_client_context, edge_server_context, load_node_identity
from chrnode.net.node_network import NodeNetwork
from chrnode.net.persist import OpsPersistence, objects_of
from chrnode.net.relay import PeerRelay
from chrnode.net.resolver import NetworkResolver
from chrnode.net.server import NetworkServer
from chrnode.net.settings import network_settings
from chrnode.objects.kinds import NODE
from chrnode.ports_file import REBIND_SECONDS, ports_to_bind, previous_ports
from chrnode.stats import BANDWIDTH_IN, BANDWIDTH_OUT, CONNECTIONS, LocalStats
from chrnode.ticket import Ticket, epoch_of

START_TIMEOUT = 15.0
ASK_TIMEOUT = 10.0
STOP_DRAIN = 3.0
RESTORE_LIMIT = 100_000  # the ObjectStore's own cap
RESTORE_TRIES = 10

_log = logging.getLogger("chrnode.net")


class ActorHooks:
    """EdgeHooks answered by the node's actors (runs on the edge loop)."""

    def __init__(self, actor: EdgeListener, asks: LoopAsks) -> None:
        self.actor = actor
        self.asks = asks
        self.epoch_length = actor.config.epoch_length
        self.last_in = 0
        self.last_out = 0

    async def store_ticket(self, ticket: Ticket, device: bytes) -> None:
        wire = msgpack.packb(ticket.to_wire(), use_bin_type=True)
        reply = await self.asks.ask(
            "TicketStore",
            m.SaveTicket(
                device, ticket.fleet, ticket.epoch, ticket.total_bytes, ticket.total_connections, wire
            ),
            ASK_TIMEOUT,
        )
        if not reply.ok:
            raise StorageError(f"the ticket could not be stored: {reply.error}")

    async def load_best_ticket(self, device: bytes, fleet: bytes, epoch: int) -> Ticket | None:
        reply = await self.asks.ask("TicketStore", m.LoadTicket(device, fleet, epoch), ASK_TIMEOUT)
        if not reply.ok:
            raise StorageError(f"the stored ticket could not be read: {reply.error}")
        if reply.ticket is None:
            return None
        return Ticket.from_wire(msgpack.unpackb(reply.ticket, raw=False))

    async def current_epoch(self) -> int:
        # SPEC 5: from the chain's head block (RemoteChain.Monitor); the wall clock without a chain.
        epoch = self.actor.chain_epoch
        return epoch if epoch is not None else epoch_of(int(time.time()), self.epoch_length)

    async def _chain(self, message: Any) -> cm.ChainAnswer | None:
        """Ask RemoteChain.Cache; None when this node has no chain configured (development)."""
        answer: cm.ChainAnswer = await self.asks.ask("RemoteChain.Cache", message, ASK_TIMEOUT)
        if answer.ok:
            return answer
        if answer.code == cm.NOT_CONFIGURED:
            return None
        raise cm.answer_error(answer)

    async def fleet_check(self, fleet: bytes, node: bytes, device: bytes) -> tuple[bool, bool]:
        answer = await self._chain(cm.FleetCheckRequest(fleet, node, device))
        if answer is None:
            return True, True  # no chain, no fleet contract to ask: nothing to refuse on
        allowed_node, allowed_device = answer.result
        return bool(allowed_node), bool(allowed_device)

    async def payment_check(self, ticket: Ticket, device: bytes) -> None:
        await self._chain(cm.PaymentCheckRequest(ticket, device))

    async def resolve_name(self, name: str) -> NameRecord | None:
        answer = await self._chain(cm.BnsResolve(name))
        if answer is None or not answer.result.found:
            return None
        found = answer.result
        return NameRecord(tuple(found.devices), found.owner, found.namespace)

    async def node_record(self, node: bytes) -> dict[str, Any] | None:
        obj = await self.actor.net.find(node)
        return obj.to_wire() if obj is not None and obj.kind == NODE else None

    async def get_object(self, key: bytes) -> dict[str, Any] | None:
        obj = await self.actor.net.find(key)
        return obj.to_wire() if obj is not None else None

    async def write(self, ops: list[Any]) -> None:
        """Network records (objects held, peer_history) to Model.Sql, one transaction."""
        reply = await self.asks.ask("Model.Sql.Worker", m.SqlWrite(tuple(ops)), ASK_TIMEOUT)
        if not reply.ok:
            raise StorageError(reply.error)

    async def stored_objects(self) -> list[Any]:
        """The live DHT objects Model.Sql holds (restored at start); [] if it cannot say.
        Tried a few times: at start the registry may not name Model.Sql.Cache yet."""
        error = ""
        for _ in range(RESTORE_TRIES):
            try:
                reply = await self.asks.ask(
                    "Model.Sql.Cache", m.SqlRead("dht_live", (time.time(), RESTORE_LIMIT)), ASK_TIMEOUT
                )
            except ChrError as exc:
                error = str(exc)
                await asyncio.sleep(1.0)
                continue
            if reply.ok:
                return list(reply.result)
            error = str(reply.error)
            break
        _log.warning("stored DHT objects not restored: %s", error)
        return []

    async def report(self, stats: dict[str, Any]) -> None:
        # Nothing to do: the listener pulls `EdgeServer.snapshot()` itself once a second.
        return None


class EdgeListener(ChrActor):
    SUBSCRIBE = ("snapshot",)
    chain_epoch: int | None = None  # from the chain's head (snapshot "chain"), when known

    def on_published(self, topic: str, key: str, payload: Any) -> None:
        if key == "chain" and isinstance(payload, dict):
            epoch = payload.get("epoch")
            self.chain_epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None

    def on_preload(self) -> None:
        # Before its turn (actors/supervisor.py): the chain modules `_with_fleet` needs take about
        # a second to import (eth_abi), the longest part of a rest_for_one restart otherwise.
        import chrnode.chain.service  # noqa: F401

    def on_start(self, init: m.Init) -> None:
        cfg = self.config
        # The daemon checked the certificate before the tree started (prepare_identity).
        identity = load_node_identity(Path(cfg.data_dir), cfg.node_key_path, check_certificate=False)
        context = edge_server_context(identity.key_pem_path, identity.cert_path)
        self.start_bridge()
        assert self.asks is not None
        hooks = ActorHooks(self, self.asks)
        self.network = NetworkServer()
        self.server = EdgeServer(_with_fleet(cfg), identity.key, context, hooks, network=self.network)
        # The peer port (SPEC 4) on the same loop; its own context (the edge's disables
        # renegotiation for the device hello), dialling out with the client one.
        peer_server = edge_server_context(identity.key_pem_path, identity.cert_path)
        self.peer_contexts = (peer_server, edge_client_context())
        self.identity_key = identity.key
        self.peer_port = 0
        self.thread = LoopThread("edge-loop")
        self.ports: tuple[int, ...] = tuple(self.thread.start(lambda: self._serve(hooks), START_TIMEOUT))

    async def _bind_again(self, cfg: Any, again: tuple[int, ...]) -> list[int]:
        """Bind the ports this listener had. Their old holder may still be dying (a rebuilt
        actor system: tools/chaos saw a SIGSTOPped admin's rebuild move the device ports), so
        try for REBIND_SECONDS; then take fresh ones, and say so (devices must be told)."""
        self.server.config = dataclasses.replace(cfg, edge2_ports=again)
        deadline = time.monotonic() + REBIND_SECONDS
        while True:
            try:
                return await self.server.start()
            except ChrError as exc:
                if time.monotonic() >= deadline:
                    _log.warning(
                        "device ports %s not bound again within %g s (%s); taking fresh ones",
                        list(again),
                        REBIND_SECONDS,
                        exc,
                    )
                    self.server.config = cfg
                    return await self.server.start()
            await asyncio.sleep(0.1)

    async def _serve(self, hooks: ActorHooks) -> list[int]:
        cfg = self.server.config
        # Ports 0 on a restart: bind the ports this listener had, so devices keep reaching them.
        again = ports_to_bind(cfg.edge2_ports, previous_ports(cfg.data_dir, "edge2"))
        if again != cfg.edge2_ports:
            ports = await self._bind_again(cfg, again)
        else:
            ports = await self.server.start()
        loop = asyncio.get_running_loop()
        await self._start_peers(hooks, cfg, loop)
        stats = LocalStats(self.name)

        def flush() -> None:
            # Traffic figures for Stats (SPEC 12: connections, bandwidth in/out), once a second.
            if self.bridge is not None:
                snap = self.server.snapshot()
                stats.set_gauge(CONNECTIONS, float(snap.get("connections", 0)))
                total_in, total_out = int(snap.get("bytes_in", 0)), int(snap.get("bytes_out", 0))
                stats.incr(BANDWIDTH_IN, max(0, total_in - hooks.last_in))
                stats.incr(BANDWIDTH_OUT, max(0, total_out - hooks.last_out))
                hooks.last_in, hooks.last_out = total_in, total_out
                self.bridge.post("Stats", m.StatsReport(self.name, stats.drain()))
                self.bridge.post("PubSub", m.Publish("snapshot", "edge", snap))
                self.bridge.post("Channels", m.ChannelsReport(self.name, self.server.channels.status()))
                p2p = self.net.p2p_status()
                p2p["persist"] = self.persistence.status()
                if hasattr(self, "relay"):
                    p2p["relay"] = {**self.relay.status(), **self.resolver.status()}
                self.bridge.post("PubSub", m.Publish("snapshot", "peers", self.net.peer_rows()))
                self.bridge.post("PubSub", m.Publish("snapshot", "fleet", self.net.fleet_status()))
                self.bridge.post("PubSub", m.Publish("snapshot", "p2p", p2p))
                if self.network.lag is not None:  # the network loop's lag (chrnode.net.looplag)
                    self.bridge.post("PubSub", m.Publish("snapshot", "loop_lag", self.network.lag.status()))
            loop.call_later(1.0, flush)

        loop.call_soon(flush)
        return ports

    async def _start_peers(self, hooks: ActorHooks, cfg: Any, loop: asyncio.AbstractEventLoop) -> None:
        """The peer side (chrnode.net.node_network): restore, listen, publish, join the fleet."""
        self.persistence = OpsPersistence(loop, hooks.write)
        settings = network_settings(cfg)
        # Ports 0 on a restart: the peer port this node had, so its published record stays true.
        again = ports_to_bind((cfg.peer2_port,), previous_ports(cfg.data_dir, "peer2"))[0]
        server_ctx, client_ctx = self.peer_contexts
        self.net = NodeNetwork(
            loop, self.identity_key, server_ctx, client_ctx, dataclasses.replace(settings, peer_port=again),
            self.persistence,
        )  # fmt: skip
        try:
            self.peer_port = self.net.start(cfg.bind_address, self.server.bound_ports)
        except OSError:
            if again == cfg.peer2_port:
                raise
            self.net.settings = settings  # the old port was taken meanwhile: a fresh one
            self.peer_port = self.net.start(cfg.bind_address, self.server.bound_ports)
        self.server.presence = self.net
        # Model.Sql answers only once this actor runs (its thread sends the asks), so the
        # objects held before a restart come back in a task; MERKLE waits for them.
        self.network.spawn(self._restore(hooks))
        # Ports across nodes (SPEC 4 relay messages): the port table reaches devices served by
        # other nodes through their peer links, found by their location in the DHT.
        assert self.net.dht is not None  # made by start()
        self.relay = PeerRelay(self.net.network, self.server.ports, self.server.devices.get)
        self.resolver = NetworkResolver(self.relay, self.net.dht, accept_hello=self.net.settings.accept_hello)
        self.server.resolver = self.resolver

    async def _restore(self, hooks: ActorHooks) -> None:
        rows = await hooks.stored_objects()
        self.net.restore(objects_of(rows, self.net.codec))

    def receiveMsg_RegistryUpdate(self, msg: m.RegistryUpdate, sender: Any) -> None:
        super().receiveMsg_RegistryUpdate(msg, sender)
        if self.globals_is_new():
            self.send_to("Globals", m.PortsBound("edge2", self.ports))
            self.send_to("Globals", m.PortsBound("peer2", (self.peer_port,)))

    def on_stop(self) -> None:
        self.thread.stop(self._stop)

    async def _stop(self) -> None:
        # Listening sockets first: the supervisor may start this listener's replacement as soon
        # as it says Exiting, and it binds the same ports (REBIND_SECONDS); draining the records,
        # closing the peer links and saying goodbye to the devices can take seconds under load.
        self.network.close_all_listeners()
        if hasattr(self, "net"):
            try:
                await asyncio.wait_for(self.persistence.drain(), STOP_DRAIN)
            except TimeoutError:
                _log.warning("network records still queued at stop: %s", self.persistence.status())
            await self.net.close()
        await self.server.stop()
        await self.network.stop()


def _with_fleet(cfg: Any) -> Any:
    """The node's default fleet (sent in the hello answer) is `fleet_contract`, or else the fleet
    of the local chain's deployment (<data_dir>/contracts.json, written by tools/devchain)."""
    if cfg.fleet_contract:
        return cfg
    from chrnode.chain.service import ChainContracts

    fleet = ChainContracts.from_config(cfg).fleet
    return dataclasses.replace(cfg, fleet_contract="0x" + fleet.hex()) if fleet is not None else cfg
