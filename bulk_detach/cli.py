"""Command line: arguments -> wiring -> exit status.

The one place where exceptions become exit statuses. Heavy modules are
imported inside the commands, so ``bulk-detach --help`` stays instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from bulk_detach import __version__
from bulk_detach.errors import BulkDetachError, ResultsWriteError
from bulk_detach.models import ExitStatus, OutcomeKind, StopReason

if TYPE_CHECKING:
    from bulk_detach.auth import TokenSource
    from bulk_detach.loader import InputFile
    from bulk_detach.logs import Redactor
    from bulk_detach.pipeline import RunState
    from bulk_detach.reporter import Kept, ResultsFile

ENV_BASE = "VIDEOSDK_API_BASE"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bulk-detach")
def cli() -> None:
    """Detach SIP gateways from many VideoSDK phone numbers at once.

    Credentials come from the environment only: VIDEOSDK_API_KEY and
    VIDEOSDK_SECRET_KEY (tokens are signed and renewed here), or a ready-made
    VIDEOSDK_TOKEN.
    """


@dataclass(frozen=True, slots=True)
class RunOptions:
    input: str
    out: Path | None
    column: str | None
    sheet: str | None
    default_region: str | None
    concurrency: int
    rate: float | None
    retries: int
    timeout: float
    max_failures: int | None
    resume: bool
    force: bool
    dry_run: bool
    base_url: str | None
    log_format: str
    log_file: Path | None
    sandbox: Path | None


def _region(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    import phonenumbers

    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise click.BadParameter(f"{value!r} is not an ISO country code phonenumbers knows (e.g. US, GB)")
    return region


@cli.command(no_args_is_help=True)
@click.argument("input", metavar="INPUT")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Results file [default: <input stem>.results.csv in the current folder].")
@click.option("--column", help="Column that holds the numbers (name, or position from 1) [default: auto].")
@click.option("--sheet", help="Excel sheet [default: the first].")
@click.option("--default-region", callback=_region, metavar="CC",
              help="ISO country for numbers written without a country code (US, GB, ...).")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="Requests in flight at most.")
@click.option("--rate", type=click.FloatRange(0, min_open=True), help="Requests per second at most.")
@click.option("--retries", type=click.IntRange(0, 100), default=5, show_default=True,
              help="Retries of one number after a transient failure.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
              help="Seconds for one request.")
@click.option("--max-failures", type=click.IntRange(1), help="Stop sending (exit 3) once N numbers failed.")
@click.option("--resume", is_flag=True, help="Continue the run whose results file exists; redo the rest.")
@click.option("--force", is_flag=True, help="Overwrite an existing results file.")
@click.option("--dry-run", is_flag=True, help="Read, normalise, de-duplicate and write `pending` rows; send nothing.")
@click.option("--base-url", help=f"API base URL [default: ${ENV_BASE} or https://api.videosdk.live].")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto", show_default=True,
              help="Console on a terminal, JSON lines otherwise.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Where log lines go [default: stderr].")
@click.option("--sandbox", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="INVENTORY",
              help="Rehearse against a local sandbox loaded with this inventory CSV (no account needed).")
def run(**kwargs: Any) -> None:  # fmt: skip
    """Detach the SIP gateways of every number in INPUT (.csv .tsv .txt .xlsx, or - for stdin)."""
    opts = RunOptions(**kwargs)
    if opts.resume and opts.force:
        raise click.UsageError("--resume and --force exclude each other")
    if opts.sandbox and opts.base_url:
        raise click.UsageError("--sandbox and --base-url exclude each other")
    sys.exit(_run(opts))


def _run(opts: RunOptions) -> int:
    from bulk_detach.logs import Redactor, configure

    redactor = Redactor()
    try:
        log_stream = _open_log(opts.log_file)
    except OSError as e:
        return _fail(f"cannot write the log file {opts.log_file}: {e.strerror}")
    configure(opts.log_format, log_stream, redactor)
    try:
        return _run_checked(opts, redactor)
    except BulkDetachError as e:
        return _fail(redactor(str(e)))
    except KeyboardInterrupt:  # Ctrl-C while reading the input, before the run's handlers
        click.echo("bulk-detach: interrupted before anything was sent", err=True)
        return ExitStatus.for_signal(signal.SIGINT)


def _run_checked(opts: RunOptions, redactor: Redactor) -> int:
    from bulk_detach.loader import open_input
    from bulk_detach.pipeline import RunState
    from bulk_detach.reporter import ResultsFile, RunRecord

    source = open_input(opts.input, opts.column, opts.sheet)
    out = opts.out or Path.cwd() / f"{'stdin' if opts.input == '-' else Path(opts.input).stem}.results.csv"
    tokens = None if opts.dry_run or opts.sandbox else _tokens(redactor)
    base_url = opts.base_url or os.environ.get(ENV_BASE, "").strip() or None
    if base_url and not base_url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{base_url!r} is not an http(s) URL", param_hint="--base-url")
    results = ResultsFile(out, redactor)
    results.lock()
    try:
        settings = {"column": opts.column, "sheet": opts.sheet, "default_region": opts.default_region}
        kept = results.start(
            RunRecord(source.name, source.fingerprint, settings), resume=opts.resume, force=opts.force
        )
        state = RunState()
        try:
            try:
                asyncio.run(_drive(opts, source, kept, results, tokens, base_url, redactor, state))
            except KeyboardInterrupt:
                if not state.sending_over:
                    raise
                _note_late_signal(signal.SIGINT)  # in the instant between the loop's handler and ours
            if state.hard_stop:
                # Second Ctrl-C: no final rewrite; the journal is valid for --resume.
                click.echo(f"stopped at once; resume with: {_resume_command(opts, out, opts.dry_run)}", err=True)
                return ExitStatus.for_signal(state.stop_signal or signal.SIGINT)
            results.finish()
        except ResultsWriteError as e:
            click.echo(
                f"bulk-detach: error: {redactor(str(e))}; nothing more was sent. The rows written so far "
                f"are kept: make room, then resume with: {_resume_command(opts, out, opts.dry_run)}",
                err=True,
            )
            return ExitStatus.INCOMPLETE
        elapsed = time.monotonic() - state.started
        return _report(opts, out, state, kept, elapsed)
    finally:
        results.release()


def _note_late_signal(signum: int, _frame: object = None) -> None:
    """Once sending is over, a stop signal is noted, not obeyed.

    All that is left is the final rewrite, which makes the results file
    complete and takes a second or two even for a million rows; cut short, it
    would leave the file in finishing order (and "Aborted!", exit 1).
    """
    import structlog

    structlog.get_logger("bulk_detach").warning(
        "finishing the results file first; exiting right after", signal=signal.Signals(signum).name
    )


def _hand_over_signals(loop: asyncio.AbstractEventLoop) -> None:
    """From the loop's stop handlers to _note_late_signal, for the rest of the process."""
    for signum in _STOP_SIGNALS:
        loop.remove_signal_handler(signum)  # this restores the default handler...
        signal.signal(signum, _note_late_signal)  # ...replaced at once (see _run_checked for the instant between)


