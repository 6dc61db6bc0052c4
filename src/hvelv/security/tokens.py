"""Access tokens (EdDSA-signed JWTs, at most one hour), refresh tokens and API key secrets.

Access tokens carry the login session id; the session is checked on every request, so
logout and revocation take effect at once. Refresh tokens and API key secrets are random
and stored only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ISSUER = "hvelv"
AUDIENCE = "hvelv-api"
REFRESH_PREFIX = "hvr_"
API_KEY_PREFIX = "hvk_"
UPLOAD_LINK_PREFIX = "hvl_"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or of the wrong kind."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    session_id: str
    scope_project: str | None
    expires_at: int


class TokenSigner:
    def __init__(self, key: Ed25519PrivateKey, key_id: str) -> None:
        self._key = key
        self._public = key.public_key()
        self.key_id = key_id
        self._verify_cached = lru_cache(maxsize=8192)(self._verify_signature)

    def issue_access(
        self, user_id: int, session_id: str, scope_project: str | None, ttl: int
    ) -> tuple[str, int]:
        now = int(time.time())
        exp = now + ttl
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(user_id),
            "sid": session_id,
            "iat": now,
            "exp": exp,
            "jti": uuid.uuid4().hex,
            "typ": "access",
        }
        if scope_project is not None:
            claims["prj"] = scope_project
        token = jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.key_id})
        return token, exp

    def _verify_signature(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"verify_exp": False, "require": ["exp", "sub", "sid", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        if claims.get("typ") != "access":
            raise InvalidToken("not an access token")
        try:
            return AccessClaims(
                user_id=int(claims["sub"]),
                session_id=str(claims["sid"]),
                scope_project=claims.get("prj"),
                expires_at=int(claims["exp"]),
            )
        except (TypeError, ValueError):
            raise InvalidToken("malformed claims") from None

    def verify_access(self, token: str, now: float | None = None) -> AccessClaims:
        """Verify signature (cached per token string) and expiry (checked every time)."""
        if len(token) > 4096:
            raise InvalidToken("token too long")
        claims = self._verify_cached(token)
        if claims.expires_at <= (time.time() if now is None else now):
            raise InvalidToken("token expired")
        return claims


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_session_id() -> str:
    return secrets.token_hex(16)


def new_refresh_token(session_id: str) -> str:
    return f"{REFRESH_PREFIX}{session_id}.{secrets.token_urlsafe(32)}"


def parse_refresh_token(token: str) -> str:
    """The session id inside a refresh token."""
    if not token.startswith(REFRESH_PREFIX) or "." not in token or len(token) > 200:
        raise InvalidToken("not a refresh token")
    session_id = token[len(REFRESH_PREFIX) :].split(".", 1)[0]
    if len(session_id) != 32:
        raise InvalidToken("not a refresh token")
    return session_id


def new_api_key(prefix: str = API_KEY_PREFIX) -> tuple[str, str, bytes]:
    """(key id, full secret shown once, stored digest of the secret).

    The same shape serves API keys (``hvk_``) and upload links (``hvl_``).
    """
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{prefix}{key_id}_{secret}", digest(secret)


def parse_api_key(token: str, prefix: str = API_KEY_PREFIX) -> tuple[str, str]:
    """(key id, secret) of an API key (or, with its prefix, an upload link) string."""
    if not token.startswith(prefix) or len(token) > 200:
        raise InvalidToken("not an API key")
    body = token[len(prefix) :]
    key_id, sep, secret = body.partition("_")
    if not sep or len(key_id) != 12 or not secret:
        raise InvalidToken("not an API key")
    return key_id, secret


def same_digest(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
