"""A pure periodic-job scheduler: the Cron actor's brain, without the actor (seed: Cron).

The actor owns the clock and the wake-ups; this module only decides what is due. Times are
monotonic seconds passed in by the caller. A job is handed out by `due()` once and then counts as
running until `mark_done()`; a job that never reports back is given up after its timeout, counted
as a failure and becomes due again, so a lost message cannot stop a job for good. A job that falls
behind (the node was suspended, a run took longer than its interval) runs once, not once per
missed slot, and keeps its phase.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Job:
    """One periodic job and its record (what the `cron_jobs` RPC shows)."""

    name: str
    interval_s: float
    timeout_s: float
    next_run: float
    last_run: float | None = None
    runs: int = 0
    failures: int = 0
    last_error: str | None = None
    last_duration: float | None = None
    running_since: float | None = None
    skipped: int = 0  # hand-outs that could not be delivered (the target was not running)
    last_skip: str | None = None


def _positive(what: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{what}: got {value!r}; expected a positive finite number of seconds")
    return float(value)


class Schedule:
    """Named periodic jobs. Not thread-safe: one actor owns it."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def add(
        self,
        name: str,
        interval_s: float,
        first_delay: float | None = None,
        *,
        now: float,
        timeout_s: float | None = None,
    ) -> Job:
        """Schedule `name` every `interval_s`, first after `first_delay` (default: one interval).

        `timeout_s` (default: the interval, at least 60 s) is how long a handed-out run may take
        before it is counted as failed and handed out again.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"cron job name: got {name!r}; expected a non-empty str")
        if name in self._jobs:
            raise ValueError(f"cron job {name!r} is already scheduled; remove it first to change it")
        interval = _positive(f"cron job {name!r} interval", interval_s)
        delay = interval if first_delay is None else first_delay
        if (
            isinstance(delay, bool)
            or not isinstance(delay, (int, float))
            or not math.isfinite(delay)
            or delay < 0
        ):
            raise ValueError(f"cron job {name!r} first delay: got {first_delay!r}; expected seconds >= 0")
        timeout = (
            max(interval, 60.0) if timeout_s is None else _positive(f"cron job {name!r} timeout", timeout_s)
        )
        job = Job(name=name, interval_s=interval, timeout_s=timeout, next_run=now + float(delay))
        self._jobs[name] = job
        return job

    def remove(self, name: str) -> None:
        self._job(name)
        del self._jobs[name]

    def names(self) -> list[str]:
        return list(self._jobs)

    def _job(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            known = ", ".join(sorted(self._jobs)) or "none"
            raise KeyError(f"no cron job named {name!r}; scheduled jobs: {known}") from None

    def due(self, now: float) -> list[str]:
        """Names of the jobs to start now, soonest first; they count as running until mark_done."""
        self._expire_running(now)
        ready = [job for job in self._jobs.values() if job.running_since is None and job.next_run <= now]
        ready.sort(key=lambda job: (job.next_run, job.name))
        for job in ready:
            job.running_since = now
        return [job.name for job in ready]

    def _expire_running(self, now: float) -> None:
        for job in self._jobs.values():
            if job.running_since is not None and now - job.running_since >= job.timeout_s:
                started = job.running_since
                job.running_since = None
                job.failures += 1
                job.last_error = (
                    f"no result within the timeout of {job.timeout_s:g} s (started at {started:.3f})"
                )
                job.next_run = now  # retry at once

    def mark_done(
        self,
        name: str,
        now: float,
        ok: bool,
        error: str | None = None,
        duration: float | None = None,
    ) -> None:
        """Record the end of a run of `name` and schedule its next run on the job's phase."""
        job = self._job(name)
        started = job.running_since
        job.running_since = None
        job.runs += 1
        job.last_run = now
        job.last_duration = (
            duration if duration is not None else (now - started if started is not None else None)
        )
        if ok:
            job.last_error = None
        else:
            job.failures += 1
            job.last_error = error or "failed without a message"
        # Keep the phase (next_run + k * interval) but skip missed slots: one catch-up run only.
        if job.next_run > now:
            return
        missed = math.floor((now - job.next_run) / job.interval_s) + 1
        job.next_run += missed * job.interval_s

    def mark_skipped(self, name: str, now: float, reason: str, retry_in: float = 1.0) -> None:
        """The run of `name` handed out by due() could not start (its target is not running, as
        while the node starts): not a run and not a failure of the job, which stays as it was;
        it is handed out again after `retry_in` seconds (at most its interval)."""
        job = self._job(name)
        job.running_since = None
        job.skipped += 1
        job.last_skip = reason
        job.next_run = now + min(retry_in, job.interval_s)

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until something needs attention (0.0 if now), None when no job is scheduled."""
        moments: list[float] = []
        for job in self._jobs.values():
            if job.running_since is None:
                moments.append(job.next_run)
            else:
                moments.append(job.running_since + job.timeout_s)
        if not moments:
            return None
        return max(0.0, min(moments) - now)

    def snapshot(self, now: float | None = None) -> list[dict[str, object]]:
        """Every job's record as JSON-ready dicts, by name (the `cron_jobs` RPC); with `now`, each
        also has `due_in_s`, since `next_run` is on the caller's monotonic clock."""
        out: list[dict[str, object]] = []
        for name in sorted(self._jobs):
            job = self._jobs[name]
            record: dict[str, object] = asdict(job)
            record["running"] = record.pop("running_since") is not None
            if now is not None:
                record["due_in_s"] = max(0.0, job.next_run - now)
            out.append(record)
        return out


