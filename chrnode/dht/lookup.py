r"""An event-driven Kademlia lookup (SPEC 6): FIND_NODE and FIND_VALUE, alpha in flight, never
waiting on a dead or slow contact before asking the next one.

A lookup holds the candidates it has heard of, by distance to the target, each in one state:

    HEARD --query--> WAITING --answer--> ANSWERED
                        |  \--failure (reset, error, hard timeout)--> FAILED
                        \--soft timeout--> SLOW --abandon--> ABANDONED
                                   \ (not among the BETA closest) --> ABANDONED
                                             (both: an answer -> ANSWERED, a failure -> FAILED)

At most `alpha` candidates are WAITING. The "window" is the k closest candidates that are
neither ABANDONED nor FAILED. Every event (an answer, a failure, a timeout) immediately queries
the closest HEARD candidates of the window until alpha are WAITING again: there are no rounds.
Once `alpha` answers in a row brought no candidate closer than the closest already known, the
lookup has converged and the rest of the window is queried at once (up to k in flight: the
paper's final step, "resend the FIND_NODE to all of the k closest not already queried", made
event-driven); otherwise k answers at alpha in flight would take k / alpha round trips.

Two timeouts come before the hard one, both set by the caller from measured round trips (see
`rtt`). The soft timeout frees the contact's slot, so the next contact is asked at once. A
contact among the BETA = 3 closest of the window then stays in the window until a second
timeout (`abandon`, by default three times the soft one), so a merely slow closest node still
gets the time to answer; any other leaves the window at its soft timeout (libp2p's "beta":
only the closest few are worth a wait). A silent contact therefore costs a lookup one
round-trip timeout, or three near the top, never the hard timeout. The query stays open
throughout: a late answer counts while the lookup runs. The lookup is done when the window
holds only ANSWERED candidates, or for FIND_VALUE as soon as a candidate returns the value.

The lookup is pure: the node sends the queries it returns and reports what happens to them.
Hops: a seed is queried at hop 1, a contact first named by a hop-h answer at hop h + 1.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from chrnode.dht.ids import ALPHA, Contact, K, as_int
from chrnode.dht.store import Value


class State(Enum):
    """A candidate's state in one lookup (see the module docstring)."""

    HEARD = "heard"
    WAITING = "waiting"
    SLOW = "slow"
    ABANDONED = "abandoned"
    ANSWERED = "answered"
    FAILED = "failed"


BETA = 3  # the closest candidates a soft timeout keeps in the window until abandoned

_OPEN = (State.WAITING, State.SLOW, State.ABANDONED)  # a query is out
_WINDOW = (State.HEARD, State.WAITING, State.SLOW, State.ANSWERED)


@dataclass
class Candidate:
    contact: Contact
    distance: int
    hops: int
    state: State = State.HEARD


@dataclass(frozen=True)
class LookupResult:
    target: bytes
    find_value: bool
    closest: list[Contact]  # the k closest that answered, closest first
    value: Value | None = None
    value_from: Contact | None = None
    cache_at: Contact | None = None  # FIND_VALUE: the closest that answered without the value
    hops: int = 0
    queries: int = 0
    failures: int = 0
    unqueried: list[Contact] = field(default_factory=list)  # heard of, never asked: pending

    @property
    def ok(self) -> bool:
        return self.value is not None if self.find_value else bool(self.closest)


class LookupMachine(Protocol):
    """What the node drives; `Lookup` and the lockstep baseline both implement it."""

    target: bytes
    find_value: bool

    @property
    def done(self) -> bool: ...

    def start(self) -> list[Contact]: ...

    def answered(self, address: bytes, nodes: list[Contact]) -> list[Contact]: ...

    def found(self, address: bytes, value: Value) -> list[Contact]: ...

    def soft_timeout(self, address: bytes) -> list[Contact]: ...

    def abandon(self, address: bytes) -> list[Contact]: ...

    def failed(self, address: bytes) -> list[Contact]: ...

    def result(self) -> LookupResult: ...


@dataclass
class Candidates:
    """The candidates of one lookup, kept sorted by distance to its target."""

    target: bytes
    own: bytes | None
    by_address: dict[bytes, Candidate] = field(default_factory=dict)
    order: list[tuple[int, bytes]] = field(default_factory=list)

    def add(self, contact: Contact, hops: int) -> None:
        if contact.address == self.own:
            return
        known = self.by_address.get(contact.address)
        if known is not None:
            known.hops = min(known.hops, hops)
            return
        d = as_int(contact.address) ^ as_int(self.target)
        self.by_address[contact.address] = Candidate(contact, d, hops)
        bisect.insort(self.order, (d, contact.address))

    def in_order(self) -> list[Candidate]:
        return [self.by_address[a] for _, a in self.order]

    def closest_in(self, *states: State, n: int = K) -> list[Candidate]:
        found: list[Candidate] = []
        for _, address in self.order:
            candidate = self.by_address[address]
            if candidate.state in states:
                found.append(candidate)
                if len(found) >= n:
                    break
        return found


