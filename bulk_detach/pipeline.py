"""Records -> outcomes: a fixed pool of workers fed through a bounded queue.

Memory stays flat whatever the list's length: the producer blocks while the
queue is full, and every outcome goes straight to the sink. No record's
exception escapes: each input row gets exactly one outcome. The one failure
that ends the run is a sink that cannot write (ResultsWriteError): an outcome
that cannot be kept must not be paid for with more requests.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from bulk_detach.client import Detacher
from bulk_detach.errors import ResultsWriteError
from bulk_detach.models import Answer, Outcome, OutcomeKind, Record, StopReason
from bulk_detach.reporter import utc_now

log = structlog.get_logger("bulk_detach")

_YIELD_EVERY = 512  # settled rows between yields to the loop, so workers keep running


@dataclass(slots=True)
class RunState:
    """Shared by the workers; read by progress and the summary."""

    started: float = field(default_factory=time.monotonic)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: StopReason | None = None
    stop_signal: int | None = None
    hard_stop: bool = False  # a second signal: stop at once, no final rewrite
    sending_over: bool = False  # no request will go out any more
    counts: Counter[OutcomeKind] = field(default_factory=Counter)
    in_flight: int = 0

    def request_stop(self, reason: StopReason, signum: int | None = None) -> bool:
        """First reason wins; True if this call started the stop."""
        if self.stop_reason is not None:
            return False
        self.stop_reason = reason
        self.stop_signal = signum
        self.stopping.set()
        return True

    @property
    def done(self) -> int:
        return sum(self.counts.values())


class Pipeline:
    def __init__(
        self,
        detacher: Detacher | None,
        sink: Callable[[Outcome], None],
        state: RunState,
        *,
        on_sent: Callable[[int], None] | None = None,
        in_doubt: frozenset[int] | set[int] = frozenset(),
        concurrency: int = 8,
        max_failures: int | None = None,
        dry_run: bool = False,
    ) -> None:
        self._detacher = detacher
        self._sink = sink
        self._state = state
        self._concurrency = concurrency
        self._max_failures = max_failures
        self._dry_run = dry_run
        self._failures = 0
        self._on_sent = on_sent
        self._in_doubt = in_doubt

    async def run(self, records: Iterable[Record], skip_rows: frozenset[int] | set[int] = frozenset()) -> None:
        queue: asyncio.Queue[Record | None] = asyncio.Queue(maxsize=self._concurrency * 2)
        tasks = [asyncio.create_task(self._produce(records, skip_rows, queue))]
        if not self._dry_run:
            tasks += [asyncio.create_task(self._work(queue)) for _ in range(self._concurrency)]
        try:
            # A task that fails (the results file could not be written) ends
            # the run at once: nobody would be left to empty or fill the queue.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _produce(
        self, records: Iterable[Record], skip_rows: frozenset[int] | set[int], queue: asyncio.Queue[Record | None]
    ) -> None:
        settled = 0
        for record in records:
            if record.row in skip_rows:
                continue
            if not record.sendable or self._dry_run or self._state.stopping.is_set():
                self._emit(record, self._settle(record))
                settled += 1
                if settled % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                continue
            await queue.put(record)
        if not self._dry_run:
            for _ in range(self._concurrency):
                await queue.put(None)

    def _settle(self, record: Record) -> Answer:
        """The outcome of a row that is not sent."""
        if record.outcome is not None:
            return Answer(record.outcome, message=record.message)
        if self._dry_run and not self._state.stopping.is_set():
            return Answer(OutcomeKind.PENDING, message="dry run: would be sent")
        # A stopped dry run, too: `--dry-run --resume` finishes the plan.
        return Answer(OutcomeKind.SKIPPED, message=self._skip_message())

    def _skip_message(self) -> str:
        reason = self._state.stop_reason
        if reason is StopReason.SIGNAL:
            return "not sent: the run was interrupted"
        return f"not sent: the run stopped ({reason.value if reason else 'stopped'})"

    async def _work(self, queue: asyncio.Queue[Record | None]) -> None:
        assert self._detacher is not None
        while (record := await queue.get()) is not None:
            if self._state.stopping.is_set():
                self._emit(record, self._settle(record))
                continue
            self._state.in_flight += 1
            try:
                answer = await self._detacher.detach(
                    record.phone_number,
                    in_doubt=record.row in self._in_doubt,
                    on_sent=self._on_sent and functools.partial(self._on_sent, record.row),
                )
            except ResultsWriteError:  # its first request could not be journalled: it was not sent
                self._state.stopping.set()
                raise
            except Exception as e:  # a bug must cost one row, not the run
                log.exception("internal error", phone_number=record.phone_number, row=record.row)
                answer = Answer(OutcomeKind.FAILED, message=f"internal error: {type(e).__name__}: {e}")
            finally:
                self._state.in_flight -= 1
            self._emit(record, answer)
            if answer.auth_rejected and self._state.request_stop(StopReason.AUTH_REJECTED):
                log.error(
                    "credentials rejected: no new requests will be sent",
                    http_status=answer.http_status,
                    message=answer.message,
                )
            if answer.kind is OutcomeKind.FAILED:
                self._failures += 1
                if (
                    self._max_failures is not None
                    and self._failures >= self._max_failures
                    and self._state.request_stop(StopReason.MAX_FAILURES)
                ):
                    log.error("--max-failures reached: no new requests will be sent", failed=self._failures)

    def _emit(self, record: Record, answer: Answer) -> None:
        self._state.counts[answer.kind] += 1
        try:
            self._sink(Outcome(record, answer, utc_now()))
        except ResultsWriteError:
            # An outcome that cannot be kept: send nothing more.
            self._state.stopping.set()
            raise