@dataclass(frozen=True)
class Wake:
    """An action of the Planner: set a timer for `seconds`, then call `ring(token, ...)`."""

    seconds: float
    token: int


class Planner:
    """The Cron actor's decisions, events in and actions out: a Schedule, each job's target and the
    actor's one pending timer.

    Every event that changes the schedule returns the Wake to set, or None when the pending timer
    already comes first, so an adapter cannot forget to re-arm after a change (the actor once did
    after a run's end: a job every 2 s then ran only when another job's timer woke Cron, every
    30 s). Timers are told apart by token, not by time, so a step of the clock cannot make the
    actor take its only timer for a stale one and stop.
    """

    def __init__(self, floor: float = 0.05) -> None:
        self.schedule = Schedule()
        self.targets: dict[str, str] = {}
        self.floor = floor  # the shortest timer: a burst of due jobs is one wake-up, not a spin
        self._at: float | None = None  # when the pending timer rings, on the caller's clock
        self._token = 0

    def add(self, name: str, target: str, interval_s: float, first_delay: float, now: float) -> Wake | None:
        """Schedule `name` (sent to the actor named `target`); registering a name again replaces it."""
        if name in self.targets:
            self.schedule.remove(name)
        self.schedule.add(name, interval_s, first_delay, now=now)
        self.targets[name] = target
        return self._wake(now)

    def ring(self, token: int, now: float, deliver: Callable[[str, str], bool]) -> Wake | None:
        """A timer rang: hand out what is due through `deliver(job, target)`, which answers False
        when the target is not running (the run is then skipped and retried soon, not failed)."""
        if token != self._token:
            return None  # superseded by a sooner timer, which is still pending or has rung
        self._at = None
        for name in self.schedule.due(now):
            target = self.targets[name]
            if not deliver(name, target):
                self.schedule.mark_skipped(name, now, f"{target} is not running")
        return self._wake(now)

    def done(
        self, name: str, now: float, ok: bool, error: str | None = None, duration: float | None = None
    ) -> Wake | None:
        """A run of `name` ended (an answer for a job not scheduled here is ignored)."""
        if name not in self.targets:
            return None
        self.schedule.mark_done(name, now, ok, error, duration)
        return self._wake(now)

    def snapshot(self) -> list[dict[str, object]]:
        """Schedule.snapshot with each job's target (the `cron_jobs` RPC)."""
        jobs = self.schedule.snapshot()
        for job in jobs:
            job["target"] = self.targets.get(str(job["name"]), "")
        return jobs

    def _wake(self, now: float) -> Wake | None:
        delay = self.schedule.next_wakeup(now)
        if delay is None:
            return None
        at = now + max(self.floor, delay)
        if self._at is not None and self._at <= at:
            return None
        self._at = at
        self._token += 1
        return Wake(at - now, self._token)
