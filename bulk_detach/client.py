"""One number -> one Answer, over HTTP. The only aiohttp client import.

Every failure of one number becomes a value here; nothing about a single
number is raised to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
from tenacity import AsyncRetrying, retry_if_result

from bulk_detach import __version__
from bulk_detach.auth import TokenSource
from bulk_detach.models import Answer, OutcomeKind
from bulk_detach.policy import (
    FINAL_STATUSES,
    Failure,
    RetryPolicy,
    Verdict,
    may_have_applied,
    parse_retry_after,
    verdict,
)
from bulk_detach.ratecontrol import Throttle

DEFAULT_BASE_URL = "https://api.videosdk.live"
DETACH_PATH = "/v2/sip/phone-numbers/detach"
LOOKUP_PATH = "/v2/sip/phone-numbers/"
_MESSAGE_LIMIT = 300


class Detacher(Protocol):
    """What the pipeline needs from a client: one number in, one answer out.

    ``in_doubt``: an earlier run may already have sent this number.
    ``on_sent``: called once, just before the first request goes out.
    """

    async def detach(
        self, e164: str, *, in_doubt: bool = False, on_sent: Callable[[], None] | None = None
    ) -> Answer: ...


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One HTTP exchange, or the lack of one."""

    status: int | None = None
    failure: Failure | None = None
    message: str = ""
    request_id: str = ""
    retry_after: float | None = None
    body: Any = None
    stopped: bool = False  # not sent: the run is stopping

    @property
    def retryable(self) -> bool:
        return not self.stopped and verdict(self.status) is Verdict.RETRY

    def describe(self) -> str:
        if self.status is None:
            return f"{self.failure.value if self.failure else 'no answer'}: {self.message}".rstrip(": ")
        return f"{self.status} {self.message}".rstrip()


@dataclass(slots=True)
class _Tally:
    attempts: int = 0
    maybe_applied: bool = False
    on_sent: Callable[[], None] | None = None


def _clean(text: str) -> str:
    return " ".join(text.split())[:_MESSAGE_LIMIT]