def _tokens(redactor: Redactor) -> TokenSource:
    from bulk_detach.auth import tokens_from_env

    tokens = tokens_from_env()
    redactor.add(*tokens.secrets())
    return tokens


async def _drive(
    opts: RunOptions,
    source: InputFile,
    kept: Kept,
    results: ResultsFile,
    tokens: TokenSource | None,
    base_url: str | None,
    redactor: Redactor,
    state: RunState,
) -> None:
    import structlog

    from bulk_detach import progress
    from bulk_detach.client import DEFAULT_BASE_URL, HttpDetacher, open_session
    from bulk_detach.loader import records
    from bulk_detach.pipeline import Pipeline
    from bulk_detach.policy import RetryPolicy
    from bulk_detach.ratecontrol import Throttle

    state.started = time.monotonic()  # the run's clock: start-up and imports are behind us
    log = structlog.get_logger("bulk_detach")
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if state.stop_signal is not None:
            state.hard_stop = True
            if main is not None:
                main.cancel()
            return
        if not state.request_stop(StopReason.SIGNAL, signum):
            state.stop_signal = signum  # already stopping for another reason; note it
        log.warning(
            "stopping: no new requests; waiting for the ones in flight (again to stop at once)",
            signal=signal.Signals(signum).name,
            in_flight=state.in_flight,
        )

    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)

    async with contextlib.AsyncExitStack() as stack:
        if opts.sandbox:
            tokens, base_url = await _embedded_sandbox(stack, opts.sandbox, redactor)
        throttle = Throttle(opts.rate)
        detacher = None
        if not opts.dry_run:
            assert tokens is not None
            session = await stack.enter_async_context(open_session(opts.concurrency, opts.timeout))
            detacher = HttpDetacher(
                session,
                tokens,
                base_url=base_url or DEFAULT_BASE_URL,
                policy=RetryPolicy(retries=opts.retries),
                throttle=throttle,
                stopping=state.stopping,
            )
        total = None if source.estimated_rows is None else max(source.estimated_rows - len(kept.rows), 0)
        log.info(
            "run started",
            input=source.name,
            column=source.layout.column_name,
            rows=total,
            kept_from_earlier_run=len(kept.rows) or None,
            results=str(results.path),
            base_url=None if opts.dry_run else (base_url or DEFAULT_BASE_URL),
            concurrency=opts.concurrency,
            rate=opts.rate,
            dry_run=opts.dry_run or None,
        )
        pipeline = Pipeline(
            detacher,
            results.write,
            state,
            concurrency=opts.concurrency,
            max_failures=opts.max_failures,
            dry_run=opts.dry_run,
            on_sent=results.mark_sent,
            in_doubt=kept.in_doubt,
        )
        try:
            async with progress.shown(state, total, throttle, sys.stderr, sys.stderr.isatty()):
                await pipeline.run(records(source.cells(), opts.default_region), kept.rows)
        except asyncio.CancelledError:
            if not state.hard_stop:
                raise
    state.sending_over = True
    _hand_over_signals(loop)


