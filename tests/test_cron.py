"""The pure cron scheduler (seed: Cron): due jobs, phase, missed slots, failures, timeouts."""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.cron import Planner, Schedule, Wake


def test_jobs_become_due_after_their_first_delay_soonest_first() -> None:
    s = Schedule()
    s.add("slow", 60.0, now=0.0)  # first run after one interval by default
    s.add("fast", 10.0, first_delay=5.0, now=0.0)
    s.add("now", 30.0, first_delay=0.0, now=0.0)
    assert s.due(0.0) == ["now"]
    s.mark_done("now", now=0.0, ok=True)
    assert s.due(4.9) == []
    assert s.due(60.0) == ["fast", "now", "slow"]  # next runs at 5, 30 and 60
    assert sorted(s.names()) == ["fast", "now", "slow"]


def test_a_running_job_is_not_handed_out_twice() -> None:
    s = Schedule()
    s.add("j", 10.0, first_delay=0.0, now=0.0)
    assert s.due(0.0) == ["j"]
    assert s.due(25.0) == []  # still running
    s.mark_done("j", now=25.0, ok=True)
    assert s.due(25.0) == []
    assert s.due(30.0) == ["j"]


def test_mark_done_keeps_the_phase_and_skips_missed_slots() -> None:
    s = Schedule()
    s.add("j", 10.0, first_delay=0.0, now=0.0)
    s.due(0.0)
    s.mark_done("j", now=3.0, ok=True)
    assert s.next_wakeup(3.0) == pytest.approx(7.0)  # next slot at 10, not 13
    s.due(10.0)
    s.mark_done("j", now=47.5, ok=True)  # the run (or a suspend) overran 3 slots
    [job] = s.snapshot()
    assert job["next_run"] == 50.0  # one catch-up slot on the phase, not four runs in a row
    assert job["runs"] == 2
    assert job["last_run"] == 47.5
    assert job["last_duration"] == pytest.approx(37.5)


def test_failures_are_counted_and_cleared_message_on_success() -> None:
    s = Schedule()
    s.add("j", 5.0, first_delay=0.0, now=0.0)
    s.due(0.0)
    s.mark_done("j", now=1.0, ok=False, error="chain unavailable", duration=0.25)
    [job] = s.snapshot()
    assert (job["failures"], job["last_error"], job["last_duration"]) == (1, "chain unavailable", 0.25)
    s.due(5.0)
    s.mark_done("j", now=5.5, ok=False)
    assert s.snapshot()[0]["last_error"] == "failed without a message"
    s.due(10.0)
    s.mark_done("j", now=10.1, ok=True)
    [job] = s.snapshot()
    assert (job["runs"], job["failures"], job["last_error"]) == (3, 2, None)


def test_a_run_whose_target_is_not_running_is_skipped_not_failed_and_retried_soon() -> None:
    schedule = Schedule()
    schedule.add("check", 30.0, 2.0, now=0.0)
    assert schedule.due(2.0) == ["check"]
    schedule.mark_skipped("check", 2.0, "Connectivity is not running")  # the node is still starting
    (job,) = schedule.snapshot()
    assert (job["runs"], job["failures"], job["last_error"], job["skipped"]) == (0, 0, None, 1)
    assert job["last_skip"] == "Connectivity is not running" and not job["running"]
    assert schedule.due(2.5) == [] and schedule.due(3.0) == ["check"]
    schedule.mark_done("check", 3.1, ok=False, error="boom")  # a real failure still counts
    assert schedule.snapshot()[0]["failures"] == 1


def test_a_run_that_never_reports_back_times_out_and_is_retried() -> None:
    s = Schedule()
    s.add("j", 10.0, first_delay=0.0, now=0.0, timeout_s=30.0)
    assert s.due(0.0) == ["j"]
    assert s.next_wakeup(0.0) == 30.0  # the timeout is the next thing to look at
    assert s.due(29.9) == []
    assert s.due(30.0) == ["j"]  # given up on the lost run, handed out again
    [job] = s.snapshot()
    assert job["failures"] == 1 and "timeout of 30 s" in str(job["last_error"]) and job["running"] is True


