"""Throughput and memory of bulk-detach against the sandbox, with baselines measured in the same run.

    .venv/bin/python benchmarks/bench.py            # full table (several minutes)
    .venv/bin/python benchmarks/bench.py --quick    # smaller lists, one repetition

The sandbox runs in its own process (``bulk-detach sandbox``) on 127.0.0.1;
every figure is the median of --reps runs. Rates are rows/s as measured inside
each client (process start-up excluded, for ours and for the baselines alike).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PY = sys.executable
ENV = {**os.environ, "VIDEOSDK_API_KEY": "sandbox-key", "VIDEOSDK_SECRET_KEY": "sandbox-secret-not-for-production"}


def number(i: int) -> str:
    return f"+1415{2_000_000 + i:07d}"


class SandboxProcess:
    def __init__(self, n: int, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "bulk_detach", "sandbox", "--generate", str(n), "--no-request-log", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def write_list(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        f.write("phone\n")
        f.writelines(number(i) + "\n" for i in range(n))
    return path


def ours(csv: Path, url: str | None, *args: str) -> tuple[float, float, int]:
    """(rows/s from the summary, wall seconds, peak RSS in MB)."""
    out = csv.with_suffix(".results.csv")
    cmd = [PY, "-m", "bulk_detach", "run", str(csv), "--out", str(out), "--force", "--log-file", os.devnull]
    if url:
        cmd += ["--base-url", url]
    started = time.perf_counter()
    p = subprocess.run([PY, __file__, "--measure-rss", "--", *cmd, *args], capture_output=True, text=True,
                       env=ENV, timeout=3600)  # fmt: skip
    wall = time.perf_counter() - started
    m = re.search(r"\(([\d.]+) rows/s\)", p.stdout)
    rss = re.search(r"maxrss_kb=(\d+)", p.stdout)
    if not m or not rss:
        raise RuntimeError(f"bulk-detach failed: {p.stdout}\n{p.stderr}")
    return float(m.group(1)), wall, int(rss.group(1)) // 1024


PLAIN_LOOP = r'''
import asyncio, json, sys, time, aiohttp, jwt
url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
token = jwt.encode({"apikey": "sandbox-key", "permissions": ["allow_join", "allow_mod"], "version": 2,
                    "roles": ["crawler"], "iat": int(time.time()), "exp": int(time.time()) + 3600},
                   "sandbox-secret-not-for-production", algorithm="HS256")
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


def plain_loop(url: str, n: int, c: int) -> float:
    p = subprocess.run([PY, "-c", PLAIN_LOOP, url, str(n), str(c)], capture_output=True, text=True, timeout=3600)
    return float(p.stdout.strip())


def xargs_curl(url: str, csv: Path, n: int) -> float:
    token = subprocess.run(
        [PY, "-c", "import jwt,time;print(jwt.encode({'apikey':'sandbox-key','permissions':['allow_join','allow_mod'],"
         "'version':2,'roles':['crawler'],'iat':int(time.time()),'exp':int(time.time())+3600},"
         "'sandbox-secret-not-for-production',algorithm='HS256'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    numbers = "\n".join(number(i) for i in range(n)) + "\n"
    script = (
        f"curl -s -o /dev/null -X POST {url}/v2/sip/phone-numbers/detach -H 'Authorization: {token}' "
        "-H 'Content-Type: application/json' -d \"{\\\"phoneNumber\\\": \\\"$0\\\"}\""
    )
    started = time.perf_counter()
    subprocess.run(["xargs", "-P", "16", "-n", "1", "sh", "-c", script], input=numbers, text=True, check=True)
    return n / (time.perf_counter() - started)


def median(fn: Callable[[], float], reps: int) -> float:
    return statistics.median(fn() for _ in range(reps))


def measure_rss(cmd: list[str]) -> None:
    import resource

    p = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    print(f"maxrss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    quick = args.quick
    reps = 1 if quick else args.reps
    rows: list[tuple[str, str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bulk-detach-bench-"))
    try:
        # 1. latency-bound
        n, c, lat = (1000 if quick else 3000), 32, 50
        csv = write_list(tmp / "lat.csv", n)
        with SandboxProcess(n, "--latency-ms", str(lat)) as sb:
            ours_rate = median(lambda: ours(csv, sb.url, "--concurrency", str(c))[0], reps)
            plain = median(lambda: plain_loop(sb.url, n, c), reps)
            curl = xargs_curl(sb.url, csv, 200 if quick else 500)
        ideal = c / (lat / 1000)
        rows.append((f"latency {lat} ms, {n} rows, C={c}", f"{ours_rate:.0f} rows/s",
                     f"ideal {ideal:.0f} ({ours_rate / ideal:.2f}x); plain loop {plain:.0f} "
                     f"({ours_rate / plain:.2f}x)"))  # fmt: skip
        rows.append((f"xargs -P 16 curl, latency {lat} ms", f"{curl:.0f} rows/s",
                     f"ours (C={c}) / curl = {ours_rate / curl:.1f}x"))  # fmt: skip

        # 2. zero latency
        n = 5000 if quick else 20000
        csv = write_list(tmp / "zero.csv", n)
        with SandboxProcess(n) as sb:
            ours_rate = median(lambda: ours(csv, sb.url, "--concurrency", "32")[0], reps)
            plain = median(lambda: plain_loop(sb.url, n, 32), reps)
        rows.append((f"zero latency, {n} rows, C=32", f"{ours_rate:.0f} rows/s",
                     f"plain loop {plain:.0f} ({ours_rate / plain:.2f}x)"))  # fmt: skip

        # 3. rate-limited server, default options
        n, limit = (1000 if quick else 3000), 100
        csv = write_list(tmp / "rl.csv", n)
        with SandboxProcess(n, "--rate-limit", str(limit)) as sb:
            achieved = ours(csv, sb.url)[0]
            state = _state(sb.url)
        share429 = state.get("429", 0) / max(sum(state.values()), 1)
        rows.append((f"server limit {limit}/s, {n} rows, defaults", f"{achieved:.0f} rows/s",
                     f"{achieved / limit:.2f}x the limit; {share429:.1%} answered 429"))  # fmt: skip

        # 4. big dry runs: memory and parse speed
        n = 200_000 if quick else 1_000_000
        csv = write_list(tmp / "big.csv", n)
        rate, wall, rss = ours(csv, None, "--dry-run")
        rows.append((f"{n:,}-row CSV, dry run", f"{rate:,.0f} rows/s", f"peak RSS {rss} MB, wall {wall:.1f} s"))
        n = 20_000 if quick else 100_000
        xlsx = _xlsx(tmp, n)
        _, wall, rss = ours(xlsx, None, "--dry-run")
        rows.append((f"{n:,}-row .xlsx, dry run", f"{wall:.2f} s wall", f"peak RSS {rss} MB"))

        # 5. --help
        helps = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([PY, "-m", "bulk_detach", "--help"], capture_output=True, check=True)
            helps.append(time.perf_counter() - t)
        rows.append(("bulk-detach --help", f"{statistics.median(helps):.3f} s", "median of 5"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'case':<{width}}  {'ours':>16}  comparison")
    for case, value, note in rows:
        print(f"{case:<{width}}  {value:>16}  {note}")
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {sys.platform}")


def _state(url: str) -> dict[str, int]:
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
        ws.append([f"line {i}", int(number(i)[1:])])
    path = tmp / "big.xlsx"
    wb.save(path)
    return path


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--measure-rss":
        measure_rss(sys.argv[3:])
    else:
        main()
