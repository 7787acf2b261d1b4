"""Round-trip estimators that give each query its soft timeout (SPEC 6: never wait on a slow
contact before asking the next one).

The estimator is TCP's (RFC 6298): SRTT and RTTVAR smoothed with gains 1/8 and 1/4, and the
timeout SRTT + 4 RTTVAR, clamped. `RttTable` keeps one per contact and one for the whole
network; a contact that has not answered yet gets the network's figure, so the first query to a
newcomer is timed by what this node has measured, not by a constant.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

ALPHA_GAIN = 1 / 8
BETA_GAIN = 1 / 4


@dataclass
class RttEstimator:
    """SRTT/RTTVAR of one path (RFC 6298 section 2)."""

    initial: float
    floor: float
    ceiling: float
    srtt: float | None = None
    rttvar: float = 0.0

    def sample(self, rtt: float) -> None:
        if rtt < 0:
            raise ValueError(f"a round trip cannot be negative ({rtt})")
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
            return
        self.rttvar = (1 - BETA_GAIN) * self.rttvar + BETA_GAIN * abs(self.srtt - rtt)
        self.srtt = (1 - ALPHA_GAIN) * self.srtt + ALPHA_GAIN * rtt

    def timeout(self) -> float:
        """The soft timeout: SRTT + 4 RTTVAR within [floor, ceiling]; `initial` before a sample."""
        if self.srtt is None:
            return self.initial
        return min(self.ceiling, max(self.floor, self.srtt + 4 * self.rttvar))


class RttTable:
    """A network-wide estimator plus one per contact (the most recent `capacity` contacts)."""

    def __init__(
        self, initial: float = 1.0, floor: float = 0.05, ceiling: float = 2.0, capacity: int = 4096
    ) -> None:
        if not 0 < floor <= ceiling:
            raise ValueError(f"the RTT floor ({floor}) must be positive and at most the ceiling")
        self.initial, self.floor, self.ceiling, self.capacity = initial, floor, ceiling, capacity
        self.network = RttEstimator(initial, floor, ceiling)
        self._paths: OrderedDict[bytes, RttEstimator] = OrderedDict()

    def sample(self, address: bytes, rtt: float) -> None:
        self.network.sample(rtt)
        path = self._paths.pop(address, None)
        if path is None:
            path = RttEstimator(self.initial, self.floor, self.ceiling)
            if len(self._paths) >= self.capacity:
                self._paths.popitem(last=False)
        path.sample(rtt)
        self._paths[address] = path

    def timeout(self, address: bytes) -> float:
        path = self._paths.get(address)
        if path is not None and path.srtt is not None:
            return path.timeout()
        return self.network.timeout()
