"""The sandbox, in-process, over real loopback HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest

from bulk_detach.auth import management_claims
from bulk_detach.sandbox import Faults, PhoneNumber, Sandbox

SECRET = "sandbox-test-secret-0123456789abcdef"


def _token(**overrides: object) -> str:
    claims = {**management_claims("key", int(time.time())), **overrides}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    numbers = {
        "+14155550100": PhoneNumber("+14155550100", "pn_1", "gw_in", "gw_out"),
        "+14155550101": PhoneNumber("+14155550101", "pn_2", None, None),
    }
    async with Sandbox(numbers, "key", SECRET) as sb:
        assert sb.url.startswith("http://127.0.0.1:")
        yield sb


async def _detach(sb: Sandbox, number: str, token: str | None = None) -> tuple[int, dict[str, object], str]:
    async with aiohttp.ClientSession() as s, s.post(
        sb.url + "/v2/sip/phone-numbers/detach",
        json={"phoneNumber": number},
        headers={"Authorization": token if token is not None else _token()},
    ) as r:
        return r.status, await r.json(), r.headers.get("x-request-id", "")


async def test_detach_answers_like_the_api(sandbox: Sandbox) -> None:
    status, body, request_id = await _detach(sandbox, "+14155550100")
    assert status == 200 and request_id
    assert body["inbound"] == "gw_in" and body["outbound"] == "gw_out"
    assert set(body["phoneNumber"]) == {  # type: ignore[arg-type]
        "phoneNumberId", "e164", "countryCode", "provider", "origin", "status", "createdAt", "updatedAt", "name"}
    assert sandbox.numbers["+14155550100"].inbound is None
    assert (await _detach(sandbox, "+14155550100"))[0] == 400  # now not attached
    assert (await _detach(sandbox, "+14155550101"))[0] == 400
    assert (await _detach(sandbox, "+19999999999"))[0] == 404
    assert [r.applied for r in sandbox.log] == [True, False, False, False]


@pytest.mark.parametrize(
    ("token", "status", "words"),
    [
        ("", 401, "missing"),
        ("Bearer " + "x", 401, "prefix"),
        ("garbage", 401, "invalid"),
        (jwt.encode(management_claims("key", 1000), SECRET, algorithm="HS256"), 401, "expired"),
        (jwt.encode(management_claims("key", int(time.time())), "other-secret-0123456789abcdefghij",
                    algorithm="HS256"), 401, "invalid"),
        (_token(apikey="other"), 401, "apikey"),
        (_token(version=1), 401, "management"),
        (_token(roles=["rtc"]), 401, "management"),
        (_token(permissions=["allow_join"]), 403, "allow_mod"),
    ],
)  # fmt: skip
async def test_tokens_are_checked(sandbox: Sandbox, token: str, status: int, words: str) -> None:
    got, body, _ = await _detach(sandbox, "+14155550100", token)
    assert got == status and words in str(body["message"])
    assert sandbox.numbers["+14155550100"].inbound == "gw_in"  # nothing applied


async def test_rate_limit_answers_429_with_retry_after(sandbox: Sandbox) -> None:
    sandbox.faults.update({"rate_limit": 2.0, "burst": 2.0})
    sandbox._tokens = 2.0
    statuses = []
    async with aiohttp.ClientSession() as s:
        for _ in range(4):
            async with s.post(sandbox.url + "/v2/sip/phone-numbers/detach", json={"phoneNumber": "+19999999999"},
                              headers={"Authorization": _token()}) as r:  # fmt: skip
                statuses.append((r.status, r.headers.get("Retry-After")))
    assert statuses[:2] == [(404, None), (404, None)]
    assert statuses[2] == (429, "1")


async def test_drop_applies_then_closes_the_connection() -> None:
    numbers = {"+14155550100": PhoneNumber("+14155550100", "pn_1", "gw_in", "gw_out")}
    async with Sandbox(numbers, "key", SECRET, Faults(drop_rate=1.0, seed=1)) as sb:
        with pytest.raises(aiohttp.ClientError):
            await _detach(sb, "+14155550100")
        assert sb.numbers["+14155550100"].inbound is None
        assert [(r.status, r.applied, r.fault) for r in sb.log] == [(None, True, "drop")]


async def test_state_and_lookup_endpoints(sandbox: Sandbox) -> None:
    await _detach(sandbox, "+14155550100")
    async with aiohttp.ClientSession() as s:
        async with s.get(sandbox.url + "/_sandbox/state?requests=1") as r:
            state = await r.json()
        async with s.get(sandbox.url + "/v2/sip/phone-numbers/%2B14155550100",
                         headers={"Authorization": _token()}) as r:  # fmt: skip
            one = await r.json()
    assert state["numbers"]["+14155550100"] == {"phoneNumberId": "pn_1", "inbound": None, "outbound": None}
    assert state["requests"][0]["applied"] is True and state["statuses"] == {"200": 1}
    assert one["inbound"] is None and one["phoneNumber"]["phoneNumberId"] == "pn_1"
