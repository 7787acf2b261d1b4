"""The DHT's timers (SPEC 6): bucket refresh, republish of held values, expiry. Pure: the node
calls `run(now)` from its `tick(now)` when `next_run` has come, and acts on the `Work` returned.

- Refresh (Kademlia 2.3): a bucket in which no lookup ran for `refresh_interval` gets a lookup of
  a random id in its range, so the table keeps learning of nodes there even when no traffic goes
  that way. Buckets from the nearest populated one outwards are considered (nearer ranges hold no
  node that we could learn of).
- Republish (Kademlia 2.5): every held value, our own and other signers', is stored again at the
  k nodes closest to its key once per `republish_interval`; a value that arrived by STORE within
  the interval is skipped, because another holder just republished it.
- Expiry: a value is dropped at its own `expires` (SPEC 6): the node calls `ValueStore.expire` on
  every tick, so a lapsed location is never served, whatever this schedule is.

Checks run every `period` seconds, so timers are accurate to one period; the default period is
small beside the intervals (60 s against an hour).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from chrnode.dht.ids import random_id_in_bucket
from chrnode.dht.routing import RoutingTable
from chrnode.dht.store import Value, ValueStore


@dataclass(frozen=True)
class Work:
    refresh: list[bytes]  # lookup targets, one per stale bucket
    republish: list[Value]


class Maintenance:
    def __init__(
        self,
        *,
        refresh_interval: float = 3600.0,
        republish_interval: float = 3600.0,
        period: float = 60.0,
        started: float = 0.0,
    ) -> None:
        for name, value in (
            ("refresh_interval", refresh_interval),
            ("republish_interval", republish_interval),
            ("period", period),
        ):
            if value <= 0:
                raise ValueError(f"dht {name} must be positive, not {value}")
        self.refresh_interval = refresh_interval
        self.republish_interval = republish_interval
        self.period = period
        self.next_run = started + period

    def run(self, now: float, table: RoutingTable, store: ValueStore, rng: random.Random) -> Work:
        self.next_run = now + self.period
        targets = []
        for index in table.stale_buckets(now, self.refresh_interval):
            target = random_id_in_bucket(table.own, index, rng)
            table.touch(target, now)
            targets.append(target)
        return Work(targets, store.due_for_republish(now, self.republish_interval))
