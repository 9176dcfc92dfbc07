"""Token claims, renewal, and ready-made tokens."""

from __future__ import annotations

import jwt
import pytest

from bulk_detach.auth import SigningTokens, management_claims, static_token, tokens_from_env
from bulk_detach.errors import CredentialsError

SECRET = "s" * 40


def test_signed_token_has_the_management_claims() -> None:
    tokens = SigningTokens("key-1", SECRET, clock=lambda: 1_000_000.0)
    claims = jwt.decode(tokens.token(), SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {
        "apikey": "key-1", "permissions": ["allow_join", "allow_mod"], "version": 2,
        "roles": ["crawler"], "iat": 1_000_000, "exp": 1_003_600,
    }  # fmt: skip


def test_token_is_reused_then_renewed_well_before_expiry() -> None:
    now = [1_000_000.0]
    tokens = SigningTokens("k", SECRET, clock=lambda: now[0])
    first = tokens.token()
    now[0] += 2699  # 15 min before expiry: still the same
    assert tokens.token() == first
    now[0] += 1
    renewed = tokens.token()
    assert renewed != first
    exp = jwt.decode(renewed, SECRET, algorithms=["HS256"], options={"verify_exp": False})["exp"]
    assert exp == now[0] + 3600
    assert SECRET in tokens.secrets() and first in tokens.secrets() and renewed in tokens.secrets()


def test_expired_ready_made_token_is_refused_without_showing_it() -> None:
    old = jwt.encode(management_claims("k", 1000), SECRET, algorithm="HS256")
    with pytest.raises(CredentialsError, match="expired") as e:
        static_token(old, now=10_000)
    assert old not in str(e.value)
    assert static_token(old, now=2000).token() == old


def test_garbage_token_is_refused() -> None:
    with pytest.raises(CredentialsError, match="not a valid JWT"):
        static_token("not-a-jwt")


def test_env_choices() -> None:
    assert isinstance(tokens_from_env({"VIDEOSDK_API_KEY": "k", "VIDEOSDK_SECRET_KEY": SECRET}), SigningTokens)
    with pytest.raises(CredentialsError, match="VIDEOSDK_SECRET_KEY is not set"):
        tokens_from_env({"VIDEOSDK_API_KEY": "k"})
    with pytest.raises(CredentialsError, match="no credentials"):
        tokens_from_env({})


def test_repr_hides_the_secret() -> None:
    tokens = SigningTokens("k", SECRET)
    tokens.token()
    assert SECRET not in repr(tokens) and "eyJ" not in repr(tokens)
