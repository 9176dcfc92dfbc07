"""What the operator sees while a run goes, and the summary at its end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import IO

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bulk_detach.models import OutcomeKind, StopReason
from bulk_detach.pipeline import RunState
from bulk_detach.ratecontrol import Throttle

log = structlog.get_logger("bulk_detach")

LOG_EVERY_S = 10.0
_BAR_EVERY_S = 0.25
_ORDER = list(OutcomeKind)


class _SummaryConsole(Console):
    def on_broken_pipe(self) -> None:
        # `bulk-detach run ... | head`: the reader left. Stop writing, as rich
        # does, but without its exit 1: the results file is complete, and the
        # exit code must still say how the run went.
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), self.file.fileno())


def _counts_text(state: RunState) -> str:
    return " ".join(f"{k.value}={state.counts[k]}" for k in _ORDER if state.counts[k])


def _permitted(throttle: Throttle | None) -> float | None:
    rate = throttle.permitted_rate if throttle else None
    return round(rate, 1) if rate is not None else None


@contextlib.asynccontextmanager
async def shown(
    state: RunState, total: int | None, throttle: Throttle | None, stream: IO[str], bar: bool
) -> AsyncIterator[None]:
    """A live bar on a terminal, else a progress log line every 10 s."""
    task = asyncio.create_task(_bar(state, total, throttle, stream) if bar else _lines(state, total, throttle))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _lines(state: RunState, total: int | None, throttle: Throttle | None) -> None:
    while True:
        await asyncio.sleep(LOG_EVERY_S)
        elapsed = time.monotonic() - state.started
        done = state.done
        rate = done / elapsed if elapsed else 0.0
        eta = round((total - done) / rate) if total and rate and total >= done else None
        log.info(
            "progress",
            done=done,
            total=total,
            rate=round(rate, 1),
            eta_s=eta,
            in_flight=state.in_flight,
            permitted_rate=_permitted(throttle),
            **{k.value: state.counts[k] for k in _ORDER if state.counts[k]},
        )


async def _bar(state: RunState, total: int | None, throttle: Throttle | None, stream: IO[str]) -> None:
    console = Console(file=stream)
    columns = (
        TextColumn("detaching"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}/s"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, console=console, transient=False, auto_refresh=False) as bar:
        task = bar.add_task("detach", total=total, rate="-", counts="")
        try:
            while True:
                await asyncio.sleep(_BAR_EVERY_S)
                elapsed = time.monotonic() - state.started
                rate = f"{state.done / elapsed:.0f}" if elapsed else "-"
                permitted = _permitted(throttle)
                if permitted is not None:
                    rate += f" (limit ~{permitted:.0f})"
                bar.update(task, completed=state.done, rate=rate, counts=_counts_text(state))
                bar.refresh()
        finally:
            bar.update(task, completed=state.done, counts=_counts_text(state))
            bar.refresh()


def summary(
    state: RunState,
    done: int,
    elapsed: float,
    results: str,
    resume_command: str | None,
    stream: IO[str],
) -> None:
    """Always printed at the end: what happened, how fast, where, what next."""
    console = _SummaryConsole(file=stream, highlight=False, soft_wrap=True)
    rate = done / elapsed if elapsed > 0 else 0.0
    headline = "finished"
    if state.stop_reason is StopReason.SIGNAL:
        headline = f"interrupted (signal {state.stop_signal})"
    elif state.stop_reason is not None:
        headline = f"stopped early: {state.stop_reason.value}"
    console.print(f"bulk-detach {headline}: {done} rows in {elapsed:.1f} s ({rate:.1f} rows/s)")
    if state.done > done:
        console.print(f"  ({state.done - done} rows kept from the earlier run)")
    for kind in _ORDER:
        if state.counts[kind]:
            console.print(f"  {kind.value:<13}{state.counts[kind]:>9}")
    console.print(f"results: {results}")
    redo = state.counts[OutcomeKind.FAILED] + state.counts[OutcomeKind.SKIPPED]
    if redo and resume_command:
        console.print(f"{redo} rows to redo; resume with:\n  {resume_command}")
    elif state.counts[OutcomeKind.PENDING] and resume_command:
        console.print(f"dry run: nothing sent; to send them:\n  {resume_command}")
