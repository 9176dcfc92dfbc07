"""Regenerate the sample list, its .xlsx twin and the sandbox inventory.

    python samples/make_samples.py

Deterministic: the committed files are what this writes.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import phonenumbers

HERE = Path(__file__).parent
rng = random.Random(7)


def us(i: int) -> str:
    return f"+1415{2_000_000 + i:07d}"


def gb(i: int) -> str:
    return f"+44207946{i:04d}"[:13]


def de(i: int) -> str:
    return f"+49301234{i:04d}"


def styles(e164: str) -> list[str]:
    n = phonenumbers.parse(e164)
    intl = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    national = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.NATIONAL)
    forms = [e164, intl, "00" + e164[1:], "tel:" + e164, intl.replace(" ", "."), " " + intl + " ",
             intl.replace(" ", "-")]
    if e164.startswith("+1"):
        forms += [national, national.replace("(", "").replace(") ", "-"), e164[1:]]
    return forms


def main() -> None:
    attached = [us(i) for i in range(170)] + [gb(i) for i in range(25)] + [de(i) for i in range(25)]
    idle = [us(1000 + i) for i in range(30)]  # known to the account, no gateway
    unknown = [us(5000 + i) for i in range(25)]  # not in the account
    for e164 in attached + idle + unknown:
        assert phonenumbers.is_valid_number(phonenumbers.parse(e164)), e164

    inventory = HERE / "inventory.csv"
    with inventory.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["phone_number", "phone_number_id", "inbound_gateway_id", "outbound_gateway_id"])
        for i, e164 in enumerate(attached):
            inbound = f"gw_in_{i % 7:02d}" if i % 10 != 3 else ""  # some only outbound
            w.writerow([e164, f"pn_{i:05d}", inbound, f"gw_out_{i % 5:02d}"])
        for i, e164 in enumerate(idle):
            w.writerow([e164, f"pn_idle_{i:05d}", "", ""])

    cells = [rng.choice(styles(n)) for n in attached + idle + unknown]
    cells += [rng.choice(styles(n)) for n in rng.sample(attached, 20)]  # duplicates
    cells += ["n/a", "12345", "call Jon", "", "+1 415 555", "=HYPERLINK(\"http://x\")",
              "@SUM(1)", "-", "+999 123 456", "0000000", "415-CALL-NOW x", "tbd",
              "+44 20", "phone?", "++14155550100"]
    rng.shuffle(cells)
    sites = ["Austin POP", "London LD5", "Frankfurt FR2", "NYC 60 Hudson", "Chicago 350"]
    rows = [[f"Line {i + 1:03d}", cell, rng.choice(sites), "cutover wave 2" if i % 9 == 0 else ""]
            for i, cell in enumerate(cells)]
    header = ["Name", "Phone Number", "Site", "Notes"]
    with (HERE / "numbers.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)

    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Numbers"
    ws.append(header)
    for name, cell, site, notes in rows:
        # Spreadsheets store digit-only numbers as numbers: keep that mess.
        value: object = int(cell) if cell.isdigit() and len(cell) > 8 else cell
        ws.append([name, value, site, notes])
        if isinstance(value, str) and value.startswith("="):
            ws.cell(ws.max_row, 2).data_type = "s"  # typed text, not a formula
    wb.save(HERE / "numbers.xlsx")
    print(f"{len(rows)} rows; inventory {len(attached) + len(idle)} numbers")


if __name__ == "__main__":
    main()
