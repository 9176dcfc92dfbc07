"""Client classification, narrow: HTTP answers faked with aioresponses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses

from bulk_detach.auth import SigningTokens
from bulk_detach.client import HttpDetacher, error_message
from bulk_detach.models import OutcomeKind
from bulk_detach.policy import RetryPolicy

BASE = "http://api.test"
URL = BASE + "/v2/sip/phone-numbers/detach"
LOOKUP = BASE + "/v2/sip/phone-numbers/%2B14155550123"
NUMBER = "+14155550123"
SECRET = "x" * 40


async def _no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def detacher() -> AsyncIterator[HttpDetacher]:
    async with aiohttp.ClientSession() as session:
        yield HttpDetacher(
            session, SigningTokens("k", SECRET), base_url=BASE,
            policy=RetryPolicy(retries=3), sleep=_no_sleep, rand=lambda: 0.0,
        )  # fmt: skip


async def test_200_is_detached_with_ids_and_request_id(detacher: HttpDetacher) -> None:
    body = {"message": "Detached successfully", "phoneNumber": {"phoneNumberId": "pn_1", "e164": NUMBER},
            "inbound": "gw_in", "outbound": None}  # fmt: skip
    with aioresponses() as m:
        m.post(URL, payload=body, headers={"x-request-id": "req-1"})
        a = await detacher.detach(NUMBER)
        call = m.requests[("POST", aiohttp.client.URL(URL))][0]
    assert (a.kind, a.inbound_gateway_id, a.outbound_gateway_id, a.phone_number_id) == (
        OutcomeKind.DETACHED, "gw_in", "", "pn_1")  # fmt: skip
    assert (a.attempts, a.http_status, a.request_id, a.uncertain) == (1, 200, "req-1", False)
    headers = call.kwargs["headers"]
    assert not headers["Authorization"].startswith("Bearer") and headers["Authorization"].startswith("eyJ")
    assert json.loads(call.kwargs["data"]) == {"phoneNumber": NUMBER}


@pytest.mark.parametrize(("status", "kind"), [(400, OutcomeKind.NOT_ATTACHED), (404, OutcomeKind.NOT_FOUND)])
async def test_final_errors_are_never_retried(detacher: HttpDetacher, status: int, kind: OutcomeKind) -> None:
    with aioresponses() as m:
        m.post(URL, status=status, payload={"message": "nope"})
        a = await detacher.detach(NUMBER)
    assert (a.kind, a.attempts, a.message, a.uncertain) == (kind, 1, "nope", False)


async def test_transient_then_success(detacher: HttpDetacher) -> None:
    with aioresponses() as m:
        m.post(URL, status=503, body="upstream down")
        m.post(URL, status=429, headers={"Retry-After": "1"}, payload={"error": "slow down"})
        m.post(URL, status=409, payload={"msg": "busy"})
        m.post(URL, payload={"message": "ok", "phoneNumber": {}, "inbound": "a", "outbound": "b"})
        a = await detacher.detach(NUMBER)
    assert (a.kind, a.attempts) == (OutcomeKind.DETACHED, 4)


async def test_gives_up_after_retries_with_the_last_reason(detacher: HttpDetacher) -> None:
    with aioresponses() as m:
        for _ in range(4):
            m.post(URL, status=502, payload={"message": "bad gateway"})
        a = await detacher.detach(NUMBER)
    assert a.kind is OutcomeKind.FAILED and a.attempts == 4
    assert a.message == "gave up after 4 attempts: 502 bad gateway"


async def test_400_after_a_lost_answer_is_uncertain_and_looked_up(detacher: HttpDetacher) -> None:
    with aioresponses() as m:
        m.post(URL, exception=aiohttp.ServerDisconnectedError())
        m.post(URL, status=400, payload={"message": "not attached"})
        m.get(LOOKUP, payload={"phoneNumber": {}, "inbound": None, "outbound": None})
        a = await detacher.detach(NUMBER)
    assert a.kind is OutcomeKind.NOT_ATTACHED and a.uncertain and a.attempts == 2
    assert "may have been detached by this run" in a.message
    assert "lookup now: inbound none, outbound none" in a.message


async def test_refused_connection_is_not_uncertain(detacher: HttpDetacher) -> None:
    err = aiohttp.ClientConnectorError(aiohttp.client_reqrep.ConnectionKey(  # type: ignore[call-arg]
        "api.test", 80, False, True, None, None, None), OSError(111, "refused"))  # fmt: skip
    with aioresponses() as m:
        m.post(URL, exception=err)
        m.post(URL, status=400, payload={"message": "not attached"})
        a = await detacher.detach(NUMBER)
    assert a.kind is OutcomeKind.NOT_ATTACHED and not a.uncertain


async def test_timeout_counts_as_maybe_applied(detacher: HttpDetacher) -> None:
    with aioresponses() as m:
        m.post(URL, exception=asyncio.TimeoutError())
        m.post(URL, status=400, payload={"message": "not attached"})
        m.get(LOOKUP, status=500)
        a = await detacher.detach(NUMBER)
    assert a.uncertain and "lookup answered 500" in a.message


async def test_401_stops_the_run_and_is_skipped(detacher: HttpDetacher) -> None:
    with aioresponses() as m:
        m.post(URL, status=401, payload={"message": "invalid token"})
        a = await detacher.detach(NUMBER)
    assert a.kind is OutcomeKind.SKIPPED and a.auth_rejected and a.attempts == 1
    assert detacher._stopping.is_set()
    with aioresponses() as m:  # nothing more goes out
        b = await detacher.detach("+14155550124")
        assert not m.requests
    assert b.kind is OutcomeKind.SKIPPED and b.attempts == 0


async def test_unexpected_status_fails_at_once(detacher: HttpDetacher) -> None:
    def teapot(url: object, **kw: object) -> CallbackResult:
        return CallbackResult(status=418, body="<html>teapot</html>")

    with aioresponses() as m:
        m.post(URL, callback=teapot)
        a = await detacher.detach(NUMBER)
    assert a.kind is OutcomeKind.FAILED and a.attempts == 1 and "418" in a.message


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b'{"message": "a"}', "a"), (b'{"error": "b"}', "b"), (b'{"msg": "c"}', "c"),
        (b'{"error": {"message": "d"}}', "d"), (b"plain\ntext", "plain text"), (b"[1]", "[1]"),
        (b"\xff\xfe", "\ufffd\ufffd"),
    ],
)  # fmt: skip
def test_error_bodies_are_read_leniently(raw: bytes, text: str) -> None:
    assert error_message(raw) == text