async def _embedded_sandbox(
    stack: contextlib.AsyncExitStack, inventory: Path, redactor: Redactor
) -> tuple[TokenSource, str]:
    from bulk_detach.auth import SigningTokens
    from bulk_detach.sandbox import Sandbox, load_inventory

    key, secret = "sandbox-" + secrets.token_hex(4), secrets.token_urlsafe(24)
    redactor.add(secret)
    sandbox = await stack.enter_async_context(Sandbox(load_inventory(inventory), key, secret))
    return SigningTokens(key, secret), sandbox.url


def _report(opts: RunOptions, out: Path, state: RunState, kept: Kept, elapsed: float) -> int:
    from bulk_detach import progress

    done_now = state.done
    state.counts.update(kept.counts)
    # A finished dry run shows the command that sends; an interrupted one, the
    # command that finishes the dry run.
    unfinished = state.counts[OutcomeKind.FAILED] + state.counts[OutcomeKind.SKIPPED]
    command = _resume_command(opts, out, dry_run=opts.dry_run and unfinished > 0)
    progress.summary(state, done_now, elapsed, str(out), command, sys.stdout)
    if state.stop_reason in (StopReason.AUTH_REJECTED, StopReason.MAX_FAILURES):
        return ExitStatus.SAFETY_STOP
    if state.stop_reason is StopReason.SIGNAL:
        return ExitStatus.for_signal(state.stop_signal or signal.SIGINT)
    if state.counts[OutcomeKind.FAILED] or state.counts[OutcomeKind.SKIPPED]:
        return ExitStatus.INCOMPLETE
    return ExitStatus.OK


def _resume_command(opts: RunOptions, out: Path, dry_run: bool = False) -> str:
    """The same run, picking up where this one left off."""
    words = ["bulk-detach", "run", opts.input, "--out", str(out)]
    for name, default in (
        ("column", None), ("sheet", None), ("default_region", None), ("concurrency", 8),
        ("rate", None), ("retries", 5), ("timeout", 30.0), ("max_failures", None),
        ("base_url", None), ("log_format", "auto"), ("log_file", None), ("sandbox", None),
    ):  # fmt: skip
        value = getattr(opts, name)
        if value != default:
            words += ["--" + name.replace("_", "-"), str(value)]
    if dry_run:
        words.append("--dry-run")
    return shlex.join([*words, "--resume"])


