"""The Channels actor's ledger (chrnode.edge.channel_ledger), pure: totals across restarts of the
network loop, malformed reports ignored whole."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chrnode.edge.channel_ledger import COUNTERS, ChannelLedger


def _status(values: dict[str, int], members: int = 0, run: str = "r0") -> dict[str, Any]:
    listed = [{"target": "0x01", "port": 1, "members": [{"ref": i} for i in range(members)]}]
    return {**values, "run": run, "channels": 1, "members": members, "list": listed}


# Each loop's counters only grow; a restart starts them again at 0.
loops = st.lists(
    st.lists(st.tuples(*(st.integers(0, 1000) for _ in COUNTERS), st.integers(0, 5)), min_size=1, max_size=8),
    min_size=1,
    max_size=4,
)


@given(loops)
def test_totals_add_up_over_restarts_and_never_go_down(runs: list[list[tuple[int, ...]]]) -> None:
    ledger = ChannelLedger()
    earlier = dict.fromkeys(COUNTERS, 0)  # what finished runs counted
    peak = 0
    for number, run in enumerate(runs):
        current = dict.fromkeys(COUNTERS, 0)
        for step in run:
            *increments, members = step
            before = ledger.totals()
            current = {name: current[name] + inc for name, inc in zip(COUNTERS, increments, strict=True)}
            assert ledger.report(_status(current, members, f"run{number}"), 1.0)
            totals = ledger.totals()
            assert totals == {name: earlier[name] + current[name] for name in COUNTERS}
            assert all(totals[name] >= before[name] for name in COUNTERS)
            peak = max(peak, members)
        earlier = {name: earlier[name] + current[name] for name in COUNTERS}
    assert ledger.peak_members == peak and ledger.restarts_seen == len(runs) - 1
    view = ledger.view()
    assert view["members"] == runs[-1][-1][-1] and view["channels"] == 1


def test_a_restart_keeps_what_the_old_loop_counted() -> None:
    ledger = ChannelLedger()
    ledger.report(_status(dict.fromkeys(COUNTERS, 10), 3), 1.0)
    ledger.report(_status(dict.fromkeys(COUNTERS, 2), 1, run="r1"), 2.0)  # a new network loop
    assert ledger.totals() == dict.fromkeys(COUNTERS, 12)
    assert ledger.restarts_seen == 1 and ledger.peak_members == 3 and ledger.members == 1


@given(st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(), st.integers())))
def test_malformed_reports_are_ignored_whole(junk: object) -> None:
    ledger = ChannelLedger()
    ledger.report(_status(dict.fromkeys(COUNTERS, 5), 2), 1.0)
    before = ledger.view()
    assert not ledger.report(junk, 2.0)
    bad = {**_status(dict.fromkeys(COUNTERS, 5)), "bytes_delivered": -1}
    assert not ledger.report(bad, 2.0)
    assert not ledger.report(_status(dict.fromkeys(COUNTERS, 4)), 2.0)  # one run's counters went back
    assert not ledger.report({**_status(dict.fromkeys(COUNTERS, 6)), "run": 7}, 2.0)
    assert ledger.view() == before
