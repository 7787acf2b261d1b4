"""Real peer nodes in one process for tests and benchmarks: each a PeerNetwork (TLS on a loopback
port of its own) with a DhtService, all on the caller's event loop."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

from chrnode.crypto import PrivateKey
from chrnode.dht.ids import Contact
from chrnode.dht.node import DhtConfig, DhtNode
from chrnode.identity import edge_client_context, edge_server_context, ensure_node_certificate
from chrnode.net.codecs import ObjectCodec, contact_of
from chrnode.net.dht_service import DhtService
from chrnode.net.peers import PeerNetwork, PeerNetworkConfig
from chrnode.objects.kinds import NodeRecord, make_node_object
from chrnode.objects.signed import SignedObject

__all__ = ["PeerNode", "start_peer_nodes"]


@dataclass
class PeerNode:
    key: PrivateKey
    record: SignedObject
    network: PeerNetwork
    dht: DhtService

    @property
    def contact(self) -> Contact:
        return contact_of(self.record)

    async def stop(self) -> None:
        self.dht.close()
        await self.network.close()


async def start_peer_node(
    directory: Path,
    key: PrivateKey,
    *,
    dht_config: DhtConfig | None = None,
    net_config: PeerNetworkConfig | None = None,
    seed: int = 0,
) -> PeerNode:
    loop = asyncio.get_running_loop()
    directory.mkdir(parents=True, exist_ok=True)
    cert, pem = ensure_node_certificate(key, directory)
    holder: list[SignedObject] = []
    network = PeerNetwork(
        loop, key, lambda: holder[0], edge_server_context(pem, cert), edge_client_context(), net_config
    )
    port = network.listen("127.0.0.1", 0)
    now = time.time()
    record = make_node_object(
        key,
        NodeRecord(key.address, "127.0.0.1", (), port, 2, 31337),
        seq=int(now * 1000),
        expires=int(now) + 3600,
    )
    holder.append(record)
    node = DhtNode(contact_of(record), config=dht_config, rng=random.Random(seed), now=now)
    network.pool.rng = random.Random(seed)
    dht = DhtService(network, node, ObjectCodec())
    return PeerNode(key, record, network, dht)


async def start_peer_nodes(
    directory: Path,
    count: int,
    *,
    dht_config: DhtConfig | None = None,
    net_config: PeerNetworkConfig | None = None,
    first_key: int = 1,
) -> list[PeerNode]:
    """``count`` nodes, keys derived from ``first_key``; none has joined yet."""
    return [
        await start_peer_node(
            directory / f"n{i}",
            PrivateKey.from_bytes((first_key + i).to_bytes(32, "big")),
            dht_config=dht_config,
            net_config=net_config,
            seed=first_key + i,
        )
        for i in range(count)
    ]
