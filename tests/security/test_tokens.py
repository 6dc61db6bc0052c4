"""Access tokens (EdDSA JWTs), refresh tokens and API key secrets."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.security import tokens
from hvelv.security.tokens import AccessClaims, InvalidToken, TokenSigner

KEY = Ed25519PrivateKey.generate()
SID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(KEY, "kid-1")


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": tokens.ISSUER,
        "aud": tokens.AUDIENCE,
        "sub": "7",
        "sid": SID,
        "iat": now,
        "exp": now + 600,
        "typ": "access",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def forge(payload: dict[str, Any], key: Ed25519PrivateKey = KEY) -> str:
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": "kid-1"})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---------------------------------------------------------------------------------------
# access tokens


def test_issue_and_verify(signer: TokenSigner) -> None:
    before = int(time.time())
    token, exp = signer.issue_access(7, SID, None, ttl=900)
    assert before + 900 <= exp <= int(time.time()) + 900
    assert signer.verify_access(token) == AccessClaims(7, SID, None, exp)


def test_scope_project_is_carried(signer: TokenSigner) -> None:
    token, _ = signer.issue_access(7, SID, "p1001", ttl=900)
    assert signer.verify_access(token).scope_project == "p1001"
    assert jwt.decode(token, options={"verify_signature": False})["prj"] == "p1001"


def test_token_header_and_claims(signer: TokenSigner) -> None:
    token, exp = signer.issue_access(7, SID, None, ttl=60)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == "kid-1"
    body = jwt.decode(token, options={"verify_signature": False})
    assert body["iss"] == "hvelv"
    assert body["aud"] == "hvelv-api"
    assert body["sub"] == "7"
    assert body["typ"] == "access"
    assert body["exp"] == exp
    assert "prj" not in body


def test_tokens_are_unique(signer: TokenSigner) -> None:
    issued = {signer.issue_access(7, SID, None, ttl=60)[0] for _ in range(50)}
    assert len(issued) == 50


def test_expiry_is_checked_even_when_the_signature_is_cached(signer: TokenSigner) -> None:
    token, exp = signer.issue_access(7, SID, None, ttl=60)
    assert signer.verify_access(token, now=exp - 1).expires_at == exp  # now cached
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify_access(token, now=exp)
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify_access(token, now=exp + 3600)
    assert signer.verify_access(token, now=exp - 1).user_id == 7


def test_an_expired_token_is_refused_on_first_sight(signer: TokenSigner) -> None:
    token = forge(claims(iat=1_000_000, exp=1_000_060))
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify_access(token)


def test_tampered_signature(signer: TokenSigner) -> None:
    token, _ = signer.issue_access(7, SID, None, ttl=60)
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 0x01
    with pytest.raises(InvalidToken):
        signer.verify_access(f"{head}.{body}.{b64(bytes(raw))}")


def test_tampered_payload(signer: TokenSigner) -> None:
    token, _ = signer.issue_access(7, SID, None, ttl=60)
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["sub"] = "1"  # become someone else
    with pytest.raises(InvalidToken):
        signer.verify_access(f"{head}.{b64(json.dumps(payload).encode())}.{sig}")


def test_cached_verdict_is_per_token_string(signer: TokenSigner) -> None:
    """A valid token verified once does not make a tampered copy valid."""
    token, _ = signer.issue_access(7, SID, None, ttl=60)
    signer.verify_access(token)
    head, body, sig = token.split(".")
    with pytest.raises(InvalidToken):
        signer.verify_access(f"{head}.{body}.{sig[:-4]}AAAA")


def test_token_signed_by_another_key(signer: TokenSigner) -> None:
    other = TokenSigner(Ed25519PrivateKey.generate(), "kid-1")
    token, _ = other.issue_access(7, SID, None, ttl=60)
    with pytest.raises(InvalidToken, match="Signature"):
        signer.verify_access(token)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aud": "other-api"}, "(?i)audience"),
        ({"aud": None}, "aud"),
        ({"iss": "someone-else"}, "(?i)issuer"),
        ({"iss": None}, "iss"),
        ({"typ": "refresh"}, "not an access token"),
        ({"typ": None}, "not an access token"),
        ({"sid": None}, "sid"),
        ({"sub": None}, "sub"),
        ({"exp": None}, "exp"),
        ({"iat": None}, "iat"),
        ({"sub": "seven"}, "malformed claims"),
    ],
)
def test_refuses_wrong_or_missing_claims(
    signer: TokenSigner, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidToken, match=message):
        signer.verify_access(forge(claims(**changes)))


def test_refuses_other_algorithms(signer: TokenSigner) -> None:
    unsigned = jwt.encode(claims(), key=None, algorithm="none")
    with pytest.raises(InvalidToken):
        signer.verify_access(unsigned)
    hmac_signed = jwt.encode(claims(), "a-shared-secret-of-32-bytes-long!", algorithm="HS256")
    with pytest.raises(InvalidToken):
        signer.verify_access(hmac_signed)


@pytest.mark.parametrize("garbage", ["", "nonsense", "a.b.c", "a.b", "....", "hvk_x"])
def test_refuses_garbage(signer: TokenSigner, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        signer.verify_access(garbage)


def test_refuses_too_long_tokens_even_when_validly_signed(signer: TokenSigner) -> None:
    big = forge(claims(pad="x" * 4096))
    assert len(big) > 4096
    with pytest.raises(InvalidToken, match="too long"):
        signer.verify_access(big)
    fits = forge(claims(pad="x" * 2800))
    assert len(fits) <= 4096
    assert signer.verify_access(fits).user_id == 7


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_strings_are_refused_with_invalid_token(text: str) -> None:
    with pytest.raises(InvalidToken):
        TokenSigner(KEY, "kid-1").verify_access(text)


# ---------------------------------------------------------------------------------------
# refresh tokens


def test_refresh_token_round_trip() -> None:
    sid = tokens.new_session_id()
    assert len(sid) == 32
    int(sid, 16)
    token = tokens.new_refresh_token(sid)
    assert token.startswith("hvr_")
    assert tokens.parse_refresh_token(token) == sid
    assert tokens.new_refresh_token(sid) != token


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32))
def test_refresh_token_carries_any_session_id(sid: str) -> None:
    assert tokens.parse_refresh_token(tokens.new_refresh_token(sid)) == sid


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "hvr_",
        f"hvr_{SID}",  # no secret part
        f"hvk_{SID}.secret",  # an API key prefix
        f"{SID}.secret",
        f"hvr_{SID[:-1]}.secret",  # session id too short
        f"hvr_{SID}0.secret",  # session id too long
        f"hvr_{SID}." + "x" * 200,  # too long overall
    ],
)
def test_refresh_token_refuses(bad: str) -> None:
    with pytest.raises(InvalidToken, match="not a refresh token"):
        tokens.parse_refresh_token(bad)


# ---------------------------------------------------------------------------------------
# API keys


def test_api_key_format_and_parse() -> None:
    seen = set()
    for _ in range(200):
        key_id, full, stored = tokens.new_api_key()
        assert len(key_id) == 12
        int(key_id, 16)
        assert full.startswith(f"hvk_{key_id}_")
        parsed_id, secret = tokens.parse_api_key(full)
        assert parsed_id == key_id
        assert full == f"hvk_{key_id}_{secret}"
        assert len(secret) >= 43
        assert tokens.same_digest(stored, tokens.digest(secret))
        assert secret not in stored.hex()
        seen.add(full)
    assert len(seen) == 200


def test_digest_is_sha256_and_comparison_is_exact() -> None:
    assert tokens.digest("abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert tokens.same_digest(tokens.digest("abc"), tokens.digest("abc"))
    assert not tokens.same_digest(tokens.digest("abc"), tokens.digest("abd"))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "hvk_",
        "hvk_0123456789ab",  # no secret
        "hvk_0123456789ab_",  # empty secret
        "hvk_0123456789a_secret",  # key id too short
        "hvk_0123456789abc_secret",  # key id too long
        "hvr_0123456789ab_secret",  # refresh prefix
        "0123456789ab_secret",
        "hvk_0123456789ab_" + "s" * 200,  # too long
    ],
)
def test_api_key_parse_refuses(bad: str) -> None:
    with pytest.raises(InvalidToken, match="not an API key"):
        tokens.parse_api_key(bad)


def test_api_key_secret_may_contain_underscores() -> None:
    assert tokens.parse_api_key("hvk_0123456789ab_a_b_c") == ("0123456789ab", "a_b_c")