def _open_log(path: Path | None) -> TextIO | None:
    if path is None:
        return None
    return open(path, "a", encoding="utf-8", buffering=1)


def _fail(message: str) -> int:
    click.echo(f"bulk-detach: error: {message}", err=True)
    return ExitStatus.NOTHING_SENT


@cli.command()
@click.option("--inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV: phone_number, phone_number_id, inbound_gateway_id, outbound_gateway_id.")
@click.option("--generate", type=click.IntRange(1), help="Instead: make N numbers (+14152000000 on).")
@click.option("--attached-share", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="With --generate: share of numbers attached to gateways.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0 picks a free port.")
@click.option("--latency-ms", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--rate-limit", type=click.FloatRange(0, min_open=True), help="Requests/s before 429 + Retry-After.")
@click.option("--burst", type=click.FloatRange(1), help="Rate-limit bucket size [default: one second's worth].")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of detach requests answered 500/502/503 (not applied).")
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share applied, then the connection dropped without an answer.")
@click.option("--hang-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share that hang --hang-s seconds before being handled.")
@click.option("--hang-s", type=click.FloatRange(0), default=60.0, show_default=True)
@click.option("--reject-after", type=click.IntRange(0), help="Answer 401 to every detach request after N.")
@click.option("--seed", type=int, help="Seed for the fault draws (repeatable runs).")
@click.option("--no-request-log", is_flag=True, help="Keep no per-request log (long benchmarks).")
def sandbox(**kw: Any) -> None:  # fmt: skip
    """Serve a local, stateful stand-in for the detach API.

    Tokens are checked against VIDEOSDK_API_KEY / VIDEOSDK_SECRET_KEY, or the
    sandbox defaults (see README). Prints its base URL; GET /_sandbox/state
    shows every number's gateways (add ?requests=1 for the request log).
    """
    from bulk_detach.sandbox import (
        DEFAULT_API_KEY,
        DEFAULT_SECRET,
        Faults,
        Sandbox,
        generate_inventory,
        load_inventory,
    )

    if bool(kw["inventory"]) == bool(kw["generate"]):
        raise click.UsageError("give exactly one of --inventory and --generate")
    numbers = (
        load_inventory(kw["inventory"]) if kw["inventory"]
        else generate_inventory(kw["generate"], kw["attached_share"], kw["seed"] or 0)
    )  # fmt: skip
    faults = Faults(
        latency_ms=kw["latency_ms"], rate_limit=kw["rate_limit"], burst=kw["burst"],
        error_rate=kw["error_rate"], drop_rate=kw["drop_rate"], hang_rate=kw["hang_rate"],
        hang_s=kw["hang_s"], reject_after=kw["reject_after"], seed=kw["seed"],
    )  # fmt: skip
    server = Sandbox(
        numbers,
        os.environ.get("VIDEOSDK_API_KEY") or DEFAULT_API_KEY,
        os.environ.get("VIDEOSDK_SECRET_KEY") or DEFAULT_SECRET,
        faults,
        keep_log=not kw["no_request_log"],
    )

    async def serve() -> None:
        url = await server.start(kw["host"], kw["port"])
        click.echo(url)
        click.echo(f"sandbox: {len(numbers)} numbers; state at {url}/_sandbox/state; Ctrl-C stops", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.stop()

    try:
        asyncio.run(serve())
    except OSError as e:
        sys.exit(_fail(f"cannot listen on {kw['host']}:{kw['port']}: {e.strerror}"))


def main() -> None:
    try:
        cli(prog_name="bulk-detach")
    except KeyboardInterrupt:  # before the run's own handlers are in place
        click.echo("bulk-detach: interrupted; nothing was sent", err=True)
        sys.exit(ExitStatus.for_signal(signal.SIGINT))
