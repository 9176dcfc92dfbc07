"""The request rate as the server sees it: --rate caps it, a 429 limit is learnt.

Only counts and the spacing of arrivals are asserted, never how fast a run is:
a slower machine only spaces requests further apart.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from conftest import assert_matches_sandbox, read_results, run_cli, write_list

from bulk_detach.sandbox import generate_inventory


def test_rate_option_is_a_hard_cap(start_sandbox, tmp_path: Path) -> None:
    n, rate = 60, 40
    sb = start_sandbox(generate_inventory(n))
    write_list(tmp_path / "l.csv", n)
    p = run_cli("run", "l.csv", "--base-url", sb.url, "--rate", str(rate), "--concurrency", "16", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    arrived = sorted(sb.arrivals())
    assert len(arrived) == n
    # Spaced 1/rate apart, any rate+1 consecutive requests span a second or
    # more (0.9 s: slack for loopback jitter). Uncapped, all 60 arrive within
    # a few milliseconds.
    spans = [arrived[i + rate] - arrived[i] for i in range(n - rate)]
    assert min(spans) >= 0.9, min(spans)


def test_default_options_learn_a_servers_limit_without_a_storm(start_sandbox, tmp_path: Path) -> None:
    n, limit = 300, 100
    # A small bucket: after each pause, sending at full speed again drains it
    # at once, so only a client that paces itself avoids 429s.
    sb = start_sandbox(generate_inventory(n), rate_limit=limit, burst=5)
    write_list(tmp_path / "l.csv", n)
    p = run_cli("run", "l.csv", "--base-url", sb.url, "--log-format", "json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = read_results(tmp_path / "l.results.csv")
    assert Counter(r["outcome"] for r in rows) == {"detached": n}
    assert_matches_sandbox(rows, sb)
    statuses = Counter(status for _, status, _ in sb.log())
    # Every 429 was retried, and the run learnt the limit instead of hitting
    # it again and again: measured, 8 429s here; 238 for a client that only
    # waits out each pause and then sends at full speed again.
    assert statuses[200] == n
    assert statuses[429] <= 0.10 * n, statuses
    assert set(statuses) <= {200, 429}
