"""The round-based lookup of PyPI `kademlia` (bmuller's `SpiderCrawl`), kept as the baseline
that the benchmarks and the simulator measure `lookup.Lookup` against. Not used by the node.

Each round queries the alpha closest uncontacted of the k nearest candidates and waits for all
of them (answer, failure, or hard timeout: a soft timeout means nothing here); when a round
leaves the k nearest unchanged, the next round queries all of their uncontacted ones. Done when
all k nearest have been contacted, or, for FIND_VALUE, at the end of a round that found it.
One dead or silent contact therefore stalls its whole round, which is what SPEC 6 forbids.
The candidates, counts and result are `lookup.LookupBase`'s, shared with the event-driven lookup.
"""

from __future__ import annotations

from chrnode.dht.ids import ALPHA, Contact, K
from chrnode.dht.lookup import Candidate, LookupBase, State
from chrnode.dht.store import Value


class LockstepLookup(LookupBase):
    def __init__(
        self,
        target: bytes,
        seeds: list[Contact],
        *,
        find_value: bool = False,
        own: bytes | None = None,
        k: int = K,
        alpha: int = ALPHA,
    ) -> None:
        super().__init__(target, seeds, find_value=find_value, own=own, k=k, alpha=alpha)
        self._round: set[bytes] = set()
        self._last_nearest: list[bytes] | None = None

    def start(self) -> list[Contact]:
        return self._next_round()

    def answered(self, address: bytes, nodes: list[Contact]) -> list[Contact]:
        candidate = self._in_round(address)
        if candidate is None:
            return []
        candidate.state = State.ANSWERED
        for contact in nodes:
            self.candidates.add(contact, candidate.hops + 1)
        return self._round_over(address)

    def found(self, address: bytes, value: Value) -> list[Contact]:
        candidate = self._in_round(address)
        if candidate is None:
            return []
        if value.key != self.target:
            return self.failed(address)
        candidate.state = State.ANSWERED
        if self._value is None:
            self._value = (value, candidate)
        return self._round_over(address)

    def soft_timeout(self, address: bytes) -> list[Contact]:
        return []  # a round waits for every query it sent

    def abandon(self, address: bytes) -> list[Contact]:
        return []

    def failed(self, address: bytes) -> list[Contact]:
        candidate = self._in_round(address)
        if candidate is None:
            return []
        candidate.state = State.FAILED
        self.failures += 1
        return self._round_over(address)

    def _unqueried(self) -> list[Contact]:
        return []  # PyPI kademlia does not verify the contacts it heard of

    def _in_round(self, address: bytes) -> Candidate | None:
        if self._done or address not in self._round:
            return None
        return self.candidates.by_address[address]

    def _round_over(self, address: bytes) -> list[Contact]:
        self._round.discard(address)
        if self._round:
            return []
        if self._value is not None:
            self._done = True
            return []
        return self._next_round()

    def _next_round(self) -> list[Contact]:
        nearest = self.candidates.closest_in(State.HEARD, State.ANSWERED, n=self.k)
        uncontacted = [c for c in nearest if c.state is State.HEARD]
        if not uncontacted:
            self._done = True
            return []
        ids = [c.contact.address for c in nearest]
        count = len(nearest) if ids == self._last_nearest else self.alpha
        self._last_nearest = ids
        queries = uncontacted[:count]
        for candidate in queries:
            candidate.state = State.WAITING
            self._round.add(candidate.contact.address)
        self.queries += len(queries)
        return [c.contact for c in queries]
