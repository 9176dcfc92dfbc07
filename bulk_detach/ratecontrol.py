"""One gate every request passes: the operator's hard cap, the server's pauses,
and a sending rate learnt from the server's 429 answers.

VideoSDK documents no rate limit, so the permitted rate starts unlimited; the
first 429 sets it just under what the server accepted, and it then creeps back
up (fast while well under the last known ceiling, slowly past it), so a run
settles near the account's limit instead of storming or oscillating.

Not every 429 is about our rate: a server may throttle a share of requests
whatever we do. Such background 429s are still honoured (everyone pauses), but
they must not ratchet the rate down forever: when slowing down did not make
the share of 429s fall, that share is taken as background noise and the rate
goes back to where it was.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable

import structlog
from aiolimiter import AsyncLimiter

log = structlog.get_logger("bulk_detach")

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
        "_check_at",
        "_clock",
        "_first_answer",
        "_last_decrease",
        "_last_grow",
        "_next_slot",
        "_noise",
        "_paused_until",
        "_rate",
        "_share_at_decrease",
        "_sleep",
        "_throttled",
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
        self._throttled: deque[float] = deque()
        self._noise = 0.0  # share of 429s that slowing down did not remove
        self._share_at_decrease = 0.0
        self._check_at = math.inf
        self._first_answer = math.inf

    @property
    def permitted_rate(self) -> float | None:
        """The learnt rate in requests/s; None until the server first throttled."""
        return self._rate

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

    def _accepted_rate(self, now: float) -> float:
        """Answers/s the server accepted lately (over less than WINDOW at the start)."""
        span = min(WINDOW, now - self._first_answer)
        return len(self._accepted) / max(span, 0.05)

    def _share(self, now: float) -> float:
        """Share of answers in the last WINDOW that were 429s."""
        for q in (self._accepted, self._throttled):
            while q and q[0] < now - WINDOW:
                q.popleft()
        total = len(self._accepted) + len(self._throttled)
        return len(self._throttled) / total if total else 0.0

    def on_accepted(self) -> None:
        """An answer that was not a 429: the server had room for it."""
        now = self._clock()
        self._first_answer = min(self._first_answer, now)
        self._accepted.append(now)
        share = self._share(now)
        if self._rate is None:
            return
        if now >= self._check_at:
            self._check_at = math.inf
            if share >= 0.6 * self._share_at_decrease:
                # Slowing down did not help: background 429s. Undo the decrease.
                self._noise = share
                self._rate = self._ceiling
                log.info(
                    "429s did not fall when sending slower: taken as the server's background; rate restored",
                    permitted_rate=round(self._rate, 1),
                    share_429=round(share, 3),
                )
        dt = now - self._last_grow
        if dt < 0.05:
            return
        self._last_grow = now
        if self._rate < self._ceiling:
            self._rate += (self._ceiling - self._rate) * min(1.0, RECOVER * dt)
            self._rate = min(self._rate, self._ceiling)
        else:
            self._rate += max(PROBE * self._rate, 1.0) * dt
            # Past the ceiling, do not run far ahead of what is really being
            # sent (latency-bound), or the next 429 comes after a huge burst.
            self._rate = min(self._rate, max(2.0 * self._accepted_rate(now), self._ceiling))

    def on_throttled(self, retry_after: float | None) -> None:
        """A 429: pause everyone, and lower the rate once per congestion event."""
        now = self._clock()
        self._first_answer = min(self._first_answer, now)
        self._throttled.append(now)
        share = self._share(now)
        pause = DEFAULT_PAUSE if retry_after is None else retry_after
        self._paused_until = max(self._paused_until, now + pause)
        # Answers to requests sent before the pause belong to the same event.
        if now - self._last_decrease < max(pause, WINDOW) or self._check_at != math.inf:
            return  # the last decrease is still being judged
        if self._noise and share <= 1.5 * self._noise:
            return  # no more 429s than the server's background share
        self._last_decrease = now
        self._share_at_decrease = share
        self._check_at = self._paused_until + 2 * WINDOW
        accepted = self._accepted_rate(now)
        if self._rate is None:
            if accepted < 1:
                log.warning("server is throttling (429): pausing", pause_s=pause)
                return  # nothing accepted yet to learn a rate from: the pause alone
            base = accepted
        else:
            # Not the accepted rate: it is measured over a window that may
            # hold the pause itself. The pacing rate is what was being sent.
            base = self._rate
        self._ceiling = max(base, MIN_RATE)
        self._rate = max(MIN_RATE, base * DECREASE)
        log.warning(
            "server is throttling (429): pausing, then sending slower",
            pause_s=pause,
            permitted_rate=round(self._rate, 1),
        )
        self._next_slot = self._paused_until
        self._last_grow = self._paused_until