def test_next_wakeup() -> None:
    s = Schedule()
    assert s.next_wakeup(0.0) is None
    s.add("a", 10.0, first_delay=4.0, now=100.0)
    s.add("b", 10.0, first_delay=2.0, now=100.0)
    assert s.next_wakeup(100.0) == pytest.approx(2.0)
    assert s.next_wakeup(150.0) == 0.0


def test_snapshot_is_json_ready_and_sorted() -> None:
    s = Schedule()
    s.add("zeta", 1.0, now=0.0)
    s.add("alpha", 2.0, now=0.0)
    snap = s.snapshot(now=0.5)
    assert [j["name"] for j in snap] == ["alpha", "zeta"]
    assert snap[1]["due_in_s"] == 0.5
    assert set(snap[0]) >= {"name", "interval_s", "last_run", "next_run", "runs", "failures", "last_error",
                            "last_duration", "running"}  # fmt: skip
    assert json.loads(json.dumps(snap)) == snap


def test_remove_and_unknown_names() -> None:
    s = Schedule()
    s.add("a", 1.0, now=0.0)
    s.remove("a")
    assert s.due(100.0) == []
    with pytest.raises(KeyError, match="no cron job named 'a'; scheduled jobs: none"):
        s.mark_done("a", now=1.0, ok=True)
    with pytest.raises(KeyError, match="no cron job named 'b'"):
        s.remove("b")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "interval_s": 1.0}, "name: got ''"),
        ({"name": "x", "interval_s": 0.0}, "interval: got 0.0; expected a positive"),
        ({"name": "x", "interval_s": math.nan}, "interval: got nan"),
        ({"name": "x", "interval_s": 1.0, "first_delay": -1.0}, "first delay: got -1.0"),
        ({"name": "x", "interval_s": 1.0, "timeout_s": -2}, "timeout: got -2"),
    ],
)
def test_bad_jobs_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule().add(now=0.0, **kwargs)  # type: ignore[arg-type]


def test_duplicate_job_is_refused() -> None:
    s = Schedule()
    s.add("a", 1.0, now=0.0)
    with pytest.raises(ValueError, match="already scheduled"):
        s.add("a", 2.0, now=0.0)