class LookupBase:
    """What every lookup keeps (this one and chrnode.dht.lockstep's baseline): the candidates
    from the seeds, the counts, the value found, and the result they make."""

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
        if k < 1 or alpha < 1:
            raise ValueError("k and alpha must be at least 1")
        self.target, self.find_value, self.k, self.alpha = target, find_value, k, alpha
        self.candidates = Candidates(target, own)
        for seed in seeds:
            self.candidates.add(seed, 1)
        self.queries = 0
        self.failures = 0
        self._done = False
        self._value: tuple[Value, Candidate] | None = None

    @property
    def done(self) -> bool:
        return self._done

    def result(self) -> LookupResult:
        answered = self.candidates.closest_in(State.ANSWERED, n=self.k)
        value, source = self._value if self._value else (None, None)
        cache_at = None
        if source is not None:
            cache_at = next((c.contact for c in answered if c is not source), None)
        hops = source.hops if source else (answered[0].hops if answered else 0)
        return LookupResult(
            self.target,
            self.find_value,
            [c.contact for c in answered],
            value,
            source.contact if source else None,
            cache_at,
            hops,
            self.queries,
            self.failures,
            self._unqueried(),
        )

    def _unqueried(self) -> list[Contact]:
        """Heard of, never asked: the node probes them (SPEC 6: they enter once they answer)."""
        return [c.contact for c in self.candidates.closest_in(State.HEARD, n=self.k)]


class Lookup(LookupBase):
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
        self._waiting = 0
        self._slow = 0
        self._limit = alpha  # queries in flight; k once the lookup has converged
        self._stale_answers = 0

    def start(self) -> list[Contact]:
        return self._advance()

    def answered(self, address: bytes, nodes: list[Contact]) -> list[Contact]:
        candidate = self._open(address)
        if candidate is None:
            return []
        self._settle(candidate, State.ANSWERED)
        best = self.candidates.order[0][0]
        for contact in nodes:
            self.candidates.add(contact, candidate.hops + 1)
        if self.candidates.order[0][0] < best:
            self._stale_answers = 0
        else:
            self._stale_answers += 1
            if self._stale_answers >= self.alpha:
                self._limit = self.k
        return self._advance()

    def found(self, address: bytes, value: Value) -> list[Contact]:
        candidate = self._open(address)
        if candidate is None or not self.find_value or value.key != self.target:
            return self.failed(address) if candidate is not None else []
        self._settle(candidate, State.ANSWERED)
        self._value = (value, candidate)
        self._done = True
        return []

    def soft_timeout(self, address: bytes) -> list[Contact]:
        candidate = self.candidates.by_address.get(address)
        if candidate is None or candidate.state is not State.WAITING:
            return []
        self._waiting -= 1
        self._slow += 1
        # Only the closest few are worth waiting for past the soft timeout (libp2p's beta).
        protected = self.candidates.closest_in(*_WINDOW, n=BETA)
        candidate.state = State.SLOW if candidate in protected else State.ABANDONED
        return self._advance()

    def abandon(self, address: bytes) -> list[Contact]:
        candidate = self.candidates.by_address.get(address)
        if self._done or candidate is None or candidate.state is not State.SLOW:
            return []
        candidate.state = State.ABANDONED
        return self._advance()

    def failed(self, address: bytes) -> list[Contact]:
        candidate = self._open(address)
        if candidate is None:
            return []
        self._settle(candidate, State.FAILED)
        self.failures += 1
        return self._advance()

    # -- internals -----------------------------------------------------------------------------

    def _open(self, address: bytes) -> Candidate | None:
        """The candidate with a query open (WAITING, SLOW, ABANDONED) while the lookup runs."""
        candidate = self.candidates.by_address.get(address)
        if self._done or candidate is None or candidate.state not in _OPEN:
            return None
        return candidate

    def _settle(self, candidate: Candidate, state: State) -> None:
        if candidate.state is State.WAITING:
            self._waiting -= 1
        elif candidate.state in (State.SLOW, State.ABANDONED):
            self._slow -= 1
        candidate.state = state

    def _advance(self) -> list[Contact]:
        if self._done:
            return []
        window = self.candidates.closest_in(*_WINDOW, n=self.k)
        queries: list[Contact] = []
        for candidate in window:
            if self._waiting >= self._limit:
                break
            if candidate.state is State.HEARD:
                candidate.state = State.WAITING
                self._waiting += 1
                self.queries += 1
                queries.append(candidate.contact)
        unsettled = any(c.state is not State.ANSWERED for c in window)
        if not unsettled and (window or not self._slow):
            self._done = True
        return queries
