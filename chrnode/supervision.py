"""Pure parts of OTP-style supervision (SPEC 9): restart decisions and restart intensity."""

from __future__ import annotations

from collections import deque
from typing import Literal

RestartType = Literal["permanent", "transient", "temporary"]


def should_restart(restart: RestartType, abnormal: bool) -> bool:
    """permanent: always; transient: only after an abnormal exit; temporary: never."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return abnormal
    return False


class Intensity:
    """At most `max_restarts` restarts within `window` seconds; one more means give up (escalate).

    Same rule as OTP's `intensity`/`period`: with max_restarts=5 and window=5, a sixth restart
    inside any 5-second window makes the supervisor stop its children and exit.
    """

    def __init__(self, max_restarts: int, window: float) -> None:
        if max_restarts < 0 or window <= 0:
            raise ValueError("max_restarts must be >= 0 and window > 0")
        self.max_restarts = max_restarts
        self.window = window
        self._times: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Count a restart at `now`; False when the limit is exceeded (the caller escalates)."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return len(self._times) <= self.max_restarts

    @property
    def recent(self) -> int:
        return len(self._times)
