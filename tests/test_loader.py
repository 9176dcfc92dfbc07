"""Input layout, row numbers and de-duplication (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulk_detach.errors import InputError
from bulk_detach.loader import find_layout, open_input, records
from bulk_detach.models import OutcomeKind


@pytest.mark.parametrize(
    ("first", "column", "header", "index"),
    [
        (["Name", "Phone Number", "Site"], None, True, 1),
        (["id", "MSISDN"], None, True, 1),
        (["x", "e.164"], None, True, 1),
        (["DID", "TN"], None, True, 0),
        (["bob", "+1 415 555 0100"], None, False, 1),
        (["+14155550100"], None, False, 0),
        (["Name", "Cell"], "cell", True, 1),
        (["a", "+14155550100", "b"], "2", False, 1),
    ],
)
def test_layout(first: list[str], column: str | None, header: bool, index: int) -> None:
    layout = find_layout(first, column)
    assert (layout.has_header, layout.column) == (header, index)


def test_layout_refusals_say_what_to_do() -> None:
    with pytest.raises(InputError, match="--column"):
        find_layout(["name", "site"], None)
    with pytest.raises(InputError, match="--column"):
        find_layout(["+14155550100", "+14155550101"], None)


def test_cp1252_export_is_read_without_losing_rows(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_bytes("Téléphone;Nom\n+14155550100;Zoë\n".encode("cp1252"))
    source = open_input(str(p), column="téléphone")
    assert list(source.cells()) == [(2, "+14155550100")]


def test_ragged_rows_are_kept(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_text("name,phone\nann,+14155550100,extra,cells\nbob\n")
    assert list(open_input(str(p)).cells()) == [(2, "+14155550100"), (3, "")]


def test_duplicates_point_at_the_first_row() -> None:
    out = list(records([(2, "+14155550100"), (3, "bad"), (4, "(415) 555-0100")], "US"))
    assert [(r.row, r.outcome, r.message) for r in out] == [
        (2, None, ""),
        (3, OutcomeKind.INVALID, "not a phone number"),
        (4, OutcomeKind.DUPLICATE, "duplicate of row 2"),
    ]


def test_xlsx_leading_blank_rows_and_missing_sheet(tmp_path: Path) -> None:
    import openpyxl
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Main"
    ws["A3"] = "phone"
    ws["A4"] = 14155550100
    ws["A5"] = 1.4155550101e10
    p = tmp_path / "l.xlsx"
    wb.save(p)
    assert list(open_input(str(p)).cells()) == [(4, "14155550100"), (5, "14155550101")]
    with pytest.raises(InputError, match="no sheet named"):
        open_input(str(p), sheet="Other")
