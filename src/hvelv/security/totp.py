"""TOTP (RFC 6238) second factor with replay protection.

A code is accepted for the current 30-second step or one step either side (clock skew),
and only if its step is later than the last accepted one, so a code cannot be replayed.
"""

from __future__ import annotations

import hmac
import time

import pyotp

PERIOD = 30
DIGITS = 6
WINDOW = 1


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).provisioning_uri(
        name=username, issuer_name=issuer
    )


def current_code(secret: str, at: float | None = None) -> str:
    """The code for ``at`` (now by default) — for scripted set-ups and tests."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD).at(
        int(time.time() if at is None else at)
    )


def accept(secret: str, code: str, last_step: int, at: float | None = None) -> int | None:
    """The time step the code belongs to, or None if wrong, stale or replayed."""
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD)
    now_step = int((time.time() if at is None else at) // PERIOD)
    for step in range(now_step - WINDOW, now_step + WINDOW + 1):
        if step > last_step and hmac.compare_digest(totp.at(step * PERIOD), code):
            return step
    return None