@given(
    jobs=st.lists(
        st.tuples(st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=50)),
        min_size=1,
        max_size=5,
    ),
    horizon=st.integers(min_value=0, max_value=500),
)
def test_an_actor_that_sleeps_until_next_wakeup_runs_every_slot_once(
    jobs: list[tuple[int, int]], horizon: int
) -> None:
    """Simulate the Cron actor: sleep next_wakeup, run what is due at once. Every job then runs
    exactly once per slot up to the horizon, never early."""
    s = Schedule()
    for i, (interval, delay) in enumerate(jobs):
        s.add(f"j{i}", float(interval), first_delay=float(delay), now=0.0)
    now = 0.0
    runs: dict[str, list[float]] = {name: [] for name in s.names()}
    while True:
        wait = s.next_wakeup(now)
        assert wait is not None and wait >= 0
        now += wait
        if now > horizon:
            break
        due = s.due(now)
        assert due, "woken up for nothing"
        for name in due:
            runs[name].append(now)
            s.mark_done(name, now=now, ok=True)
    for i, (interval, delay) in enumerate(jobs):
        expected = [float(delay + k * interval) for k in range(0, (horizon - delay) // interval + 1)]
        assert runs[f"j{i}"] == (expected if delay <= horizon else [])


# --- Planner: the Cron actor's decisions (Schedule + its one pending timer), events in, actions out


def test_a_run_that_ends_re_arms_the_timer_for_the_jobs_next_slot() -> None:
    """The CI failure of stop 12 (issue 7's ticket test): a job every 2 s ran only when the 30 s
    job's timer woke Cron, because the end of a run did not re-arm the timer."""
    plan = Planner()
    first = plan.add("fast", "A", 2.0, 2.0, now=0.0)
    assert first == Wake(2.0, 1)
    assert plan.add("slow", "B", 30.0, 30.0, now=0.0) is None  # the pending timer comes first
    sent: list[tuple[str, str]] = []
    wake = plan.ring(1, 2.0, lambda job, target: sent.append((job, target)) is None)
    assert sent == [("fast", "A")]
    assert wake == Wake(28.0, 2)  # while "fast" runs, its timeout (60 s) and "slow" are what is next
    wake = plan.done("fast", 2.1, ok=True)
    assert wake is not None and wake.seconds == pytest.approx(1.9) and wake.token == 3
    assert plan.ring(2, 30.0, lambda job, target: True) is None  # superseded: ignored, nothing sent
    sent.clear()
    plan.ring(3, 4.0, lambda job, target: sent.append((job, target)) is None)
    assert sent == [("fast", "A")]


def test_a_target_that_is_down_is_skipped_and_the_timer_comes_back_soon() -> None:
    plan = Planner()
    plan.add("check", "Connectivity", 30.0, 2.0, now=0.0)
    wake = plan.ring(1, 2.0, lambda job, target: False)
    assert wake is not None and wake.seconds == pytest.approx(1.0)
    (job,) = plan.snapshot()
    assert (job["skipped"], job["last_skip"]) == (1, "Connectivity is not running")
    assert job["target"] == "Connectivity"
    assert job["runs"] == 0 and job["failures"] == 0


def test_a_clock_step_back_does_not_stop_the_timer() -> None:
    """Tokens, not times, tell the current timer: a tick seen 'early' on a clock set back an hour
    is still the pending one, and a new timer is set from the new clock."""
    plan = Planner()
    plan.add("j", "A", 10.0, 10.0, now=1000.0)
    wake = plan.ring(1, 1000.0 - 3600.0, lambda job, target: True)  # the clock went back
    assert wake is not None and wake.token == 2  # re-armed, not dropped
    assert plan.done("unknown", 0.0, ok=True) is None  # an answer for no job here changes nothing


@settings(max_examples=200)
@given(
    jobs=st.lists(
        st.tuples(st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=40)),
        min_size=1,
        max_size=4,
    ),
    durations=st.lists(st.floats(min_value=0.0, max_value=0.95), min_size=1, max_size=20),
)
def test_with_runs_that_end_later_every_job_is_handed_out_within_the_floor_of_its_slot(
    jobs: list[tuple[int, int]], durations: list[float]
) -> None:
    """Simulate the actor with a real event queue: timers ring at their time (stale ones too), each
    run answers some fraction of its interval later. No job waits past its due time by more than
    the Planner's floor, and none is handed out early or twice at once."""
    plan = Planner(floor=0.05)
    events: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(at: float, kind: str, data: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, data))

    def arm(now: float, wake: Wake | None) -> None:
        if wake is not None:
            push(now + wake.seconds, "timer", wake.token)

    intervals = {}
    for i, (interval, delay) in enumerate(jobs):
        intervals[f"j{i}"] = float(interval)
        arm(0.0, plan.add(f"j{i}", "T", float(interval), float(delay), now=0.0))
    due_at = {f"j{i}": float(delay) for i, (_, delay) in enumerate(jobs)}
    running: set[str] = set()
    handouts = 0
    horizon = 200.0

    def deliver_at(now: float) -> Callable[[str, str], bool]:
        def deliver(job: str, target: str) -> bool:
            nonlocal handouts
            assert job not in running, f"{job} handed out while running"
            assert now >= due_at[job] - 1e-9, f"{job} early: {now} < {due_at[job]}"
            assert now <= due_at[job] + 0.05 + 1e-9, f"{job} late: {now} > {due_at[job]} + floor"
            running.add(job)
            push(now + durations[handouts % len(durations)] * intervals[job], "done", job)
            handouts += 1
            return True

        return deliver

    while events:
        now, _, kind, data = heapq.heappop(events)
        if now > horizon:
            break
        if kind == "timer":
            assert isinstance(data, int)
            arm(now, plan.ring(data, now, deliver_at(now)))
        else:
            assert isinstance(data, str)
            running.discard(data)
            arm(now, plan.done(data, now, ok=True))
            (record,) = [j for j in plan.snapshot() if j["name"] == data]
            due_at[data] = float(record["next_run"])  # type: ignore[arg-type]
    assert handouts >= len(jobs)  # every job ran at least once (first delays are within the horizon)
