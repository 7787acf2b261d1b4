"""The network's settings from the node's configuration (SPEC 11 keys: docs/configuration.md)."""

from __future__ import annotations

from chrnode.config_schema import Config
from chrnode.dht.node import DhtConfig
from chrnode.edge.frame import VERSION
from chrnode.net.node_network import NetworkSettings
from chrnode.net.peers import PeerNetworkConfig
from chrnode.objects.publisher import PublisherConfig
from chrnode.peer.pool import PoolConfig

__all__ = ["network_settings"]


def network_settings(cfg: Config) -> NetworkSettings:
    ttl = cfg.location_ttl
    return NetworkSettings(
        host=cfg.host,
        peer_port=cfg.peer2_port,
        chain_id=cfg.chain_id,
        version=VERSION,
        fleet=cfg.fleet_seed_nodes,
        accept_hello=not cfg.require_tickets,
        dht=DhtConfig(hard_timeout=cfg.dht_request_timeout),
        peers=PeerNetworkConfig(
            pool=PoolConfig(max_links=cfg.peer_max_links),
            # Room for every kept link and as many again, plus unproven newcomers to shed.
            max_connections=2 * cfg.peer_max_links + 64,
            conns_per_ip=cfg.peer_max_conns_per_ip,
            conns_per_subnet=cfg.peer_max_conns_per_subnet,
        ),
        # Republished well within its lifetime, so one lost STORE round does not let it lapse.
        publisher=PublisherConfig(location_ttl=ttl, location_republish=max(5, int(ttl * 0.4))),
    )
