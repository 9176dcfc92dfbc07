"""Throughput and memory of bulk-detach against the sandbox, with baselines measured in the same run.

    .venv/bin/python benchmarks/bench.py            # the full table, medians of 3 (about 15 minutes)
    .venv/bin/python benchmarks/bench.py --quick    # smaller lists, one repetition (about 1 minute)

The sandbox runs in its own process (``bulk-detach sandbox``) on 127.0.0.1, and
every measured run, ours or a baseline's, gets a fresh one, so all of them see
the same answers (200s, not the 400s a second pass would get). Every figure is
the median of --reps runs. "rows/s" is measured inside each client, start-up
excluded, for ours and the baselines alike; "wall" includes start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

PY = sys.executable
KEY, SECRET = "sandbox-key", "sandbox-secret-not-for-production"
ENV = {**os.environ, "VIDEOSDK_API_KEY": KEY, "VIDEOSDK_SECRET_KEY": SECRET}
TOKEN = (
    "import jwt, time; now = int(time.time()); "
    f"token = jwt.encode({{'apikey': '{KEY}', 'permissions': ['allow_join', 'allow_mod'], 'version': 2, "
    f"'roles': ['crawler'], 'iat': now, 'exp': now + 3600}}, '{SECRET}', algorithm='HS256')"
)


def number(i: int) -> str:
    return f"+1415{2_000_000 + i:07d}"  # the sandbox's generated inventory


@contextmanager
def sandbox(n: int, *extra: str) -> Iterator[str]:
    """A fresh sandbox process holding n attached numbers; yields its base URL."""
    proc = subprocess.Popen(
        [PY, "-m", "bulk_detach", "sandbox", "--generate", str(n), "--no-request-log", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def write_list(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        f.write("phone\n")
        f.writelines(number(i) + "\n" for i in range(n))
    return path


@dataclass(frozen=True)
class Run:
    rate: float  # rows/s, the tool's own summary (start-up excluded)
    wall: float  # seconds, process start to exit
    rss_mb: int  # peak resident set


UVLOOP = "import asyncio, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "


def ours(src: Path, url: str | None, *args: str, uvloop: bool = False) -> Run:
    out = src.with_suffix(".results.csv")
    entry = ["-c", UVLOOP + "from bulk_detach.cli import main; main()"] if uvloop else ["-m", "bulk_detach"]
    cmd = [PY, *entry, "run", str(src), "--out", str(out), "--force", "--log-file", os.devnull]
    if url:
        cmd += ["--base-url", url]
    p, wall, rss = timed([*cmd, *args])
    m = re.search(r"\(([\d.]+) rows/s\)", p.stdout)
    if not m:
        raise RuntimeError(f"bulk-detach failed: {p.stdout}\n{p.stderr}")
    return Run(float(m.group(1)), wall, rss)


def timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """Run cmd in a child of a fresh helper, so RUSAGE_CHILDREN is cmd's own peak RSS."""
    started = time.perf_counter()
    p = subprocess.run([PY, __file__, "--measure-rss", "--", *cmd], capture_output=True, text=True, env=ENV,
                       timeout=3600)  # fmt: skip
    wall = time.perf_counter() - started
    rss = re.search(r"maxrss_kb=(\d+)\n?$", p.stdout)
    if not rss:
        raise RuntimeError(f"{cmd[:3]} failed: {p.stdout}\n{p.stderr}")
    return p, wall, int(rss.group(1)) // 1024


PLAIN_LOOP = TOKEN + r'''
import asyncio, sys, aiohttp
url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    sem = asyncio.Semaphore(c)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as s:
        async def one(i):
            async with sem, s.post(url + "/v2/sip/phone-numbers/detach", headers={"Authorization": token},
                                   json={"phoneNumber": f"+1415{2000000 + i:07d}"}) as r:
                await r.read()
        t = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        print(n / (time.perf_counter() - t))
asyncio.run(main())
'''


def plain_loop(url: str, n: int, c: int) -> Run:
    """One session, a semaphore, nothing else: the reference for our overhead."""
    p, wall, rss = timed([PY, "-c", PLAIN_LOOP, url, str(n), str(c)])
    return Run(float(p.stdout.splitlines()[0]), wall, rss)


