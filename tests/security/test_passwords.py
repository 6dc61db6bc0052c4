"""Password policy, argon2id hashing and one-time passwords.

The session fixture in tests/conftest.py swaps in a cheap argon2id hasher; the checks here
are about behaviour, not cost.
"""

from __future__ import annotations

import string

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.security import passwords
from hvelv.security.passwords import WeakPassword, check_policy, hash_password, verify_password

GOOD = "correct horse battery staple"


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "at least 12 characters"),
        ("abcde123456", "at least 12 characters"),
        ("x" * 11, "at least 12 characters"),
        ("abcde" * 51 + "fg", "at most 256 characters"),
        ("aaaaaaaaaaaa", "at least 5 different characters"),
        ("abcdabcdabcdabcd", "at least 5 different characters"),
    ],
)
def test_policy_refuses(password: str, message: str) -> None:
    with pytest.raises(WeakPassword, match=message):
        check_policy(password)


@pytest.mark.parametrize(
    "password",
    ["abcdeabcdeab", "abcde" * 51 + "a", GOOD, "æøå日本語 pass phrase", "12345aaaaaaa"],
)
def test_policy_accepts(password: str) -> None:
    check_policy(password)


def test_policy_boundaries() -> None:
    assert passwords.MIN_LENGTH == 12
    assert passwords.MAX_LENGTH == 256
    check_policy("abcde" + "e" * 7)
    check_policy("abcde" + "e" * 251)
    with pytest.raises(WeakPassword):
        check_policy("abcde" + "e" * 6)
    with pytest.raises(WeakPassword):
        check_policy("abcde" + "e" * 252)


def test_weak_password_is_a_value_error() -> None:
    assert issubclass(WeakPassword, ValueError)


def test_hash_and_verify() -> None:
    stored = hash_password(GOOD)
    assert stored.startswith("$argon2id$")
    assert GOOD not in stored
    assert verify_password(stored, GOOD)
    assert not verify_password(stored, GOOD + " ")
    assert not verify_password(stored, GOOD.upper())
    assert not verify_password(stored, "")


def test_hashes_are_salted() -> None:
    assert hash_password(GOOD) != hash_password(GOOD)


def test_unknown_user_never_verifies() -> None:
    assert verify_password(None, GOOD) is False
    assert verify_password(None, "") is False


def test_unknown_users_cost_a_real_verification() -> None:
    """Unknown users are checked against a real argon2id hash, so both paths cost the same."""
    assert passwords._DUMMY_HASH.startswith("$argon2id$")
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(passwords._DUMMY_HASH, GOOD)


@pytest.mark.parametrize("garbage", ["", "not a hash", "$argon2id$v=19$m=1,t=1,p=1$xx$yy", "$2b$"])
def test_malformed_stored_hash_is_false_not_an_error(garbage: str) -> None:
    assert verify_password(garbage, GOOD) is False


def test_needs_rehash_when_parameters_change() -> None:
    current = hash_password(GOOD)
    assert not passwords.needs_rehash(current)
    stronger = PasswordHasher(time_cost=4, memory_cost=2048, parallelism=1).hash(GOOD)
    assert passwords.needs_rehash(stronger)
    # an old hash still verifies, so it can be upgraded at the next login
    assert verify_password(stronger, GOOD)


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_only_the_same_password_verifies(first: str, second: str) -> None:
    stored = hash_password(first)
    assert verify_password(stored, first)
    assert verify_password(stored, second) is (first == second)


def test_generated_passwords_are_url_safe_and_pass_the_policy() -> None:
    alphabet = set(string.ascii_letters + string.digits + "-_")
    generated = [passwords.generate_password() for _ in range(500)]
    assert len(set(generated)) == len(generated)
    for password in generated:
        assert len(password) == 20
        assert set(password) <= alphabet
        check_policy(password)
