"""Shared helpers: a real sandbox on 127.0.0.1, the real CLI as a subprocess."""

from __future__ import annotations

import copy
import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bulk_detach.sandbox import Faults, PhoneNumber, Sandbox, SandboxThread, generated_number, load_inventory

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
API_KEY = "test-key"
SECRET = "test-secret-0123456789abcdef-0123456789"
CLI_TIMEOUT = 120  # seconds: every subprocess is bounded


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDEOSDK_")}
    env.update({"VIDEOSDK_API_KEY": API_KEY, "VIDEOSDK_SECRET_KEY": SECRET, "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run_cli(
    *args: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bulk_detach", *map(str, args)],
        cwd=cwd,
        env=cli_env() if env is None else env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def spawn_cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bulk_detach", *map(str, args)],
        cwd=cwd,
        env=cli_env() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def write_list(path: Path, n: int, start: int = 0) -> list[str]:
    """A one-column list of n numbers from the sandbox's generated inventory."""
    numbers = [generated_number(start + i) for i in range(n)]
    path.write_text("phone\n" + "\n".join(numbers) + "\n")
    return numbers


def read_results(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@dataclass
class LiveSandbox:
    """A sandbox serving on loopback, plus its inventory as it was at the start."""

    server: Sandbox
    thread: SandboxThread
    before: dict[str, PhoneNumber]

    @property
    def url(self) -> str:
        return self.server.url

    def numbers(self) -> dict[str, PhoneNumber]:
        return self.thread.call(lambda: copy.deepcopy(self.server.numbers))  # type: ignore[no-any-return]

    def log(self) -> list[tuple[str, int | None, bool]]:
        return self.thread.call(  # type: ignore[no-any-return]
            lambda: [(r.phone_number, r.status, r.applied) for r in self.server.log]
        )

    def arrivals(self) -> list[float]:
        """When each detach request reached the server (time.monotonic())."""
        return self.thread.call(lambda: [r.arrived for r in self.server.log])  # type: ignore[no-any-return]


@pytest.fixture
def start_sandbox() -> Iterator[object]:
    started: list[SandboxThread] = []

    def start(numbers: dict[str, PhoneNumber] | None = None, **faults: object) -> LiveSandbox:
        numbers = numbers if numbers is not None else load_inventory(SAMPLES / "inventory.csv")
        server = Sandbox(copy.deepcopy(numbers), API_KEY, SECRET, Faults(**faults))  # type: ignore[arg-type]
        thread = SandboxThread(server)
        thread.__enter__()
        started.append(thread)
        return LiveSandbox(server, thread, numbers)

    yield start
    for thread in started:
        thread.__exit__(None, None, None)


def assert_matches_sandbox(rows: list[dict[str, str]], sb: LiveSandbox) -> None:
    """Every results row agrees with what the sandbox knew before and holds now."""
    now = sb.numbers()
    by_row = {r["row"]: r for r in rows}
    for r in rows:
        e164, outcome = r["phone_number"], r["outcome"]
        before = sb.before.get(e164)
        after = now.get(e164)
        where = f"row {r['row']} ({r['input']!r} -> {outcome})"
        if outcome == "detached":
            assert before is not None and after is not None, where
            assert (before.inbound or "", before.outbound or "") == (
                r["inbound_gateway_id"], r["outbound_gateway_id"]), where  # fmt: skip
            assert r["phone_number_id"] == before.phone_number_id, where
            assert after.inbound is None and after.outbound is None, where
            assert r["http_status"] == "200", where
        elif outcome == "not_attached":
            assert before is not None and after is not None, where
            assert after.inbound is None and after.outbound is None, where
            was_attached = before.inbound is not None or before.outbound is not None
            if was_attached:  # then only this run can have detached it
                assert r["uncertain"] == "true", where
            assert r["http_status"] == "400", where
        elif outcome == "not_found":
            assert before is None and r["http_status"] == "404", where
        elif outcome == "invalid":
            assert r["phone_number"] == "" and r["attempts"] == "0", where
        elif outcome == "duplicate":
            first = by_row[r["message"].rsplit(" ", 1)[-1]]
            assert first["phone_number"] == e164 and int(first["row"]) < int(r["row"]), where
            assert r["attempts"] == "0", where
        elif outcome in ("skipped", "pending"):
            # Never answered: the number is as it was, unless an earlier
            # attempt of this run may have reached the server.
            if before is not None and r["attempts"] == "0":
                assert (after.inbound, after.outbound) == (before.inbound, before.outbound), where
        elif outcome == "failed":
            assert int(r["attempts"]) >= 1, where
        else:
            raise AssertionError(f"unknown outcome {where}")