def xargs_curl(url: str, n: int, parallel: int) -> float:
    """What an operator would script: one curl process per number."""
    token = subprocess.run([PY, "-c", TOKEN + "; print(token)"], capture_output=True, text=True, check=True)
    script = (
        f"curl -s -o /dev/null -X POST {url}/v2/sip/phone-numbers/detach "
        f"-H 'Authorization: {token.stdout.strip()}' -H 'Content-Type: application/json' "
        "-d \"{\\\"phoneNumber\\\": \\\"$0\\\"}\""
    )
    numbers = "".join(number(i) + "\n" for i in range(n))
    started = time.perf_counter()
    subprocess.run(["xargs", "-P", str(parallel), "-n", "1", "sh", "-c", script], input=numbers, text=True,
                   check=True, timeout=3600)  # fmt: skip
    return n / (time.perf_counter() - started)


LOAD_XLSX = """
import sys, time
t = time.perf_counter()
from bulk_detach.loader import open_input
rows = sum(1 for _ in open_input(sys.argv[1], None, None).cells())
print(time.perf_counter() - t, rows)
"""


def xlsx_load(path: Path) -> float:
    """Seconds from nothing imported to every cell read (pandas import included)."""
    p = subprocess.run([PY, "-c", LOAD_XLSX, str(path)], capture_output=True, text=True, check=True)
    return float(p.stdout.split()[0])


def medians(fns: Sequence[Callable[[], Run]], reps: int) -> list[Run]:
    """Each fn run reps times, interleaved (a b a b ...) so drift hits all alike; the medians."""
    runs: list[list[Run]] = [[] for _ in fns]
    for _ in range(reps):
        for got, fn in zip(runs, fns, strict=True):
            got.append(fn())
    return [
        Run(
            statistics.median(r.rate for r in rs),
            statistics.median(r.wall for r in rs),
            int(statistics.median(r.rss_mb for r in rs)),
        )
        for rs in runs
    ]


def median(fn: Callable[[], Run], reps: int) -> Run:
    return medians([fn], reps)[0]


