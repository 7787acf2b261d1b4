"""Pending requests by id (chrnode.edge.pending), on a real event loop: each callback exactly once,
with its answer, or None on timeout or close."""

from __future__ import annotations

import asyncio

from chrnode.edge.pending import Pending
from chrnode.testing.edge import async_test


@async_test(timeout=10)
async def test_answers_timeouts_and_close_each_call_back_once() -> None:
    loop = asyncio.get_running_loop()
    errors: list[int] = []
    pending: Pending[str] = Pending(loop, lambda: errors.append(1), last_id=1)
    got: dict[str, list[str | None]] = {"a": [], "b": [], "c": [], "d": []}
    ids = [pending.add(got[k].append, timeout) for k, timeout in (("a", 5), ("b", 0.05), ("c", 5), ("d", 5))]
    assert ids == [2, 3, 4, 5] and pending.next_id() == 6 and len(pending) == 4
    assert pending.waits(2) and not pending.waits(6) and not pending.waits(None)
    assert pending.answer(2, "answer a")
    assert not pending.answer(2, "again")  # answered already: the caller counts a fault
    await asyncio.sleep(0.2)
    assert got["b"] == [None] and not pending.answer(3, "late")  # timed out, then a late answer
    assert not pending.answer(None, "no id")
    pending.close()
    assert got == {"a": ["answer a"], "b": [None], "c": [None], "d": [None]}
    assert len(pending) == 0 and errors == []


@async_test(timeout=10)
async def test_a_callback_that_raises_is_reported_and_the_others_still_run() -> None:
    errors: list[str] = []
    pending: Pending[str] = Pending(asyncio.get_running_loop(), lambda: errors.append("raised"))
    seen: list[str | None] = []

    def bad(answer: str | None) -> None:
        raise RuntimeError("a broken handler")

    pending.add(bad, 5)
    pending.add(seen.append, 5)
    pending.close()
    assert errors == ["raised"] and seen == [None]
