"""peewee models of the node's tables (SPEC 10).

The models are deliberately left unbound (no `Meta.database`): a process may hold the writer's
database and a read-only one at the same time (the tests do), and binding a model class to one of
them would be global state. The writer and the reader bind every query to their own database
(`query.execute(db)`, `query.bind(db)`).

The tables themselves are created by the migrations in `chrnode.storage.schema`, not from these
classes, so a later change to a model can never silently rewrite an existing file's schema; a test
checks that the two agree.
"""

from __future__ import annotations

import peewee


class _Base(peewee.Model):
    class Meta:
        database = None
        legacy_table_names = False


class NodeStats(_Base):
    """The seed's `node_stats`: one row per minute."""

    timestamp = peewee.IntegerField(primary_key=True)
    connections = peewee.IntegerField(null=True)
    bandwidth_in = peewee.IntegerField(null=True)
    bandwidth_out = peewee.IntegerField(null=True)
    uptime_seconds = peewee.IntegerField(null=True)

    class Meta:
        table_name = "node_stats"


class PeerHistory(_Base):
    """The seed's `peer_history`: peers seen on the peer port or in the DHT (SPEC 6)."""

    peer_id = peewee.TextField(primary_key=True)
    first_seen = peewee.IntegerField(null=True)
    last_seen = peewee.IntegerField(null=True)
    connection_count = peewee.IntegerField(null=True)
    reliability_score = peewee.FloatField(null=True)

    class Meta:
        table_name = "peer_history"


class RewardTracking(_Base):
    """The seed's `reward_tracking`: one row per reward period."""

    period_start = peewee.IntegerField(primary_key=True)
    period_end = peewee.IntegerField(null=True)
    uptime_score = peewee.FloatField(null=True)
    performance_score = peewee.FloatField(null=True)
    chr_tokens_earned = peewee.FloatField(null=True)

    class Meta:
        table_name = "reward_tracking"


class Kv(_Base):
    """Small named values (node settings, `schema_version`)."""

    key = peewee.TextField(primary_key=True)
    value = peewee.BlobField()
    updated_at = peewee.FloatField()

    class Meta:
        table_name = "kv"


class Ticket(_Base):
    """The best ticket per (device, fleet, epoch) (SPEC 5), with its submission state."""

    device = peewee.BlobField()
    fleet = peewee.BlobField()
    epoch = peewee.IntegerField()
    total_bytes = peewee.IntegerField()
    total_connections = peewee.IntegerField()
    ticket = peewee.BlobField()
    received_at = peewee.FloatField()
    submitted_at = peewee.FloatField(null=True)
    submit_tx = peewee.BlobField(null=True)
    accepted = peewee.BooleanField(null=True)

    class Meta:
        table_name = "tickets"
        primary_key = peewee.CompositeKey("device", "fleet", "epoch")


class DhtObjectModel(_Base):
    """Signed DHT values this node stores for the network (SPEC 6)."""

    key = peewee.BlobField(primary_key=True)
    value = peewee.BlobField()
    signer = peewee.BlobField()
    version = peewee.IntegerField()
    expires_at = peewee.FloatField()

    class Meta:
        table_name = "dht_objects"


class CacheL2(_Base):
    """The L2 tier of the chain cache (SPEC 7): values by namespace and key, with expiry."""

    namespace = peewee.TextField()
    key = peewee.TextField()
    value = peewee.BlobField()
    expires_at = peewee.FloatField()

    class Meta:
        table_name = "cache_l2"
        primary_key = peewee.CompositeKey("namespace", "key")


ALL_MODELS: tuple[type[_Base], ...] = (
    NodeStats,
    PeerHistory,
    RewardTracking,
    Kv,
    Ticket,
    DhtObjectModel,
    CacheL2,
)
