"""The real CLI, as a subprocess, against a real sandbox on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    SAMPLES,
    SECRET,
    assert_matches_sandbox,
    cli_env,
    read_results,
    run_cli,
    spawn_cli,
    write_list,
)

from bulk_detach.sandbox import generate_inventory

SAMPLE_OUTCOMES = {"detached": 220, "not_attached": 30, "not_found": 26, "invalid": 14, "duplicate": 20}


def _counts(rows: list[dict[str, str]]) -> Counter[str]:
    return Counter(r["outcome"] for r in rows)


def test_sample_csv_matches_sandbox_on_every_row(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox()
    p = run_cli("run", SAMPLES / "numbers.csv", "--base-url", sb.url, "--default-region", "US", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = read_results(tmp_path / "numbers.results.csv")
    assert [int(r["row"]) for r in rows] == list(range(2, 312))  # input order, header is row 1
    assert _counts(rows) == SAMPLE_OUTCOMES
    assert_matches_sandbox(rows, sb)
    # Sent once each: one request per distinct valid number, nothing more.
    sent = [e for e, _, _ in sb.log()]
    assert len(sent) == len(set(sent)) == 276
    assert "detached" in p.stdout and "numbers.results.csv" in p.stdout


def test_reader_of_the_summary_gone_changes_nothing(start_sandbox, tmp_path: Path) -> None:
    """`bulk-detach run ... | head -0`: the summary has nowhere to go."""
    sb = start_sandbox()
    proc = spawn_cli("run", SAMPLES / "numbers.csv", "--base-url", sb.url, "--default-region", "US", cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err
    rows = read_results(tmp_path / "numbers.results.csv")
    assert _counts(rows) == SAMPLE_OUTCOMES


def test_xlsx_gives_the_same_outcomes_as_csv(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox()
    p = run_cli("run", SAMPLES / "numbers.xlsx", "--base-url", sb.url, "--default-region", "US", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = read_results(tmp_path / "numbers.results.csv")
    assert _counts(rows) == SAMPLE_OUTCOMES
    assert_matches_sandbox(rows, sb)
    with open(SAMPLES / "numbers.csv", newline="") as f:
        typed = [r["Phone Number"] for r in csv.DictReader(f)]
    # Cells stored as numbers in Excel (leading zeros lost, as Excel does)
    # come back as the same digits, never as a float.
    stored = [str(int(c)) if c.isdigit() and len(c) > 8 else c for c in typed]
    assert [r["input"].removeprefix("'") for r in rows] == stored


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("list.txt", "+14152000001\n\n(415) 200-0002\nnot a number\n+14152000001\n"),
        ("list.tsv", "id\tmsisdn\n1\t+14152000001\n\t\n2\t415.200.0002\n3\tnot a number\n4\t+1 415 200 0001\n"),
        ("list.csv", "\ufeffE164;Site\n+14152000001;a\n;\n+1 (415) 200-0002;b\nnot a number;c\n14152000001;d\n"),
    ],
)
def test_text_formats_and_row_numbers(start_sandbox, tmp_path: Path, name: str, text: str) -> None:
    sb = start_sandbox()
    (tmp_path / name).write_text(text, encoding="utf-8")
    p = run_cli("run", name, "--base-url", sb.url, "--default-region", "US", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = read_results(tmp_path / (Path(name).stem + ".results.csv"))
    outcomes = [(r["outcome"], r["phone_number"]) for r in rows]
    assert outcomes == [
        ("detached", "+14152000001"),
        ("detached", "+14152000002"),
        ("invalid", ""),
        ("duplicate", "+14152000001"),
    ]
    header = 0 if name.endswith(".txt") else 1
    # A blank line keeps its number, as a spreadsheet shows it.
    assert [int(r["row"]) for r in rows] == [1 + header, 3 + header, 4 + header, 5 + header]
    assert_matches_sandbox(rows, sb)


def test_stdin_input(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox()
    p = run_cli("run", "-", "--base-url", sb.url, cwd=tmp_path, stdin="phone\n+14152000005\n+14152005000\n")
    assert p.returncode == 0, p.stderr
    rows = read_results(tmp_path / "stdin.results.csv")
    assert [r["outcome"] for r in rows] == ["detached", "not_found"]


def test_dry_run_sends_nothing_and_needs_no_credentials(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox()
    env = {k: v for k, v in cli_env().items() if not k.startswith("VIDEOSDK_")}
    p = run_cli("run", SAMPLES / "numbers.csv", "--dry-run", "--base-url", sb.url, "--default-region", "US",
                cwd=tmp_path, env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    rows = read_results(tmp_path / "numbers.results.csv")
    assert _counts(rows) == {"pending": 276, "invalid": 14, "duplicate": 20}
    assert sb.log() == []
    # A dry run's file is the plan: --resume sends the pending rows.
    p = run_cli("run", SAMPLES / "numbers.csv", "--resume", "--base-url", sb.url, "--default-region", "US",
                cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    rows = read_results(tmp_path / "numbers.results.csv")
    assert _counts(rows) == SAMPLE_OUTCOMES
    assert_matches_sandbox(rows, sb)


def test_transient_errors_are_retried_and_exhaustion_is_failed_exit_1(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox(error_rate=1.0, seed=1)
    (tmp_path / "l.csv").write_text("phone\n+14152000001\n+14152000002\n")
    p = run_cli("run", "l.csv", "--base-url", sb.url, "--retries", "2", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    rows = read_results(tmp_path / "l.results.csv")
    assert [r["outcome"] for r in rows] == ["failed", "failed"]
    assert all(r["attempts"] == "3" and r["message"].startswith("gave up after 3 attempts: 50") for r in rows)
    assert len(sb.log()) == 6
    assert "--resume" in p.stdout
    assert_matches_sandbox(rows, sb)


def test_max_failures_stops_with_exit_3_and_skips_the_rest(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox(generate_inventory(50), error_rate=1.0, seed=1)
    write_list(tmp_path / "l.csv", 50)
    p = run_cli("run", "l.csv", "--base-url", sb.url, "--retries", "0", "--max-failures", "3",
                "--concurrency", "1", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 3, p.stderr
    rows = read_results(tmp_path / "l.results.csv")
    assert len(rows) == 50
    assert _counts(rows) == {"failed": 3, "skipped": 47}
    assert len(sb.log()) == 3
    assert "--max-failures" in p.stdout


def test_rejected_credentials_stop_at_once_exit_3(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox(generate_inventory(200), reject_after=20)
    write_list(tmp_path / "l.csv", 200)
    p = run_cli("run", "l.csv", "--base-url", sb.url, "--concurrency", "4", cwd=tmp_path)
    assert p.returncode == 3, p.stderr
    rows = read_results(tmp_path / "l.results.csv")
    assert len(rows) == 200
    counts = _counts(rows)
    assert counts["detached"] == 20 and counts["detached"] + counts["skipped"] == 200
    statuses = [s for _, s, _ in sb.log()]
    # The requests already in flight when the first 401 came back may answer;
    # nothing is sent after it.
    first_401 = statuses.index(401)
    assert len(statuses) - first_401 <= 4
    assert "credentials rejected" in p.stdout
    assert_matches_sandbox(rows, sb)


def test_wrong_secret_is_a_401_stop(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox()
    (tmp_path / "l.csv").write_text("phone\n+14152000001\n+14152000002\n")
    p = run_cli("run", "l.csv", "--base-url", sb.url, "--concurrency", "1", cwd=tmp_path,
                env=cli_env(VIDEOSDK_SECRET_KEY="wrong-secret-xyz"))  # fmt: skip
    assert p.returncode == 3
    assert [r["outcome"] for r in read_results(tmp_path / "l.results.csv")] == ["skipped", "skipped"]
    assert len(sb.log()) == 1


def test_ready_made_token_is_used_and_expired_one_refused(start_sandbox, tmp_path: Path) -> None:
    import time

    import jwt

    from bulk_detach.auth import management_claims

    sb = start_sandbox()
    (tmp_path / "l.csv").write_text("phone\n+14152000001\n")
    good = jwt.encode(management_claims("test-key", int(time.time())), SECRET, algorithm="HS256")
    env = {k: v for k, v in cli_env().items() if k not in ("VIDEOSDK_API_KEY", "VIDEOSDK_SECRET_KEY")}
    p = run_cli("run", "l.csv", "--base-url", sb.url, cwd=tmp_path, env={**env, "VIDEOSDK_TOKEN": good})
    assert p.returncode == 0, p.stderr
    old = jwt.encode(management_claims("test-key", int(time.time()) - 7200), SECRET, algorithm="HS256")
    p = run_cli("run", "l.csv", "--base-url", sb.url, "--force", cwd=tmp_path, env={**env, "VIDEOSDK_TOKEN": old})
    assert p.returncode == 2
    assert "expired" in p.stderr and old not in p.stderr + p.stdout
    assert len(sb.log()) == 1


@pytest.mark.parametrize(
    ("files", "args", "env_drop", "needle"),
    [
        ({}, ["missing.csv"], False, "no such file"),
        ({"e.csv": ""}, ["e.csv"], False, "no data rows"),
        ({"h.csv": "phone\n\n"}, ["h.csv"], False, "no data rows"),
        ({"c.csv": "name,site\nbob,x\n"}, ["c.csv"], False, "no numbers column"),
        ({"c.csv": "phone\n+14152000001\n"}, ["c.csv", "--column", "nope"], False, "no column named"),
        ({"c.csv": "phone\n+14152000001\n"}, ["c.csv"], True, "no credentials"),
        ({"c.csv": "phone\n+14152000001\n"}, ["c.csv", "--default-region", "XX"], False, "ISO country"),
        ({"c.csv": "phone\n+14152000001\n"}, ["c.csv", "--concurrency", "0"], False, "0"),
        ({"bad.xlsx": "not really a spreadsheet"}, ["bad.xlsx"], False, "cannot read"),
        ({"c.csv": "phone\n+14152000001\n", "c.results.csv": "x\n"}, ["c.csv"], False, "exists"),
        ({"c.csv": "phone\n+14152000001\n", "f": "a file"}, ["c.csv", "--out", "f/r.csv"], False, "cannot write"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    start_sandbox, tmp_path: Path, files: dict[str, str], args: list[str], env_drop: bool, needle: str
) -> None:
    sb = start_sandbox()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = cli_env()
    if env_drop:
        env = {k: v for k, v in env.items() if not k.startswith("VIDEOSDK_")}
    p = run_cli("run", *args, "--base-url", sb.url, cwd=tmp_path, env=env)
    assert p.returncode == 2
    assert needle in p.stderr
    assert "Traceback" not in p.stderr
    assert sb.log() == []
    if "c.results.csv" in files:
        assert (tmp_path / "c.results.csv").read_text() == "x\n"  # untouched


def test_secrets_never_shown(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox(error_rate=0.5, seed=3)
    log = tmp_path / "run.log"
    p = run_cli("run", SAMPLES / "numbers.csv", "--base-url", sb.url, "--log-file", log,
                "--log-format", "json", cwd=tmp_path)  # fmt: skip
    everything = p.stdout + p.stderr + log.read_text() + (tmp_path / "numbers.results.csv").read_text()
    assert SECRET not in everything
    assert "eyJ" not in everything  # no JWT of any kind
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "run started" in events


def test_formula_cells_are_defused(start_sandbox, tmp_path: Path) -> None:
    sb = start_sandbox()
    (tmp_path / "l.csv").write_text('phone\n=HYPERLINK("x")\n@SUM(1)\n+1 415 200 0001\n-5\n')
    p = run_cli("run", "l.csv", "--base-url", sb.url, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = read_results(tmp_path / "l.results.csv")
    assert [r["input"] for r in rows] == ["'=HYPERLINK(\"x\")", "'@SUM(1)", "+1 415 200 0001", "'-5"]
    for r in rows:
        for col, cell in r.items():
            if col not in ("input", "phone_number"):
                assert not cell.startswith(("=", "+", "-", "@")), (col, cell)


def test_embedded_sandbox_rehearsal_needs_no_account(tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env().items() if not k.startswith("VIDEOSDK_")}
    shutil.copy(SAMPLES / "numbers.csv", tmp_path)
    p = run_cli("run", "numbers.csv", "--sandbox", SAMPLES / "inventory.csv", "--default-region", "US",
                cwd=tmp_path, env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert _counts(read_results(tmp_path / "numbers.results.csv")) == SAMPLE_OUTCOMES
