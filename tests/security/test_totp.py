"""TOTP (RFC 6238): a window of one step either side, no replay, strict code format."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.security import totp

# RFC 6238 appendix B: the SHA-1 seed "12345678901234567890", here in base32
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
AT = 1_750_000_015.0  # in the middle of a step
STEP = int(AT // totp.PERIOD)


def code_for(step: int, secret: str = SECRET) -> str:
    return totp.current_code(secret, step * totp.PERIOD)


@pytest.mark.parametrize(
    ("at", "code"),
    [(59, "287082"), (1111111109, "081804"), (1234567890, "005924"), (2000000000, "279037")],
)
def test_codes_match_rfc_6238_vectors(at: int, code: str) -> None:
    # the RFC's 8-digit values, truncated to the 6 digits Hvelv uses
    assert totp.current_code(RFC_SECRET, at) == code
    assert totp.accept(RFC_SECRET, code, 0, at=at) == at // totp.PERIOD


def test_current_code_defaults_to_now() -> None:
    before = pyotp.TOTP(SECRET).now()
    code = totp.current_code(SECRET)
    after = pyotp.TOTP(SECRET).now()
    assert code in {before, after}  # a step boundary may pass between the calls


def test_accepts_the_current_step() -> None:
    assert totp.accept(SECRET, code_for(STEP), 0, at=AT) == STEP


@pytest.mark.parametrize("offset", [-1, 1])
def test_accepts_one_step_either_side(offset: int) -> None:
    assert totp.accept(SECRET, code_for(STEP + offset), 0, at=AT) == STEP + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_rejects_two_or_more_steps_away(offset: int) -> None:
    code = code_for(STEP + offset)
    if code in {code_for(STEP + d) for d in (-1, 0, 1)}:
        pytest.skip("code collides with one in the window")  # 1 in ~300,000
    assert totp.accept(SECRET, code, 0, at=AT) is None


def test_window_edges_follow_the_clock() -> None:
    start = STEP * totp.PERIOD
    assert totp.accept(SECRET, code_for(STEP + 1), 0, at=start) == STEP + 1
    assert totp.accept(SECRET, code_for(STEP + 1), 0, at=start - 0.001) is None
    assert totp.accept(SECRET, code_for(STEP - 1), 0, at=start + totp.PERIOD - 0.001) == STEP - 1
    assert totp.accept(SECRET, code_for(STEP - 1), 0, at=start + totp.PERIOD) is None


def test_rejects_replay_of_the_accepted_step() -> None:
    code = code_for(STEP)
    step = totp.accept(SECRET, code, 0, at=AT)
    assert step == STEP
    assert totp.accept(SECRET, code, step, at=AT) is None
    assert totp.accept(SECRET, code, step, at=AT + 20) is None


def test_rejects_steps_older_than_the_last_accepted() -> None:
    assert totp.accept(SECRET, code_for(STEP - 1), STEP, at=AT) is None
    assert totp.accept(SECRET, code_for(STEP), STEP, at=AT) is None
    assert totp.accept(SECRET, code_for(STEP + 1), STEP, at=AT) == STEP + 1


def test_a_later_step_is_still_accepted_after_an_earlier_one() -> None:
    first = totp.accept(SECRET, code_for(STEP - 1), 0, at=AT)
    assert first == STEP - 1
    assert totp.accept(SECRET, code_for(STEP), first, at=AT) == STEP


def test_a_code_of_another_secret_is_rejected() -> None:
    other = totp.new_secret()
    window = {code_for(STEP + d, other) for d in (-1, 0, 1)}
    code = code_for(STEP)
    if code in window:
        pytest.skip("codes of the two secrets collide")  # about 1 in 300,000
    assert totp.accept(other, code, 0, at=AT) is None


@pytest.mark.parametrize(
    "bad",
    ["", "12345", "1234567", "12345a", " 12345", "12345 ", "12 345", "+12345", "-12345"],
)
def test_rejects_malformed_codes(bad: str) -> None:
    assert totp.accept(SECRET, bad, 0, at=AT) is None


@pytest.mark.parametrize("digits", ["１２３４５６", "١٢٣٤٥٦", "¹²³⁴⁵⁶"])
def test_rejects_non_ascii_digits(digits: str) -> None:
    assert totp.accept(SECRET, digits, 0, at=AT) is None


def test_rejects_a_right_code_with_a_separator() -> None:
    code = code_for(STEP)
    assert totp.accept(SECRET, f"{code[:3]} {code[3:]}", 0, at=AT) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_only_six_ascii_digits_are_ever_accepted(code: str) -> None:
    step = totp.accept(SECRET, code, 0, at=AT)
    if step is not None:
        assert len(code) == 6
        assert code.isascii()
        assert code.isdigit()
        assert code == code_for(step)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=totp.PERIOD * 3, max_value=4_000_000_000))
def test_the_current_code_is_accepted_at_any_time(at: int) -> None:
    secret = SECRET
    assert totp.accept(secret, totp.current_code(secret, at), 0, at=at) is not None


def test_new_secrets_are_base32_and_distinct() -> None:
    secrets = {totp.new_secret() for _ in range(100)}
    assert len(secrets) == 100
    for secret in secrets:
        assert len(secret) == 32
        assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def test_provisioning_uri_format() -> None:
    uri = totp.provisioning_uri(SECRET, "ada", "Hvelv")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert unquote(parts.path) == "/Hvelv:ada"
    query = parse_qs(parts.query)
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["Hvelv"]
    # pyotp omits defaults; any other value would confuse authenticator apps
    assert query.get("digits", ["6"]) == [str(totp.DIGITS)]
    assert query.get("period", ["30"]) == [str(totp.PERIOD)]
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]


def test_provisioning_uri_round_trips_through_an_otpauth_parser() -> None:
    uri = totp.provisioning_uri(SECRET, "ada.lovelace", "Hvelv Test & Co")
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.secret == SECRET
    assert parsed.name == "ada.lovelace"
    assert parsed.issuer == "Hvelv Test & Co"
    assert parsed.at(AT) == code_for(STEP)
    assert " " not in uri
    assert "&Co" not in uri  # the issuer is escaped, not a new query parameter
