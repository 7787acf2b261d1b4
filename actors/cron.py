"""Cron: named jobs at intervals (seed: Cron). A job is a `RunJob` sent to a named actor, which
answers `JobDone`; last run, next run, failures and durations are published for `cron_jobs`."""

from __future__ import annotations

import time
from typing import Any

from actors import messages as m
from actors.base import ChrActor
from chrnode.cron import Planner, Wake

# name, target actor, interval (s), first delay (s)
JOBS: tuple[tuple[str, str, float, float], ...] = (
    ("stats_rollup", "Network.Stats", 60.0, 60.0),
    ("connectivity_check", "Connectivity", 30.0, 2.0),
    ("storage_maintenance", "Model.Sql.Worker", 300.0, 30.0),
)

TIMER = "cron"  # the payload of its timers: (TIMER, token)


class Cron(ChrActor):
    """Thin adapter: the Planner decides (chrnode/cron.py); this actor keeps its timer and sends."""

    def on_start(self, init: m.Init) -> None:
        self.plan = Planner()
        self.started: dict[str, float] = {}  # job -> perf_counter at hand-out, for its duration
        now = time.time()
        for name, target, interval, first in JOBS:
            self._arm(self.plan.add(name, target, interval, first, now))

    def receiveMsg_CronRegister(self, msg: m.CronRegister, sender: Any) -> None:
        self._arm(self.plan.add(msg.name, msg.target, msg.interval, msg.first_delay, time.time()))
        self._publish()

    def on_timer(self, payload: Any) -> None:
        if not (isinstance(payload, tuple) and len(payload) == 2 and payload[0] == TIMER):
            return
        self._arm(self.plan.ring(payload[1], time.time(), self._deliver))
        self._publish()

    def _deliver(self, name: str, target: str) -> bool:
        self.started[name] = time.perf_counter()
        if self.send_to(target, m.RunJob(name)):
            return True
        self.started.pop(name, None)  # not a failed run (the process layer shows an actor that is down)
        return False

    def receiveMsg_JobDone(self, msg: m.JobDone, sender: Any) -> None:
        began = self.started.pop(msg.name, None)
        duration = time.perf_counter() - began if began is not None else msg.duration
        if msg.name in self.plan.targets and not msg.ok:
            self.log.warning("job %s failed: %s", msg.name, msg.error)
        self._arm(self.plan.done(msg.name, time.time(), msg.ok, msg.error, duration))
        self._publish()

    def on_pubsub_ready(self) -> None:
        self._publish()

    def _arm(self, wake: Wake | None) -> None:
        if wake is not None:
            self.wakeupAfter(wake.seconds, payload=(TIMER, wake.token))

    def _publish(self) -> None:
        self.publish("snapshot", "cron", self.plan.snapshot())
