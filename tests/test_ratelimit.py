"""Token buckets (chrnode.edge.ratelimit): never more than the burst plus what the rate refills."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.edge.ratelimit import TokenBucket


def test_a_bucket_left_full_lets_only_its_burst_through_at_once() -> None:
    clock = [0.0]
    bucket = TokenBucket(rate=200.0, burst=400.0, now=0.0)
    clock[0] = 2.0  # the link sat idle for two seconds: the bucket was full all along
    served = sum(bucket.spend(lambda: clock[0]) for _ in range(1000))
    assert served == 400


@given(st.lists(st.tuples(st.floats(0, 0.5), st.integers(1, 50)), max_size=60), st.floats(0, 10))
@settings(max_examples=300, deadline=None)
def test_spent_never_exceeds_the_burst_plus_the_refill(bursts: list[tuple[float, int]], idle: float) -> None:
    rate, burst = 100.0, 40.0
    clock = [idle]  # the bucket was created at 0 and sat idle (full) until now
    bucket = TokenBucket(rate, burst, 0.0)
    spent, start = 0, clock[0]
    for gap, count in bursts:
        clock[0] += gap
        spent += sum(bucket.spend(lambda: clock[0]) for _ in range(count))
        assert spent <= burst + rate * (clock[0] - start) + 1e-6