def error_message(raw: bytes) -> str:
    """The server's words from an error body, JSON or not."""
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        return _clean(text)
    if isinstance(body, dict):
        for key in ("message", "error", "msg"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return _clean(value)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return _clean(value["message"])
    return _clean(text)


def _gateway_id(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # lenient: a full gateway object instead of its id
        inner = value.get("id") or value.get("gatewayId")
        return inner if isinstance(inner, str) else ""
    return ""


def open_session(concurrency: int, timeout: float) -> aiohttp.ClientSession:
    """One session per run: its pool holds as many connections as requests in flight."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": f"bulk-detach/{__version__}", "Content-Type": "application/json"},
    )


class HttpDetacher:
    """Detaches one number, retrying what is safe to retry."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenSource,
        *,
        base_url: str = DEFAULT_BASE_URL,
        policy: RetryPolicy | None = None,
        throttle: Throttle | None = None,
        stopping: asyncio.Event | None = None,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._session = session
        self._tokens = tokens
        base = base_url.rstrip("/")
        self._detach_url = base + DETACH_PATH
        self._lookup_url = base + LOOKUP_PATH
        self._policy = policy or RetryPolicy()
        self._throttle = throttle
        self._stopping = stopping or asyncio.Event()
        self._rand = rand
        self._sleep = sleep or self._sleep_unless_stopping

    async def detach(
        self, e164: str, *, in_doubt: bool = False, on_sent: Callable[[], None] | None = None
    ) -> Answer:
        tally = _Tally(maybe_applied=in_doubt, on_sent=on_sent)
        last = await self._attempt(e164, tally)
        if last.retryable:
            last = await self._retry(e164, tally, last)
        return await self._answer(e164, last, tally)

    async def _retry(self, e164: str, tally: _Tally, first: _Attempt) -> _Attempt:
        """Tenacity drives the retries: stop, backoff, Retry-After.

        Most numbers are answered at the first attempt, and a retry loop per
        number costs more CPU than its request (measured in benchmarks/), so
        tenacity starts only once a retry is due, from the first answer.
        """
        answers = iter([first])

        async def next_attempt() -> _Attempt:
            return next(answers, None) or await self._attempt(e164, tally)

        retrying = AsyncRetrying(
            stop=lambda rs: self._policy.is_exhausted(rs.attempt_number),
            wait=lambda rs: self._policy.backoff(
                rs.attempt_number, rs.outcome.result().retry_after if rs.outcome else None, self._rand
            ),
            retry=retry_if_result(lambda a: a.retryable),
            sleep=self._sleep,
            retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else _Attempt(),
            reraise=True,
        )
        last: _Attempt = await retrying(next_attempt)
        return last

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        # A stop request cuts a backoff short: the next attempt then sees it.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _attempt(self, e164: str, tally: _Tally) -> _Attempt:
        if self._stopping.is_set():
            return _Attempt(stopped=True)
        if self._throttle is not None:
            await self._throttle.acquire()
            if self._stopping.is_set():
                return _Attempt(stopped=True)
        if tally.attempts == 0 and tally.on_sent is not None:
            tally.on_sent()
        tally.attempts += 1
        headers = {"Authorization": self._tokens.token()}
        payload = json.dumps({"phoneNumber": e164}).encode()
        try:
            async with self._session.post(self._detach_url, data=payload, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
                request_id = resp.headers.get("x-request-id", "")
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
        except asyncio.TimeoutError:
            attempt = _Attempt(failure=Failure.TIMEOUT, message="no answer in time")
        except aiohttp.ClientConnectorError as e:
            attempt = _Attempt(failure=Failure.NOT_SENT, message=_clean(str(e.os_error or e)))
        except (aiohttp.ClientError, OSError) as e:
            attempt = _Attempt(failure=Failure.DISCONNECTED, message=type(e).__name__)
        else:
            body: Any = None
            if status == 200:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                message = _clean(body.get("message", "")) if isinstance(body, dict) else ""
            else:
                message = error_message(raw) or (resp.reason or "")
            attempt = _Attempt(status, None, message, request_id, retry_after, body)
        if may_have_applied(attempt.status, attempt.failure):
            tally.maybe_applied = True
        if verdict(attempt.status) is Verdict.AUTH:
            # Before any other worker can take another turn: after the first
            # 401/403 no new request goes out.
            self._stopping.set()
        if self._throttle is not None:
            if attempt.status == 429:
                self._throttle.on_throttled(attempt.retry_after)
            elif attempt.status is not None:
                self._throttle.on_accepted()
        return attempt

    async def _answer(self, e164: str, last: _Attempt, tally: _Tally) -> Answer:
        common: dict[str, Any] = {
            "attempts": tally.attempts,
            "http_status": last.status,
            "request_id": last.request_id,
        }
        if last.stopped:
            why = "run stopped before it was sent"
            if tally.attempts:
                why = f"run stopped while retrying; last answer: {last.describe()}"
            return Answer(OutcomeKind.SKIPPED, message=why, **common)
        v = verdict(last.status)
        if v is Verdict.FINAL and last.status is not None:
            kind = FINAL_STATUSES[last.status]
            if kind is OutcomeKind.DETACHED:
                return self._detached(last, common)
            if kind is OutcomeKind.NOT_ATTACHED and tally.maybe_applied:
                now = await self._lookup(e164)
                message = (
                    "may have been detached by this run (an earlier attempt may have reached "
                    f"the server before this one); gateway ids unknown; {now}"
                )
                return Answer(kind, uncertain=True, message=message, **common)
            return Answer(kind, message=last.message, **common)
        if v is Verdict.AUTH:
            return Answer(
                OutcomeKind.SKIPPED,
                message=f"credentials rejected ({last.status}): {last.message}".rstrip(": "),
                auth_rejected=True,
                **common,
            )
        if v is Verdict.UNEXPECTED:
            return Answer(OutcomeKind.FAILED, message=f"unexpected answer: {last.describe()}", **common)
        return Answer(
            OutcomeKind.FAILED,
            message=f"gave up after {tally.attempts} attempts: {last.describe()}",
            **common,
        )

    @staticmethod
    def _detached(last: _Attempt, common: dict[str, Any]) -> Answer:
        body = last.body if isinstance(last.body, dict) else {}
        number = body.get("phoneNumber")
        number_id = number.get("phoneNumberId") if isinstance(number, dict) else None
        return Answer(
            OutcomeKind.DETACHED,
            inbound_gateway_id=_gateway_id(body.get("inbound")),
            outbound_gateway_id=_gateway_id(body.get("outbound")),
            phone_number_id=number_id if isinstance(number_id, str) else "",
            message=last.message or ("" if body else "detached; the answer's body was unreadable"),
            **common,
        )

    async def _lookup(self, e164: str) -> str:
        """What the provider says of the number now, in words for the results file."""
        if self._throttle is not None:
            await self._throttle.acquire()
        url = self._lookup_url + quote(e164, safe="")
        try:
            async with self._session.get(url, headers={"Authorization": self._tokens.token()}) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    return f"lookup answered {resp.status} {error_message(raw)}".rstrip()
                body = json.loads(raw)
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            return f"lookup failed: {type(e).__name__}"
        if not isinstance(body, dict):
            return "lookup answer unreadable"
        inbound = _gateway_id(body.get("inbound")) or "none"
        outbound = _gateway_id(body.get("outbound")) or "none"
        return f"lookup now: inbound {inbound}, outbound {outbound}"


