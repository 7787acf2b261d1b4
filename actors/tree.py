"""The node's supervision tree, in the seed's order (SPEC 9). Adding an actor is one line here.

`independent=True` marks the actors that no later sibling needs (device traffic goes on without
them: Stats, Network.Stats, Cron, Channels, PubSub, Connectivity): under the root's
rest_for_one, their crash restarts only themselves, so device sessions on the listeners stay up
(docs/architecture.md, "Blast radius"). Everything else keeps rest_for_one: a crash restarts the
later siblings.

`needs` names the elder siblings an actor needs running from its start to its stop (the SQLite
readers need the schema its writer made; what serves devices and operators needs the storage, the
tickets and the chain); the others start and stop alongside (docs/architecture.md, "Restart
time"). Every other actor reaches its peers by name at run time and copes with one that is
restarting (asks fail fast), so it needs none of them to start.

Channels (permanent, the seed's place: after Cron) holds the control state of the channels, which
live on the network loop (actors/channels.py). The seed's Channels.Supervisor supervised one
process per channel; here a channel is an object on the network loop (its bytes must not cross
a process), so there is nothing for that supervisor to supervise and Channels takes its place
directly under the root, without the extra process.

Actors of the seed that later issues implement (MerkleTree, Connection.Cache,
RemoteChain, Object.Manager/Server, Network.PeerHandler) join this list when they do real work.
"""

from __future__ import annotations

from actors.messages import ChildSpec

ROOT = "ChronaraNode.Supervisor"
SUPERVISOR_SHUTDOWN = 12.0  # a sub-supervisor stops its children (5 s each at most) first
# What the device and RPC listeners need before they open their ports (and until they closed them).
SERVES = ("Globals", "Model.Sql", "TicketStore", "RemoteChain")


def node_tree() -> ChildSpec:
    return ChildSpec(
        ROOT,
        "actors.supervisor:Supervisor",
        strategy="rest_for_one",
        children=(
            ChildSpec("Globals", "actors.globals:Globals", needs=()),
            ChildSpec("Stats", "actors.stats:Stats", independent=True, needs=()),
            ChildSpec("Network.Stats", "actors.network_stats:NetworkStats", independent=True, needs=()),
            ChildSpec(
                "Model.Sql",
                "actors.supervisor:Supervisor",
                strategy="one_for_one",
                shutdown=SUPERVISOR_SHUTDOWN,
                needs=(),
                children=(
                    ChildSpec("Model.Sql.Worker", "actors.model_sql:SqlWorker", needs=()),
                    ChildSpec("Model.Sql.Cache", "actors.model_sql:SqlCache", needs=("Model.Sql.Worker",)),
                ),
            ),
            ChildSpec("TicketStore", "actors.ticket_store:TicketStore", needs=("Model.Sql",)),
            ChildSpec("Cron", "actors.cron:Cron", independent=True, needs=()),
            # Control state only: device traffic and the channels (on the network loop) go on without it.
            ChildSpec("Channels", "actors.channels:Channels", independent=True, needs=()),
            ChildSpec("PubSub", "actors.pubsub:PubSub", independent=True, needs=()),
            ChildSpec(
                "RemoteChain",
                "actors.supervisor:Supervisor",
                strategy="one_for_one",
                shutdown=SUPERVISOR_SHUTDOWN,
                needs=("Model.Sql",),  # its cache's L2 tier is the SQLite store
                children=(
                    ChildSpec("RemoteChain.RPC", "actors.remote_chain:RemoteChainRpc", needs=()),
                    ChildSpec("RemoteChain.Monitor", "actors.remote_chain:RemoteChainMonitor", needs=()),
                    ChildSpec("RemoteChain.Cache", "actors.remote_chain:RemoteChainCache", needs=()),
                ),
            ),
            ChildSpec("Connectivity", "actors.connectivity:Connectivity", independent=True, needs=()),
            ChildSpec(
                "Network.EdgeV2.Listener",
                "actors.edge_listener:EdgeListener",
                restart="transient",
                needs=SERVES,
            ),
            ChildSpec("Network.RpcHttp", "actors.rpc_http:RpcHttp", restart="transient", needs=SERVES),
            ChildSpec("Network.RpcHttps", "actors.rpc_http:RpcHttps", restart="transient", needs=SERVES),
        ),
    )
