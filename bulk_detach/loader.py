"""Input file -> records: find the numbers column, normalise, de-duplicate.

Delimited text (CSV, TSV, TXT, stdin) is streamed with the standard library's
C csv parser: it keeps ragged rows (pandas' C engine rejects them, which would
lose the user's rows) and spreadsheet row numbers exact, in flat memory.
Spreadsheets go through pandas with the calamine engine (the only pandas
import, done lazily so ``--help`` stays instant).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bulk_detach.errors import InputError
from bulk_detach.models import OutcomeKind, Record
from bulk_detach.numbers import normalise

EXCEL_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xls", ".ods"})
_CHUNK = 1 << 20
_SNIFF_BYTES = 16 * 1024  # csv.Sniffer's time grows fast with the sample

# Header names that hold numbers, compared after dropping case and punctuation.
_NUMBER_HEADERS = (
    "phonenumber", "phone", "e164", "msisdn", "did", "tn", "number", "phonenumbers",
    "phoneno", "telephone", "telephonenumber", "tel", "mobile", "mobilenumber", "cell",
    "cellphone", "numbere164", "e164number", "didnumber", "ddi", "numbers",
)  # fmt: skip
_HEADER_HINTS = ("phone", "msisdn", "e164", "number")
_DIGIT = re.compile(r"\d")


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _looks_like_number(cell: str) -> bool:
    return len(_DIGIT.findall(cell)) >= 5


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the numbers are: whether row 1 is a header, and which column."""

    has_header: bool
    column: int
    column_name: str


def find_layout(first_row: list[str], column: str | None) -> Layout:
    """Decide header and numbers column from the first row alone."""
    keys = [_key(c) for c in first_row]
    known = [k for k in keys if k in _NUMBER_HEADERS or any(h in k for h in _HEADER_HINTS)]
    numeric = [i for i, c in enumerate(first_row) if _looks_like_number(c)]
    has_header = bool(known) or (not numeric and any(k for k in keys))
    if column is not None:
        wanted = _key(column)
        if has_header and wanted in keys:
            i = keys.index(wanted)
            return Layout(True, i, first_row[i])
        if column.isdigit() and 1 <= int(column) <= max(len(first_row), 1):
            i = int(column) - 1
            return Layout(has_header, i, first_row[i] if has_header else f"column {column}")
        shown = ", ".join(repr(c) for c in first_row) if has_header else "none (no header row)"
        raise InputError(f"no column named {column!r}; column names: {shown}")
    if len(first_row) <= 1:
        return Layout(has_header, 0, first_row[0] if has_header and first_row else "column 1")
    if has_header:
        for name in _NUMBER_HEADERS:
            if name in keys:
                i = keys.index(name)
                return Layout(True, i, first_row[i])
        for i, k in enumerate(keys):
            if any(h in k for h in _HEADER_HINTS):
                return Layout(True, i, first_row[i])
        shown = ", ".join(repr(c) for c in first_row)
        raise InputError(f"no numbers column among {shown}; name it with --column")
    if len(numeric) == 1:
        return Layout(False, numeric[0], f"column {numeric[0] + 1}")
    raise InputError(
        f"no header row and {len(first_row)} columns: give the numbers column's position "
        "with --column (1 = first)"
    )


@dataclass(slots=True)
class InputFile:
    """An input opened for reading: its layout, size estimate and fingerprint."""

    name: str
    layout: Layout
    fingerprint: str
    estimated_rows: int | None
    _rows: Iterable[list[str]] = field(repr=False)

    def cells(self) -> Iterator[tuple[int, str]]:
        """(spreadsheet row number, numbers cell) for each data row.

        Blank rows are not data rows, but they keep their row numbers, as in a
        spreadsheet.
        """
        col = self.layout.column
        header_pending = self.layout.has_header
        for number, cells in enumerate(self._rows, start=1):
            if not any(c.strip() for c in cells):
                continue
            if header_pending:  # the first row with anything in it
                header_pending = False
                continue
            yield number, cells[col] if col < len(cells) else ""


def open_input(path: str, column: str | None = None, sheet: str | None = None) -> InputFile:
    """Open ``path`` (``-`` for stdin) and work out its layout; nothing is sent yet."""
    opened = _open(path, column, sheet)
    if next(opened.cells(), None) is None:
        raise InputError(f"{opened.name} has no data rows (only a header)")
    return opened


def _open(path: str, column: str | None, sheet: str | None) -> InputFile:
    if path == "-":
        data = sys.stdin.buffer.read()
        return _open_text(path, lambda: io.BytesIO(data), ",", column)
    p = Path(path)
    if not p.is_file():
        raise InputError(f"cannot read {path}: {'not a file' if p.exists() else 'no such file'}")
    suffix = p.suffix.lower()
    if suffix in EXCEL_SUFFIXES:
        return _open_excel(p, column, sheet)
    if sheet is not None:
        raise InputError("--sheet applies to spreadsheets only")
    default_delimiter = "\t" if suffix == ".tsv" else ("\n" if suffix == ".txt" else ",")
    return _open_text(path, lambda: p.open("rb"), default_delimiter, column)


