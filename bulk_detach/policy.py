"""What an answer means and how long to wait before asking again.

Pure functions of (attempt, answer, Retry-After): no I/O, no clock of their
own, so every decision is unit-tested exactly. tenacity carries them out.
"""

from __future__ import annotations

import email.utils
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from bulk_detach.models import OutcomeKind

# Answers worth asking again: the server was busy, throttled, or in conflict.
TRANSIENT_STATUSES = frozenset({409, 429}) | frozenset(range(500, 600))
AUTH_STATUSES = frozenset({401, 403})
FINAL_STATUSES = {200: OutcomeKind.DETACHED, 400: OutcomeKind.NOT_ATTACHED, 404: OutcomeKind.NOT_FOUND}


class Verdict(enum.Enum):
    FINAL = "final"  # the number has its outcome
    RETRY = "retry"  # transient: ask again after a wait, if attempts remain
    AUTH = "auth"  # credentials rejected: stop the whole run
    UNEXPECTED = "unexpected"  # an answer the contract does not know: failed


@enum.unique
class Failure(str, enum.Enum):
    """Why an attempt got no HTTP answer."""

    NOT_SENT = "connection refused"  # never reached the server: safe to resend
    TIMEOUT = "timeout"
    DISCONNECTED = "connection lost"


def verdict(status: int | None) -> Verdict:
    """The verdict on one attempt: ``status`` None means no HTTP answer came."""
    if status is None or status in TRANSIENT_STATUSES:
        return Verdict.RETRY
    if status in FINAL_STATUSES:
        return Verdict.FINAL
    if status in AUTH_STATUSES:
        return Verdict.AUTH
    return Verdict.UNEXPECTED


def may_have_applied(status: int | None, failure: Failure | None) -> bool:
    """Could this attempt have detached the number although we saw no success?

    A timeout or a dropped connection after the request went out, and a 5xx
    (the server may have failed after committing), all could. 409 and 429 are
    refusals before any work; a refused connection never reached the server.
    """
    if status is None:
        return failure is not Failure.NOT_SENT
    return status >= 500


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to ask again, and how long to wait in between."""

    retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 300.0  # a server asking for more is not waited on longer

    def is_exhausted(self, attempts: int) -> bool:
        """True once ``attempts`` requests (the first plus every retry) were made."""
        return attempts > self.retries

    def backoff(self, attempt: int, retry_after: float | None, rand: Callable[[], float]) -> float:
        """Wait before attempt ``attempt + 1``: the server's wish, else full jitter.

        Full jitter (a random wait up to the exponential bound) keeps many
        workers that failed together from retrying together.
        """
        if retry_after is not None:
            # A little jitter on top, so paused workers do not all return at once.
            return min(retry_after, self.retry_after_cap) + rand() * self.backoff_base
        bound: float = min(self.backoff_cap, self.backoff_base * 2.0 ** max(attempt - 1, 0))
        return rand() * bound
