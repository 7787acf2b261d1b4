"""Cron: named jobs at intervals (seed: Cron). A job is a `RunJob` sent to a named actor, which
answers `JobDone`; last run, next run, failures and durations are published for `cron_jobs`."""

from __future__ import annotations

import time
from typing import Any

from actors import messages as m
from actors.base import ChrActor
from chrnode.cron import Schedule

# name, target actor, interval (s), first delay (s)
JOBS: tuple[tuple[str, str, float, float], ...] = (
    ("stats_rollup", "Network.Stats", 60.0, 60.0),
    ("connectivity_check", "Connectivity", 30.0, 2.0),
    ("storage_maintenance", "Model.Sql.Worker", 300.0, 30.0),
)


class Cron(ChrActor):
    def on_start(self, init: m.Init) -> None:
        self.schedule = Schedule()
        self.targets: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.pending_tick: float | None = None
        now = time.time()
        for name, target, interval, first in JOBS:
            self._add(name, target, interval, first, now)
        self._arm(now)

    def _add(self, name: str, target: str, interval: float, first_delay: float, now: float) -> None:
        if name in self.targets:
            self.schedule.remove(name)  # re-registering changes the interval
        self.targets[name] = target
        self.schedule.add(name, interval, first_delay, now=now)

    def receiveMsg_CronRegister(self, msg: m.CronRegister, sender: Any) -> None:
        now = time.time()
        self._add(msg.name, msg.target, msg.interval, msg.first_delay, now)
        self._publish()
        self._arm(now)

    def on_timer(self, payload: Any) -> None:
        if payload != "tick":
            return
        now = time.time()
        if self.pending_tick is not None and now + 0.01 < self.pending_tick:
            return  # an older tick, superseded by an earlier one
        self.pending_tick = None
        for name in self.schedule.due(now):
            self.started[name] = time.perf_counter()
            if not self.send_to(self.targets[name], m.RunJob(name)):
                # Not a failed run (the process layer shows an actor that is down): try again soon.
                self.started.pop(name, None)
                self.schedule.mark_skipped(name, now, f"{self.targets[name]} is not running")
        self._publish()
        self._arm(now)

    def receiveMsg_JobDone(self, msg: m.JobDone, sender: Any) -> None:
        if msg.name not in self.targets:
            return
        began = self.started.pop(msg.name, None)
        duration = time.perf_counter() - began if began is not None else msg.duration
        self.schedule.mark_done(msg.name, time.time(), ok=msg.ok, error=msg.error, duration=duration)
        if not msg.ok:
            self.log.warning("job %s failed: %s", msg.name, msg.error)
        self._publish()

    def on_pubsub_ready(self) -> None:
        self._publish()

    def _arm(self, now: float) -> None:
        # One pending tick at a time: re-arm only when the next job is due before the pending tick.
        delay = self.schedule.next_wakeup(now)
        if delay is None:
            return
        due = now + max(0.05, delay)
        if self.pending_tick is not None and self.pending_tick <= due:
            return
        self.pending_tick = due
        self.wakeupAfter(due - now, payload="tick")

    def _publish(self) -> None:
        jobs = self.schedule.snapshot()
        for job in jobs:
            job["target"] = self.targets.get(str(job["name"]), "")
        self.publish("snapshot", "cron", jobs)