def _scan(stream: IO[bytes]) -> tuple[str, int, str, bytes]:
    """One pass over the bytes: fingerprint, line count, encoding, and a sample."""
    digest = hashlib.sha256()
    lines = 0
    utf8 = codecs.getincrementaldecoder("utf-8")()
    encoding = "utf-8-sig"
    head = b""
    last = b"\n"
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
        lines += chunk.count(b"\n")
        last = chunk[-1:]
        if len(head) < _SNIFF_BYTES:
            head += chunk[: _SNIFF_BYTES - len(head)]
        if encoding == "utf-8-sig":
            try:
                utf8.decode(chunk)
            except UnicodeDecodeError:
                # Spreadsheet exports on Windows: cp1252 maps every byte that
                # matters here, so no row is lost to a decoding error.
                encoding = "cp1252"
    if last != b"\n":
        lines += 1
    return digest.hexdigest(), lines, encoding, head


def _sniff_delimiter(sample: str, default: str) -> str:
    if default == "\n":
        return default
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return default


def _open_text(name: str, opener: Any, default_delimiter: str, column: str | None) -> InputFile:
    try:
        with opener() as stream:
            fingerprint, lines, encoding, head = _scan(stream)
    except OSError as e:
        raise InputError(f"cannot read {name}: {e.strerror or e}") from None
    if len(head) == _SNIFF_BYTES and b"\n" in head:
        head = head[: head.rindex(b"\n") + 1]  # whole lines only: a cut line skews the counts
    sample = head.decode(encoding, errors="replace")
    if sample.startswith("\ufeff"):
        sample = sample[1:]
    delimiter = _sniff_delimiter(sample, default_delimiter)

    def rows() -> Iterator[list[str]]:
        with opener() as raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
            if delimiter == "\n":
                for line in text:
                    yield [line.rstrip("\r\n")]
            else:
                yield from csv.reader(text, delimiter=delimiter)

    first = _first_data_row(rows())
    if first is None:
        raise InputError(f"{name} has no data rows")
    layout = find_layout(first, column)
    return InputFile(name, layout, fingerprint, lines - int(layout.has_header), _Reiterable(rows))


def _first_data_row(rows: Iterator[list[str]]) -> list[str] | None:
    for cells in rows:
        if any(c.strip() for c in cells):
            return cells
    return None


class _Reiterable:
    """Each iteration reopens the source, so a file is streamed, never held."""

    __slots__ = ("_factory",)

    def __init__(self, factory: Any) -> None:
        self._factory = factory

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self._factory())


def _excel_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # NaN: an empty cell
            return ""
        if value.is_integer():
            return str(int(value))
    if isinstance(value, bool):
        return str(value).upper()
    return str(value)


def _open_excel(path: Path, column: str | None, sheet: str | None) -> InputFile:
    import pandas as pd

    try:
        data = path.read_bytes()
        frame = pd.read_excel(
            io.BytesIO(data), sheet_name=sheet if sheet is not None else 0,
            header=None, dtype=object, engine="calamine", na_filter=False,
        )  # fmt: skip
    except (ValueError, KeyError) as e:
        if sheet is not None and "not found" in str(e).lower():
            raise InputError(f"{path.name} has no sheet named {sheet!r}") from None
        raise InputError(f"cannot read {path.name} as a spreadsheet: {e}") from None
    except Exception as e:  # calamine raises its own types for corrupt files
        raise InputError(f"cannot read {path.name} as a spreadsheet: {type(e).__name__}") from None
    rows = [[_excel_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    del frame
    # A row that is blank up to the first data row still counts for row numbers,
    # but header detection looks at the first row that has something in it.
    lead = 0
    while lead < len(rows) and not any(c.strip() for c in rows[lead]):
        lead += 1
    if lead == len(rows):
        raise InputError(f"{path.name} has no data rows")
    layout = find_layout(rows[lead], column)
    digest = hashlib.sha256(data)
    digest.update(f"sheet={sheet}".encode())
    return InputFile(path.name, layout, digest.hexdigest(), len(rows), rows)


def records(cells: Iterable[tuple[int, str]], default_region: str | None) -> Iterator[Record]:
    """Normalise and de-duplicate; every data row yields exactly one record."""
    first_row: dict[str, int] = {}
    for row, cell in cells:
        e164, reason = normalise(cell, default_region)
        if not e164:
            yield Record(row, cell, "", OutcomeKind.INVALID, reason)
            continue
        seen = first_row.setdefault(e164, row)
        if seen != row:
            yield Record(row, cell, e164, OutcomeKind.DUPLICATE, f"duplicate of row {seen}")
        else:
            yield Record(row, cell, e164)
