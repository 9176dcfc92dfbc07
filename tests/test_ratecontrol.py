"""The shared gate, driven by a fake clock: instant and exact."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from bulk_detach.ratecontrol import Throttle


class FakeClock:
    """Time moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_unlimited_until_the_server_throttles(clock: FakeClock) -> None:
    gate = Throttle(clock=clock, sleep=clock.sleep)
    for _ in range(100):
        await gate.acquire()
    assert clock.slept == [] and gate.permitted_rate is None


async def test_a_429_pauses_everyone_for_retry_after(clock: FakeClock) -> None:
    gate = Throttle(clock=clock, sleep=clock.sleep)
    with capture_logs() as logs:
        for _ in range(8):  # the answers to every request in flight
            gate.on_throttled(2.0)
    await gate.acquire()
    assert clock.now == pytest.approx(2.0)
    assert [e["pause_s"] for e in logs] == [2.0]  # one line for the pause, not eight


async def test_first_429_sets_the_rate_under_what_was_accepted(clock: FakeClock) -> None:
    gate = Throttle(clock=clock, sleep=clock.sleep)
    for _ in range(100):  # 100 accepted answers over one second
        clock.now += 0.01
        gate.on_accepted()
    with capture_logs() as logs:
        gate.on_throttled(1.0)
    assert gate.permitted_rate == pytest.approx(85.0, rel=0.02)
    # The operator sees the congestion event and the rate it led to.
    assert [(e["log_level"], e["pause_s"]) for e in logs] == [("warning", 1.0)]
    assert logs[0]["permitted_rate"] == round(gate.permitted_rate, 1)
    start = clock.now
    for _ in range(86):
        await gate.acquire()
    # one second of pause, then 86 requests paced at 85/s
    assert clock.now - start == pytest.approx(1.0 + 85 / 85.0, rel=0.02)


async def test_rate_recovers_towards_the_ceiling(clock: FakeClock) -> None:
    gate = Throttle(clock=clock, sleep=clock.sleep)
    for _ in range(100):
        clock.now += 0.01
        gate.on_accepted()
    gate.on_throttled(1.0)
    clock.now += 1.0
    for _ in range(400):  # 4 s of answers at 100/s, no more 429s
        clock.now += 0.01
        gate.on_accepted()
    assert gate.permitted_rate is not None and 95.0 < gate.permitted_rate <= 102.0


async def test_background_429s_do_not_ratchet_the_rate_down(clock: FakeClock) -> None:
    """5 % of answers are 429 whatever the rate: the rate must not collapse."""
    gate = Throttle(clock=clock, sleep=clock.sleep)
    with capture_logs() as logs:
        for i in range(6000):  # 60 s at 100 answers/s
            clock.now += 0.01
            if i % 20 == 19:
                gate.on_throttled(0.0)
            else:
                gate.on_accepted()
    assert gate.permitted_rate is not None and gate.permitted_rate > 60.0
    # One line per congestion event, not one per 429 (300 of them here).
    assert 1 <= len(logs) <= 10
    assert any("background" in e["event"] for e in logs)
