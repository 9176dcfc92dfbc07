"""One gate every request passes: the operator's hard cap, the server's pauses,
and a sending rate learnt from the server's 429 answers.

VideoSDK documents no rate limit, so the permitted rate starts unlimited; the
first 429 sets it just under what the server accepted, and it then creeps back
up (fast while well under the last known ceiling, slowly past it), so a run
settles near the account's limit instead of storming or oscillating.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

MIN_RATE = 0.5  # requests/s: never throttle ourselves to a standstill
DEFAULT_PAUSE = 1.0  # seconds, when a 429 names no Retry-After
DECREASE = 0.85  # multiplicative decrease on a congestion event
RECOVER = 0.5  # per second: share of the gap to the last ceiling won back
PROBE = 0.01  # per second: relative growth past the ceiling (at least 1 request/s)
WINDOW = 1.0  # seconds of answers used to measure the accepted rate


class Throttle:
    """Paces requests; shared by all workers of a run."""

    __slots__ = (
        "_accepted",
        "_cap",
        "_ceiling",
        "_clock",
        "_last_decrease",
        "_last_grow",
        "_next_slot",
        "_paused_until",
        "_rate",
        "_sleep",
    )

    def __init__(
        self,
        max_rate: float | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep
        # The operator's --rate is a hard cap, enforced by aiolimiter's leaky
        # bucket with a one-request bucket so no burst can exceed it.
        self._cap = AsyncLimiter(1, 1.0 / max_rate) if max_rate else None
        self._rate: float | None = None
        self._ceiling = math.inf
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._last_decrease = -math.inf
        self._last_grow = self._clock()
        self._accepted: deque[float] = deque()

    @property
    def permitted_rate(self) -> float | None:
        """The learnt rate in requests/s; None until the server first throttled."""
        return self._rate

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        while True:
            now = self._clock()
            slot = max(now, self._paused_until)
            if self._rate is not None:
                slot = max(slot, self._next_slot)
                self._next_slot = slot + 1.0 / self._rate
            if slot > now:
                await self._sleep(slot - now)
            # A 429 that arrived while we slept extends the pause: wait again.
            if self._paused_until <= self._clock():
                break
        if self._cap is not None:
            await self._cap.acquire()

    def on_accepted(self) -> None:
        """An answer that was not a 429: the server had room for it."""
        now = self._clock()
        self._accepted.append(now)
        while self._accepted and self._accepted[0] < now - WINDOW:
            self._accepted.popleft()
        if self._rate is None:
            return
        dt = now - self._last_grow
        if dt < 0.05:
            return
        self._last_grow = now
        if self._rate < self._ceiling:
            self._rate += (self._ceiling - self._rate) * min(1.0, RECOVER * dt)
            self._rate = min(self._rate, self._ceiling)
        else:
            self._rate += max(PROBE * self._rate, 1.0) * dt
        # Do not let the rate run far ahead of what is really being sent
        # (latency-bound), or the first 429 would come after a huge burst.
        self._rate = min(self._rate, max(2.0 * len(self._accepted) / WINDOW, MIN_RATE * 2))

    def on_throttled(self, retry_after: float | None) -> None:
        """A 429: pause everyone, and lower the rate once per congestion event."""
        now = self._clock()
        pause = DEFAULT_PAUSE if retry_after is None else retry_after
        self._paused_until = max(self._paused_until, now + pause)
        # Answers to requests sent before the pause belong to the same event.
        if now - self._last_decrease < max(pause, WINDOW):
            return
        self._last_decrease = now
        accepted = sum(1 for t in self._accepted if t >= now - WINDOW) / WINDOW
        if self._rate is None:
            if accepted < 1:
                return  # nothing accepted yet to learn a rate from: the pause alone
            base = accepted
        else:
            base = min(self._rate, max(accepted, MIN_RATE))
        self._ceiling = max(base, MIN_RATE)
        self._rate = max(MIN_RATE, base * DECREASE)
        self._next_slot = self._paused_until
        self._last_grow = self._paused_until
