"""Outcomes -> the results file, durable while the run goes, ordered at the end.

While a run goes, the results file is its own journal: each outcome is
appended as one CSV line the moment it is reached and flushed to the OS, with
an fsync every so often, so a hard kill loses at most the numbers in flight.
At the end the lines are rewritten in input order into a temporary file that
replaces the results file in one rename: no reader sees a half-written file.

Beside it, ``<results>.run`` is the run's own journal and its lock: its first
line records which input and settings the results file belongs to; each
further line is the row number of a number whose first request went out. A
number sent but without an outcome when the run died may have been detached
by it: ``--resume`` flags it ``uncertain`` if it then answers 400. The file is
flock'ed for the run, so two runs never write the same results file, and a
lock left by a killed process is released by the kernel with it.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bulk_detach import __version__
from bulk_detach.errors import ResultsFileError, ResultsWriteError
from bulk_detach.models import RESULT_COLUMNS, Outcome, OutcomeKind

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FSYNC_EVERY_S = 1.0
FSYNC_EVERY_ROWS = 1000
_READ_BUFFER = 1 << 20


def formula_safe(text: str) -> str:
    """Keep spreadsheets from running a cell as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def result_cells(o: Outcome, redact: Callable[[str], str] = str) -> list[str]:
    r, a = o.record, o.answer
    # The input may stay as typed when it is a phone number (it starts with
    # "+"); anything else that could start a formula is defused.
    shown_input = r.input if r.phone_number else formula_safe(r.input)
    return [
        str(r.row),
        shown_input,
        r.phone_number,
        a.kind.value,
        "" if a.http_status is None else str(a.http_status),
        formula_safe(a.inbound_gateway_id),
        formula_safe(a.outbound_gateway_id),
        formula_safe(a.phone_number_id),
        str(a.attempts),
        "true" if a.uncertain else "false",
        formula_safe(redact(a.message or r.message)),
        o.finished_at,
        formula_safe(a.request_id),
    ]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What the results file belongs to; resuming against anything else is refused."""

    input_name: str
    input_sha256: str
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": "bulk-detach",
            "version": __version__,
            "input": self.input_name,
            "input_sha256": self.input_sha256,
            "settings": self.settings,
            "pid": os.getpid(),
            "started_at": utc_now(),
        }


@dataclass(slots=True)
class Kept:
    """What an earlier run left: rows with a final outcome, and rows in doubt."""

    rows: set[int] = field(default_factory=set)
    counts: Counter[OutcomeKind] = field(default_factory=Counter)
    in_doubt: set[int] = field(default_factory=set)  # sent, no final outcome


class ResultsFile:
    """The results file of one run, from lock to final atomic rewrite."""

    def __init__(self, path: Path, redact: Callable[[str], str] = str) -> None:
        self.path = path
        self.run_path = path.with_name(path.name + ".run")
        self._redact = redact
        self._lock: IO[str] | None = None
        self._out: IO[bytes] | None = None
        self._rows = array("q")
        self._offsets = array("q")
        self._written = 0
        self._last_sync = time.monotonic()
        self._unsynced = 0
        self._doubt: set[int] = set()  # sent by a run, still without a final outcome
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\n")

    # -- start -----------------------------------------------------------
    def lock(self) -> None:
        """Take the run lock; refused while another run holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.run_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
        except OSError as e:
            raise self._start_error(e) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = _read_json(handle.readline()).get("pid", "?")
            handle.close()
            raise ResultsFileError(
                f"{self.path} is being written by another run (pid {owner}); nothing was sent"
            ) from None
        # A lock left by a killed process was released by the kernel with it.
        self._lock = handle

    def start(self, record: RunRecord, *, resume: bool, force: bool) -> Kept:
        """Check the existing file against the options, then open the journal."""
        try:
            return self._start(record, resume=resume, force=force)
        except OSError as e:  # nothing has been sent yet
            raise self._start_error(e) from None

    def _start(self, record: RunRecord, *, resume: bool, force: bool) -> Kept:
        assert self._lock is not None, "lock() first"
        exists = self.path.exists()
        kept = Kept()
        if exists and not (resume or force):
            raise ResultsFileError(
                f"{self.path} exists: add --resume to continue that run, or --force to start over"
            )
        if exists and resume:
            self._lock.seek(0)
            previous = _read_json(self._lock.readline())
            _check_same_run(self.path, previous, record)
            sent = {int(line) for line in self._lock if line.strip().isdigit()}
            kept = self._carry_over()
            kept.in_doubt = sent - kept.rows
            self._doubt = set(kept.in_doubt)
        else:
            self._open_fresh()
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(json.dumps(record.to_json()) + "\n")
        # Rows still in doubt stay so after this run too, until they settle.
        self._lock.writelines(f"{row}\n" for row in sorted(kept.in_doubt))
        self._lock.flush()
        os.fsync(self._lock.fileno())
        return kept

    def mark_sent(self, row: int) -> None:
        """The first request for ``row`` is about to go out (and must not, if this fails)."""
        assert self._lock is not None
        try:
            self._lock.write(f"{row}\n")
            self._lock.flush()
        except OSError as e:
            raise self._write_error(e) from None

    def _start_error(self, e: OSError) -> ResultsFileError:
        """Before anything is sent: exit 2."""
        return ResultsFileError(f"cannot write the results file {self.path}: {e.strerror or e}")

    def _write_error(self, e: OSError) -> ResultsWriteError:
        """Once sending has begun: stop sending, exit 1, --resume completes the file."""
        return ResultsWriteError(f"cannot write {self.path} or its journal: {e.strerror or e}")

    def _open_fresh(self) -> None:
        tmp = self._tmp_path()
        with open(tmp, "wb") as f:
            f.write(self._line(list(RESULT_COLUMNS)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._open_append()

    def _carry_over(self) -> Kept:
        """Rewrite the journal with only the final rows of the earlier run."""
        kept = Kept()
        tmp = self._tmp_path()
        with open(self.path, "rb") as src:
            data = src.read()
        # A line cut by a hard kill is the last one and lacks its newline.
        text = data.decode("utf-8", errors="replace")
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None or tuple(header[: len(RESULT_COLUMNS)]) != RESULT_COLUMNS:
            raise ResultsFileError(f"{self.path} is not a bulk-detach results file; use --force")
        outcome_at = RESULT_COLUMNS.index("outcome")
        kinds = {k.value: k for k in OutcomeKind}
        with open(tmp, "wb") as out:
            out.write(self._line(list(RESULT_COLUMNS)))
            self._written = out.tell()
            for cells in reader:
                if len(cells) < len(RESULT_COLUMNS) or not cells[0].isdigit():
                    continue
                kind = kinds.get(cells[outcome_at])
                row = int(cells[0])
                if kind is None or not kind.is_final or row in kept.rows:
                    continue
                kept.rows.add(row)
                kept.counts[kind] += 1
                self._append_line(out, row, self._line(cells[: len(RESULT_COLUMNS)]))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        self._open_append()
        return kept

    def _open_append(self) -> None:
        self._out = open(self.path, "ab")  # noqa: SIM115 - the journal stays open for the run
        self._written = self._out.tell()
        _fsync_dir(self.path)

    # -- during the run -------------------------------------------------------
    def write(self, outcome: Outcome) -> None:
        assert self._out is not None
        row = outcome.record.row
        if outcome.kind.is_final:
            self._doubt.discard(row)
        elif outcome.answer.attempts:
            self._doubt.add(row)
        try:
            self._append_line(self._out, outcome.record.row, self._line(result_cells(outcome, self._redact)))
            # flush() hands the line to the OS (survives a kill of this process);
            # fsync, which also survives a power cut, is batched.
            self._out.flush()
            self._unsynced += 1
            if self._unsynced >= FSYNC_EVERY_ROWS or time.monotonic() - self._last_sync >= FSYNC_EVERY_S:
                self.sync()
        except OSError as e:
            raise self._write_error(e) from None

    def sync(self) -> None:
        if self._out is not None and self._unsynced:
            self._out.flush()
            os.fsync(self._out.fileno())
            if self._lock is not None:
                os.fsync(self._lock.fileno())
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def _line(self, cells: list[str]) -> bytes:
        self._buf.seek(0)
        self._buf.truncate()
        self._csv.writerow(cells)
        return self._buf.getvalue().encode("utf-8")

    def _append_line(self, out: IO[bytes], row: int, line: bytes) -> None:
        out.write(line)
        self._rows.append(row)
        self._offsets.append(self._written)
        self._written += len(line)

    # -- end ------------------------------------------------------------------
    def finish(self) -> None:
        """Rewrite the file in input order, atomically, and release the lock."""
        if self._out is None:
            return
        try:
            self._finish()
        except OSError as e:
            # The journal is untouched: --resume carries it over and rewrites it.
            with contextlib.suppress(OSError):
                self._tmp_path().unlink(missing_ok=True)
            raise self._write_error(e) from None

    def _finish(self) -> None:
        assert self._out is not None
        self.sync()
        self._out.close()
        self._out = None
        ends = self._offsets[1:]
        ends.append(self._written)
        # Row numbers are unique and bounded by the input's length, so a table
        # indexed by row puts the lines in order without sorting: 8 bytes a row.
        where = array("q", [-1]) * (max(self._rows, default=0) + 1)
        for i, row in enumerate(self._rows):
            where[row] = i
        tmp = self._tmp_path()
        # Lines finish nearly in input order, so most seeks land in the read
        # buffer. (An mmap would count the whole journal in the process's RSS.)
        with open(self.path, "rb", buffering=_READ_BUFFER) as src, open(tmp, "wb") as out:
            out.write(self._line(list(RESULT_COLUMNS)))
            for i in where:
                if i >= 0:
                    src.seek(self._offsets[i])
                    out.write(src.read(ends[i] - self._offsets[i]))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path)
        self._compact_run_file()
        self.release()

    def _compact_run_file(self) -> None:
        """Keep the run record and only the rows still in doubt."""
        assert self._lock is not None
        self._lock.seek(0)
        record = self._lock.readline()
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(record)
        self._lock.writelines(f"{row}\n" for row in sorted(self._doubt))
        self._lock.flush()
        os.fsync(self._lock.fileno())

    def release(self) -> None:
        """Drop the lock (the kernel does it too if the process dies)."""
        if self._out is not None:
            with contextlib.suppress(OSError):
                self.sync()
                self._out.close()
            self._out = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _tmp_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")


def _read_json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _check_same_run(path: Path, previous: dict[str, Any], current: RunRecord) -> None:
    if not previous:
        raise ResultsFileError(
            f"cannot resume {path}: no record of the run that wrote it; use --force to start over"
        )
    if previous.get("input_sha256") != current.input_sha256:
        raise ResultsFileError(
            f"cannot resume {path}: the input changed since that run "
            f"(was {previous.get('input', '?')}); use a new --out, or --force to start over"
        )
    before = previous.get("settings", {})
    changed = sorted(k for k, v in current.settings.items() if before.get(k) != v)
    if changed:
        was = ", ".join(f"{k}={before.get(k)!r}" for k in changed)
        raise ResultsFileError(
            f"cannot resume {path}: settings differ from that run ({was}); "
            "resume with the same settings, or --force to start over"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
