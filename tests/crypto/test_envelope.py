"""Envelope encryption: sealed blobs, derived keys, wrapped data keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.crypto import envelope
from hvelv.crypto.envelope import DecryptionError, open_sealed, seal

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
AAD = b"hvelv:test:record-1"

bounded = settings(max_examples=150, deadline=None)


def test_new_keys_are_32_random_bytes() -> None:
    keys = {envelope.new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == envelope.KEY_BYTES == 32 for k in keys)


@bounded
@given(st.binary(max_size=2048), st.binary(max_size=64))
def test_seal_open_round_trip(plaintext: bytes, aad: bytes) -> None:
    blob = seal(KEY, plaintext, aad)
    assert blob[0] == envelope.SEAL_VERSION
    assert len(blob) == 1 + envelope.NONCE_BYTES + len(plaintext) + 16
    assert open_sealed(KEY, blob, aad) == plaintext


def test_sealing_is_randomised() -> None:
    blobs = {seal(KEY, b"same plaintext", AAD) for _ in range(50)}
    assert len(blobs) == 50
    assert len({b[1 : 1 + envelope.NONCE_BYTES] for b in blobs}) == 50
    assert all(b"same plaintext" not in b for b in blobs)


@bounded
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_wrong_aad_is_refused(aad: bytes, other: bytes) -> None:
    blob = seal(KEY, b"national id 15108695088", aad)
    if other != aad:
        with pytest.raises(DecryptionError, match="authentication failed"):
            open_sealed(KEY, blob, other)


def test_wrong_key_is_refused() -> None:
    blob = seal(KEY, b"secret", AAD)
    with pytest.raises(DecryptionError):
        open_sealed(OTHER_KEY, blob, AAD)


@bounded
@given(st.binary(min_size=0, max_size=256), st.data())
def test_any_bit_flip_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    blob = bytearray(seal(KEY, plaintext, AAD))
    index = data.draw(st.integers(0, len(blob) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    blob[index] ^= 1 << bit
    with pytest.raises(DecryptionError):
        open_sealed(KEY, bytes(blob), AAD)


@bounded
@given(st.binary(max_size=128), st.data())
def test_truncation_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    blob = seal(KEY, plaintext, AAD)
    cut = data.draw(st.integers(0, len(blob) - 1), label="length")
    with pytest.raises(DecryptionError):
        open_sealed(KEY, blob[:cut], AAD)


def test_appended_bytes_are_detected() -> None:
    blob = seal(KEY, b"secret", AAD)
    with pytest.raises(DecryptionError):
        open_sealed(KEY, blob + b"\x00", AAD)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version_is_refused(version: int) -> None:
    blob = seal(KEY, b"secret", AAD)
    with pytest.raises(DecryptionError, match="known version"):
        open_sealed(KEY, bytes([version]) + blob[1:], AAD)


def test_short_blobs_are_refused_as_such() -> None:
    for length in (0, 1, 12, 27):
        with pytest.raises(DecryptionError, match="known version"):
            open_sealed(KEY, bytes([1]) + bytes(length), AAD)


def test_decryption_error_hides_the_cause() -> None:
    blob = seal(KEY, b"secret", AAD)
    with pytest.raises(DecryptionError) as caught:
        open_sealed(OTHER_KEY, blob, AAD)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# ---------------------------------------------------------------------------------------
# derived keys


def test_derive_key_is_deterministic_and_32_bytes() -> None:
    first = envelope.derive_key(KEY, "totp")
    assert first == envelope.derive_key(KEY, "totp")
    assert len(first) == 32
    assert first != KEY


@bounded
@given(st.text(max_size=40), st.text(max_size=40))
def test_derive_key_separates_labels(a: str, b: str) -> None:
    same = envelope.derive_key(KEY, a) == envelope.derive_key(KEY, b)
    assert same is (a == b)


def test_derive_key_depends_on_the_master() -> None:
    assert envelope.derive_key(KEY, "totp") != envelope.derive_key(OTHER_KEY, "totp")


def test_derive_key_matches_hkdf_sha256_with_the_hvelv_prefix() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"hvelv:totp").derive(KEY)
    assert envelope.derive_key(KEY, "totp") == expected


def test_derived_keys_do_not_open_each_others_blobs() -> None:
    blob = seal(envelope.derive_key(KEY, "a"), b"secret", AAD)
    with pytest.raises(DecryptionError):
        open_sealed(envelope.derive_key(KEY, "b"), blob, AAD)


# ---------------------------------------------------------------------------------------
# wrapped data keys


def test_wrap_unwrap_round_trip() -> None:
    data_key = envelope.new_key()
    wrapped = envelope.wrap_data_key(KEY, data_key, "p1001", 1, 42)
    assert data_key not in wrapped
    assert envelope.unwrap_data_key(KEY, wrapped, "p1001", 1, 42) == data_key


@pytest.mark.parametrize(
    ("pid", "version", "key_id"),
    [("p1002", 1, 42), ("p1001", 2, 42), ("p1001", 1, 43), ("p10011", 1, 42), ("p100", 1, 42)],
)
def test_wrapped_data_key_is_bound_to_project_version_and_id(
    pid: str, version: int, key_id: int
) -> None:
    wrapped = envelope.wrap_data_key(KEY, envelope.new_key(), "p1001", 1, 42)
    with pytest.raises(DecryptionError):
        envelope.unwrap_data_key(KEY, wrapped, pid, version, key_id)


def test_wrapped_data_key_needs_the_project_key() -> None:
    wrapped = envelope.wrap_data_key(KEY, envelope.new_key(), "p1001", 1, 42)
    with pytest.raises(DecryptionError):
        envelope.unwrap_data_key(OTHER_KEY, wrapped, "p1001", 1, 42)


def test_project_key_blobs_are_not_data_key_blobs() -> None:
    blob = seal(KEY, envelope.new_key(), envelope.project_key_aad("p1001", 1))
    with pytest.raises(DecryptionError):
        envelope.unwrap_data_key(KEY, blob, "p1001", 1, 1)


@bounded
@given(
    st.tuples(st.text(min_size=1, max_size=12), st.integers(0, 10**6), st.integers(0, 10**9)),
    st.tuples(st.text(min_size=1, max_size=12), st.integers(0, 10**6), st.integers(0, 10**9)),
)
def test_associated_data_is_unambiguous(
    first: tuple[str, int, int], second: tuple[str, int, int]
) -> None:
    """Distinct (project, version, key id) triples never share associated data."""
    same = envelope.data_key_aad(*first) == envelope.data_key_aad(*second)
    assert same is (first == second)
    assert envelope.data_key_aad(*first) != envelope.project_key_aad(first[0], first[1])
