"""A local, stateful stand-in for the VideoSDK detach API.

It keeps each number's gateways, checks the JWT the way the real API needs it,
answers 200 / 400 / 404 / 401 like the real API, and can be told to misbehave:
latency, a rate limit (429 + Retry-After), server errors, connections dropped
after the detach was applied, hangs, and credentials revoked mid-run. Every
request is logged, so tests can check what really happened.

Imports nothing from the rest of bulk_detach: it must stay an honest outsider.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web

DEFAULT_API_KEY = "sandbox-key"
DEFAULT_SECRET = "sandbox-secret-not-for-production"
DETACH_PATH = "/v2/sip/phone-numbers/detach"
LOOKUP_PATH = "/v2/sip/phone-numbers/{e164}"
STATE_PATH = "/_sandbox/state"
FAULTS_PATH = "/_sandbox/faults"


@dataclass(slots=True)
class Faults:
    """How the sandbox misbehaves; shares are per detach request, drawn with ``seed``."""

    latency_ms: float = 0.0
    rate_limit: float | None = None  # requests/s; beyond it 429 + Retry-After
    burst: float | None = None  # token bucket size; default one second of rate_limit
    error_rate: float = 0.0  # share answered 500/502/503, not applied
    drop_rate: float = 0.0  # share applied, then the connection is dropped unanswered
    hang_rate: float = 0.0  # share that wait hang_s before being handled
    hang_s: float = 60.0
    throttle_rate: float = 0.0  # share answered 429 at random, whatever the rate
    retry_after_s: float = 1.0  # Retry-After sent with a random 429
    reject_after: int | None = None  # after this many detach requests, answer 401
    seed: int | None = None

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown fault {key!r}")
            setattr(self, key, value)


@dataclass(slots=True)
class PhoneNumber:
    e164: str
    phone_number_id: str
    inbound: str | None
    outbound: str | None
    country_code: str = "US"
    created_at: str = "2026-05-11T10:00:00.000Z"
    updated_at: str = "2026-05-11T10:00:00.000Z"
    name: str = "Sandbox SIP Setup"

    def record(self) -> dict[str, Any]:
        return {
            "phoneNumberId": self.phone_number_id,
            "e164": self.e164,
            "countryCode": self.country_code,
            "provider": "other",
            "origin": "SIP Configured",
            "status": "ACTIVE",
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "name": self.name,
        }


@dataclass(slots=True)
class LoggedRequest:
    seq: int
    phone_number: str
    status: int | None  # None: connection dropped, no answer
    applied: bool  # this request detached the number
    fault: str = ""
    arrived: float = 0.0  # time.monotonic() when the request came in


def load_inventory(path: str | Path) -> dict[str, PhoneNumber]:
    """CSV with phone_number, phone_number_id, inbound_gateway_id, outbound_gateway_id."""
    numbers: dict[str, PhoneNumber] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for i, row in enumerate(csv.DictReader(f)):
            e164 = row["phone_number"].strip()
            numbers[e164] = PhoneNumber(
                e164,
                (row.get("phone_number_id") or "").strip() or f"pn_{i:08d}",
                (row.get("inbound_gateway_id") or "").strip() or None,
                (row.get("outbound_gateway_id") or "").strip() or None,
            )
    return numbers


def generated_number(i: int) -> str:
    """The i-th number of a generated inventory (valid US numbers, 415-200-0000 on)."""
    return f"+1415{2_000_000 + i:07d}"


def generate_inventory(n: int, attached_share: float = 1.0, seed: int = 0) -> dict[str, PhoneNumber]:
    rng = random.Random(seed)
    numbers = {}
    for i in range(n):
        e164 = generated_number(i)
        attached = rng.random() < attached_share
        numbers[e164] = PhoneNumber(
            e164,
            f"pn_{i:08d}",
            f"gw_in_{i % 50:03d}" if attached else None,
            f"gw_out_{i % 50:03d}" if attached else None,
        )
    return numbers


@dataclass
class Sandbox:
    """The server's state and its aiohttp application."""

    numbers: dict[str, PhoneNumber]
    api_key: str = DEFAULT_API_KEY
    secret: str = field(default=DEFAULT_SECRET, repr=False)
    faults: Faults = field(default_factory=Faults)
    keep_log: bool = True
    log: list[LoggedRequest] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    detach_requests: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.faults.seed)
        self._tokens = 0.0
        self._bucket_at = time.monotonic()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- the application --------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(DETACH_PATH, self._detach)
        app.router.add_get(LOOKUP_PATH, self._lookup)
        app.router.add_get(STATE_PATH, self._state)
        app.router.add_post(FAULTS_PATH, self._set_faults)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        bound = server.sockets[0].getsockname()  # type: ignore[attr-defined]
        self.url = f"http://{host}:{bound[1]}"
        self._tokens = self._burst()
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- inspection -----------------------------------------------------------
    def snapshot(self, with_log: bool = False) -> dict[str, Any]:
        state: dict[str, Any] = {
            "numbers": {
                n.e164: {"phoneNumberId": n.phone_number_id, "inbound": n.inbound, "outbound": n.outbound}
                for n in self.numbers.values()
            },
            "detach_requests": self.detach_requests,
            "statuses": dict(self.statuses),
            "applied": sum(1 for r in self.log if r.applied),
        }
        if with_log:
            state["requests"] = [asdict(r) for r in self.log]
        return state

    # -- handlers ---------------------------------------------------------------
    def _error(self, status: int, message: str, **headers: str) -> web.Response:
        return web.json_response(
            {"message": message}, status=status, headers={"x-request-id": _request_id(), **headers}
        )

    def _auth_problem(self, request: web.Request) -> tuple[int, str] | None:
        token = request.headers.get("Authorization", "")
        if not token:
            return 401, "Authorization header missing"
        if token.lower().startswith(("bearer ", "basic ")):
            return 401, "token must be sent without a prefix"
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], options={"require": ["exp"]})
        except jwt.ExpiredSignatureError:
            return 401, "token expired"
        except jwt.PyJWTError:
            return 401, "invalid token"
        if claims.get("apikey") != self.api_key:
            return 401, "unknown apikey"
        if claims.get("version") != 2 or "crawler" not in (claims.get("roles") or []):
            return 401, "token is not a management token (version 2, role crawler)"
        if "allow_mod" not in (claims.get("permissions") or []):
            return 403, "permission allow_mod required"
        return None

    def _burst(self) -> float:
        f = self.faults
        return f.burst if f.burst is not None else max(1.0, f.rate_limit or 1.0)

    def _take_token(self) -> float:
        """0 if a request may pass, else seconds until one may."""
        rate = self.faults.rate_limit
        if not rate:
            return 0.0
        now = time.monotonic()
        self._tokens = min(self._burst(), self._tokens + (now - self._bucket_at) * rate)
        self._bucket_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate

    def _record(
        self, seq: int, arrived: float, e164: str, status: int | None, applied: bool, fault: str = ""
    ) -> None:
        """Log one detach request; ``seq`` is its order of arrival."""
        self.statuses[str(status) if status is not None else "dropped"] += 1
        if self.keep_log:
            self.log.append(LoggedRequest(seq, e164, status, applied, fault, arrived))

    async def _detach(self, request: web.Request) -> web.StreamResponse:
        self.detach_requests += 1
        seq = self.detach_requests
        record = functools.partial(self._record, seq, time.monotonic())
        f = self.faults
        if f.latency_ms:
            await asyncio.sleep(f.latency_ms / 1000)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        except ConnectionError:  # the client went away mid-request
            return web.Response(status=499)
        e164 = body.get("phoneNumber") if isinstance(body, dict) else None
        e164 = e164 if isinstance(e164, str) else ""
        problem = self._auth_problem(request)
        if problem is None and f.reject_after is not None and seq > f.reject_after:
            problem = (401, "API key revoked")
        if problem is not None:
            record(e164, problem[0], False, "auth")
            return self._error(*problem)
        wait = self._take_token()
        if wait:
            record(e164, 429, False, "rate")
            return self._error(429, "Too many requests", **{"Retry-After": str(max(1, math.ceil(wait)))})
        draw = self._rng.random()
        if draw < f.throttle_rate:
            record(e164, 429, False, "throttle")
            return self._error(429, "Too many requests", **{"Retry-After": f"{f.retry_after_s:g}"})
        draw -= f.throttle_rate
        if draw < f.error_rate:
            status = self._rng.choice((500, 502, 503))
            record(e164, status, False, "error")
            return self._error(status, "Internal error, please retry")
        draw -= f.error_rate
        if draw < f.drop_rate:
            applied = self._apply(e164)[0] == 200
            record(e164, None, applied, "drop")
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # nothing more to write: the peer is gone
        draw -= f.drop_rate
        fault = ""
        if draw < f.hang_rate:
            fault = "hang"
            await asyncio.sleep(f.hang_s)
        if not e164:
            record(e164, 400, False, fault)
            return self._error(400, "phoneNumber is required")
        status, payload = self._apply(e164)
        record(e164, status, status == 200, fault)
        if status != 200:
            return self._error(status, payload["message"])
        return web.json_response(payload, headers={"x-request-id": _request_id()})

    def _apply(self, e164: str) -> tuple[int, dict[str, Any]]:
        number = self.numbers.get(e164)
        if number is None:
            return 404, {"message": "Phone number not found"}
        if number.inbound is None and number.outbound is None:
            return 400, {"message": "Phone number is not attached to any gateway"}
        inbound, outbound = number.inbound, number.outbound
        number.inbound = number.outbound = None
        number.updated_at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return 200, {
            "message": "Detached successfully",
            "phoneNumber": number.record(),
            "inbound": inbound,
            "outbound": outbound,
        }

    async def _lookup(self, request: web.Request) -> web.Response:
        problem = self._auth_problem(request)
        if problem is not None:
            return self._error(*problem)
        number = self.numbers.get(request.match_info["e164"])
        if number is None:
            return self._error(404, "Phone number not found")
        return web.json_response(
            {"phoneNumber": number.record(), "inbound": number.inbound, "outbound": number.outbound},
            headers={"x-request-id": _request_id()},
        )

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot(with_log=request.query.get("requests") == "1"))

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(await request.json())
        except (ValueError, TypeError) as e:
            return web.json_response({"message": str(e)}, status=400)
        return web.json_response(asdict(self.faults))


def _request_id() -> str:
    return uuid.uuid4().hex


class SandboxThread:
    """A sandbox serving on 127.0.0.1 from a thread of its own, for sync callers.

    Tests use it to run the real CLI as a subprocess against a real server
    while reading the server's state directly.
    """

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sandbox", daemon=True)

    def __enter__(self) -> Sandbox:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sandbox.start(), self._loop).result(timeout=10)
        return self.sandbox

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sandbox.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the sandbox's loop (for consistent reads)."""

        async def _run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(_run(), self._loop).result(timeout=10)


def write_inventory(numbers: Iterable[PhoneNumber], path: str | Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["phone_number", "phone_number_id", "inbound_gateway_id", "outbound_gateway_id"])
        for n in numbers:
            w.writerow([n.e164, n.phone_number_id, n.inbound or "", n.outbound or ""])
