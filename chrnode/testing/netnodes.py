"""Edge nodes joined into one network in one process, for tests and benchmarks: each an EdgeServer
(device port) with a PeerNetwork (peer port), a DhtService, a PeerRelay and a NetworkResolver on
the same loop, as the network process runs them."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chrnode.crypto import PrivateKey
from chrnode.dht.node import DhtConfig, DhtNode
from chrnode.identity import edge_client_context, edge_server_context
from chrnode.net.codecs import ObjectCodec, contact_of
from chrnode.net.dht_service import DhtService
from chrnode.net.peers import PeerNetwork, PeerNetworkConfig
from chrnode.net.relay import PeerRelay
from chrnode.net.resolver import NetworkResolver
from chrnode.objects.kinds import NodeRecord, make_location, make_node_object
from chrnode.objects.signed import SignedObject
from chrnode.testing.edge import EdgeNode, start_node
from chrnode.ticket import Ticket

__all__ = ["NetNode", "start_net_nodes"]


@dataclass
class NetNode:
    edge: EdgeNode
    network: PeerNetwork
    dht: DhtService
    relay: PeerRelay
    resolver: NetworkResolver
    record: SignedObject

    @property
    def key(self) -> PrivateKey:
        return self.edge.identity.key

    async def announce(self, device: PrivateKey) -> SignedObject:
        """Publish ``device``'s location at this node, from a ticket it signed for this node."""
        ticket = Ticket(31337, 1000, self.key.address, b"\x60" * 20, 1, 1).sign(device)
        now = time.time()
        obj = make_location(self.key, ticket, seq=int(now * 1000), expires=int(now) + 600)
        await self.dht.publish(obj)
        return obj

    async def stop(self) -> None:
        self.dht.close()
        await self.network.close()
        await self.edge.stop()


async def start_net_node(
    directory: Path, index: int, dht_config: DhtConfig | None = None, *, peer_port: int = 0, **edge: Any
) -> NetNode:
    """One node; ``directory`` keeps its identity, so a node started again there (on its old
    ``peer_port``) is the same node back."""
    directory.mkdir(parents=True, exist_ok=True)
    node = await start_node(directory, **edge)
    server = node.server
    identity = node.identity
    holder: list[SignedObject] = []
    context = edge_server_context(identity.key_pem_path, identity.cert_path)
    network = PeerNetwork(
        server.network.loop,
        identity.key,
        lambda: holder[0],
        context,
        edge_client_context(),
        PeerNetworkConfig(accepts_per_second_per_ip=10_000.0),
    )
    peer_port = network.listen("127.0.0.1", peer_port)
    now = time.time()
    record = make_node_object(
        identity.key,
        NodeRecord(identity.address, "127.0.0.1", (node.port,), peer_port, 2, 31337),
        seq=int(now * 1000),
        expires=int(now) + 3600,
    )
    holder.append(record)
    machine = DhtNode(contact_of(record), config=dht_config, rng=random.Random(index), now=now)
    dht = DhtService(network, machine, ObjectCodec())
    relay = PeerRelay(network, server.ports, server.devices.get)
    resolver = NetworkResolver(relay, dht)
    server.resolver = resolver
    return NetNode(node, network, dht, relay, resolver, record)


async def start_net_nodes(
    directory: Path, count: int, dht_config: DhtConfig | None = None, **edge: Any
) -> list[NetNode]:
    """``count`` nodes; every node after the first joins the DHT through the first."""
    nodes = [await start_net_node(directory / f"node{i}", i, dht_config, **edge) for i in range(count)]
    seed = contact_of(nodes[0].record)
    for node in nodes[1:]:
        result = await node.dht.join([seed])
        if not result.ok:
            raise AssertionError("a node could not join the test network")
    return nodes
