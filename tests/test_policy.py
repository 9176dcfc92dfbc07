"""Retry decisions are pure functions: no network, no clock."""

from __future__ import annotations

import pytest

from bulk_detach.policy import Failure, RetryPolicy, Verdict, may_have_applied, parse_retry_after, verdict


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.FINAL), (400, Verdict.FINAL), (404, Verdict.FINAL),
        (401, Verdict.AUTH), (403, Verdict.AUTH),
        (409, Verdict.RETRY), (429, Verdict.RETRY), (500, Verdict.RETRY), (503, Verdict.RETRY),
        (599, Verdict.RETRY), (None, Verdict.RETRY),
        (418, Verdict.UNEXPECTED), (302, Verdict.UNEXPECTED), (422, Verdict.UNEXPECTED),
    ],
)  # fmt: skip
def test_verdicts(status: int | None, expected: Verdict) -> None:
    assert verdict(status) is expected


def test_what_may_have_reached_the_server() -> None:
    assert may_have_applied(None, Failure.TIMEOUT)
    assert may_have_applied(None, Failure.DISCONNECTED)
    assert may_have_applied(503, None)
    assert not may_have_applied(None, Failure.NOT_SENT)
    assert not may_have_applied(429, None)
    assert not may_have_applied(409, None)


def test_retry_after_forms() -> None:
    assert parse_retry_after("3", now=0) == 3.0
    assert parse_retry_after("0.25", now=0) == 0.25
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after("nan", now=0) is None
    assert parse_retry_after(None, now=0) is None
    assert parse_retry_after("-5", now=0) == 0.0


def test_backoff_is_jittered_exponential_and_capped() -> None:
    p = RetryPolicy(retries=5, backoff_base=0.5, backoff_cap=4.0)
    assert [p.backoff(n, None, lambda: 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert p.backoff(3, None, lambda: 0.0) == 0.0


def test_retry_after_wins_but_is_capped() -> None:
    p = RetryPolicy(backoff_base=0.5, retry_after_cap=60.0)
    assert p.backoff(1, 7.0, lambda: 0.0) == 7.0
    assert p.backoff(1, 7.0, lambda: 1.0) == 7.5
    assert p.backoff(1, 3600.0, lambda: 0.0) == 60.0


def test_exhaustion_counts_retries_after_the_first_attempt() -> None:
    p = RetryPolicy(retries=2)  # 1 attempt + 2 retries
    assert not p.is_exhausted(2)
    assert p.is_exhausted(3)
