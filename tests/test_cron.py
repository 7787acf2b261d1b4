"""The pure cron scheduler (seed: Cron): due jobs, phase, missed slots, failures, timeouts."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chrnode.cron import Schedule


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
