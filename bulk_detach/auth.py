"""API tokens: signed here from key + secret, or a ready-made one checked for expiry.

The only module that imports pyjwt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import jwt

from bulk_detach.errors import CredentialsError

ENV_API_KEY = "VIDEOSDK_API_KEY"
ENV_SECRET = "VIDEOSDK_SECRET_KEY"
ENV_TOKEN = "VIDEOSDK_TOKEN"

# A signed token lives an hour and is replaced once less than 15 minutes are
# left, so even a request stuck in retries for many minutes carries a token
# that is still valid when it reaches the server.
TOKEN_LIFETIME_S = 3600
RENEW_MARGIN_S = 900


class TokenSource(Protocol):
    def token(self) -> str: ...

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never be shown: fed to log redaction."""
        ...


def management_claims(api_key: str, now: int, lifetime: int = TOKEN_LIFETIME_S) -> dict[str, object]:
    """The claims VideoSDK's own server SDKs put in management tokens."""
    return {
        "apikey": api_key,
        "permissions": ["allow_join", "allow_mod"],
        "version": 2,
        "roles": ["crawler"],
        "iat": now,
        "exp": now + lifetime,
    }


@dataclass(slots=True)
class SigningTokens:
    """Signs HS256 tokens with the account secret and renews them before expiry."""

    api_key: str
    _secret: str = field(repr=False)
    clock: Callable[[], float] = time.time
    lifetime: int = TOKEN_LIFETIME_S
    renew_margin: int = RENEW_MARGIN_S
    _token: str = field(default="", repr=False)
    _expires: float = 0.0
    _issued: list[str] = field(default_factory=list, repr=False)

    def token(self) -> str:
        now = self.clock()
        if now >= self._expires - self.renew_margin:
            issued_at = int(now)
            self._token = jwt.encode(
                management_claims(self.api_key, issued_at, self.lifetime),
                self._secret,
                algorithm="HS256",
            )
            self._expires = issued_at + self.lifetime
            # Old tokens stay secret after renewal; keep only a few to redact.
            self._issued = [*self._issued[-3:], self._token]
        return self._token

    def secrets(self) -> tuple[str, ...]:
        return (self._secret, *self._issued)


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A ready-made JWT from the environment, used as is."""

    _token: str = field(repr=False)
    expires_at: float | None = None

    def token(self) -> str:
        return self._token

    def secrets(self) -> tuple[str, ...]:
        return (self._token,)


def static_token(token: str, now: float | None = None) -> StaticToken:
    """Check a ready-made token's expiry without its secret (we do not have it)."""
    now = time.time() if now is None else now
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise CredentialsError(f"{ENV_TOKEN} is not a valid JWT") from None
    exp = claims.get("exp")
    if exp is not None:
        if not isinstance(exp, (int, float)):
            raise CredentialsError(f"{ENV_TOKEN} has a malformed 'exp' claim")
        if exp <= now:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
            raise CredentialsError(f"{ENV_TOKEN} expired at {when}; make a new one")
    return StaticToken(token, float(exp) if exp is not None else None)


def tokens_from_env(env: Mapping[str, str] | None = None) -> TokenSource:
    """Key + secret win over a ready-made token: they can be renewed."""
    env = os.environ if env is None else env
    key, secret, token = (env.get(n, "").strip() for n in (ENV_API_KEY, ENV_SECRET, ENV_TOKEN))
    if key and secret:
        return SigningTokens(key, secret)
    if token:
        return static_token(token)
    if key or secret:
        missing = ENV_SECRET if key else ENV_API_KEY
        raise CredentialsError(f"{missing} is not set (both {ENV_API_KEY} and {ENV_SECRET} are needed)")
    raise CredentialsError(
        f"no credentials: set {ENV_API_KEY} and {ENV_SECRET}, or {ENV_TOKEN} "
        "(or rehearse with --sandbox, or use --dry-run)"
    )