def measure_rss(cmd: list[str]) -> None:
    import resource

    p = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    print(f"maxrss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller lists, one repetition")
    ap.add_argument("--reps", type=int, default=3, help="runs per figure (the median is shown)")
    args = ap.parse_args()
    quick = args.quick
    reps = 1 if quick else args.reps
    rows: list[tuple[str, str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bulk-detach-bench-"))

    def row(case: str, value: str, comparison: str) -> None:
        rows.append((case, value, comparison))
        print(f"  {case}: {value}  {comparison}", file=sys.stderr, flush=True)

    try:
        # 1. latency-bound: what the tool adds to a real network's wait
        n, c, lat = (1000 if quick else 3000), 32, 50
        curl_n = 300 if quick else 1000
        csv = write_list(tmp / "latency.csv", n)
        extra = ("--latency-ms", str(lat))

        def ours_lat(conc: int) -> Run:
            with sandbox(n, *extra) as url:
                return ours(csv, url, "--concurrency", str(conc))

        def plain_lat() -> Run:
            with sandbox(n, *extra) as url:
                return plain_loop(url, n, c)

        def curl_lat() -> Run:
            with sandbox(n, *extra) as url:
                return Run(xargs_curl(url, curl_n, 16), 0.0, 0)

        got, plain, curl_run, got16, got64 = medians(
            [partial(ours_lat, c), plain_lat, curl_lat, partial(ours_lat, 16), partial(ours_lat, 64)], reps
        )
        ideal = c / (lat / 1000)
        row(f"latency {lat} ms, {n:,} rows, C={c}", f"{got.rate:,.0f} rows/s",
            f"ideal C/latency {ideal:,.0f} ({got.rate / ideal:.2f}x); "
            f"plain aiohttp loop {plain.rate:,.0f} ({got.rate / plain.rate:.2f}x)")  # fmt: skip
        curl = curl_run.rate
        row(f"xargs -P 16 curl, latency {lat} ms, {curl_n:,} rows", f"{curl:,.0f} rows/s",
            f"ours / curl: C=16 {got16.rate / curl:.1f}x ({got16.rate:,.0f} rows/s), C={c} {got.rate / curl:.1f}x, "
            f"C=64 {got64.rate / curl:.1f}x ({got64.rate:,.0f} rows/s)")  # fmt: skip

        # 2. zero latency: the tool's own CPU cost per row
        n = 5000 if quick else 20_000
        csv = write_list(tmp / "zero.csv", n)

        def ours_zero(uvloop: bool = False) -> Run:
            with sandbox(n) as url:
                return ours(csv, url, "--concurrency", "32", uvloop=uvloop)

        def plain_zero() -> Run:
            with sandbox(n) as url:
                return plain_loop(url, n, 32)

        def curl_zero() -> Run:  # a process per number: its own CPU is the limit
            with sandbox(n) as url:
                return Run(xargs_curl(url, curl_n, 64), 0.0, 0)

        variants: list[Callable[[], Run]] = [ours_zero, plain_zero, curl_zero]
        if importlib.util.find_spec("uvloop"):
            variants.append(partial(ours_zero, uvloop=True))
        got, plain, curl_ceiling, *uv = medians(variants, reps)
        row(f"zero latency, {n:,} rows, C=32", f"{got.rate:,.0f} rows/s",
            f"plain aiohttp loop {plain.rate:,.0f} ({got.rate / plain.rate:.2f}x); "
            f"wall incl. start-up {got.wall:.2f} s vs {plain.wall:.2f} s ({plain.wall / got.wall:.2f}x)")  # fmt: skip
        if uv:
            row("  the same on uvloop (not adopted)", f"{uv[0].rate:,.0f} rows/s",
                f"{uv[0].rate / got.rate:.2f}x ours on asyncio")  # fmt: skip
        row(f"  xargs -P 64 curl, zero latency, {curl_n:,} rows", f"{curl_ceiling.rate:,.0f} rows/s",
            f"a process per number tops out here: ours / curl {got.rate / curl_ceiling.rate:.0f}x")  # fmt: skip

        # 3. a server that allows 100 requests/s, default options
        n, limit = (1000 if quick else 3000), 100
        csv = write_list(tmp / "limited.csv", n)
        results = []
        for _ in range(reps):
            with sandbox(n, "--rate-limit", str(limit)) as url:
                got = ours(csv, url)
                statuses = _statuses(url)
            results.append((got.rate, statuses.get("429", 0) / max(sum(statuses.values()), 1)))
        rate, share = statistics.median(r for r, _ in results), statistics.median(s for _, s in results)
        row(f"server limit {limit}/s, {n:,} rows, defaults", f"{rate:,.0f} rows/s",
            f"{rate / limit:.2f}x the limit; {share:.1%} of requests answered 429")  # fmt: skip

        # 4. a million rows: memory stays flat, parse speed
        n = 200_000 if quick else 1_000_000
        csv = write_list(tmp / "big.csv", n)
        got = median(lambda: ours(csv, None, "--dry-run"), reps)
        row(f"{n:,}-row CSV, dry run", f"{got.rate:,.0f} rows/s", f"peak RSS {got.rss_mb} MB, wall {got.wall:.1f} s")

        def ours_big() -> Run:
            with sandbox(n) as url:
                return ours(csv, url, "--concurrency", "32")

        got = median(ours_big, reps)
        row(f"{n:,}-row CSV, zero latency, C=32", f"{got.rate:,.0f} rows/s",
            f"peak RSS {got.rss_mb} MB, wall {got.wall:.1f} s")  # fmt: skip

        # 5. a big spreadsheet
        n = 20_000 if quick else 100_000
        xlsx = _xlsx(tmp, n)
        load = statistics.median(xlsx_load(xlsx) for _ in range(reps))
        got = median(lambda: ours(xlsx, None, "--dry-run"), reps)
        row(f"{n:,}-row .xlsx, load", f"{load:.2f} s",
            f"read + pandas import; whole dry run {got.wall:.2f} s wall, peak RSS {got.rss_mb} MB")  # fmt: skip

        # 6. start-up
        helps = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([PY, "-m", "bulk_detach", "--help"], capture_output=True, check=True)
            helps.append(time.perf_counter() - t)
        row("bulk-detach --help", f"{statistics.median(helps):.3f} s", "wall, median of 5")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'case':<{width}}  {'ours':>14}  comparison (same run)")
    for case, value, note in rows:
        print(f"{case:<{width}}  {value:>14}  {note}")
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {sys.platform}; "
          f"{'--quick, 1 run' if quick else f'median of {reps} runs'} per figure")  # fmt: skip


def _statuses(url: str) -> dict[str, int]:
    import aiohttp

    async def get() -> dict[str, int]:
        async with aiohttp.ClientSession() as s, s.get(url + "/_sandbox/state") as r:
            return dict((await r.json())["statuses"])

    return asyncio.run(get())


def _xlsx(tmp: Path, n: int) -> Path:
    import openpyxl

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("Numbers")
    ws.append(["Name", "Phone"])
    for i in range(n):
        ws.append([f"line {i}", int(number(i)[1:])])  # stored as numbers, as exports do
    path = tmp / "big.xlsx"
    wb.save(path)
    return path


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--measure-rss":
        measure_rss(sys.argv[3:])
    else:
        main()
