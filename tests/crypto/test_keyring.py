"""The instance keyring file: created 0600, never overwritten, refused when too open."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from hvelv.crypto.keyring import (
    Keyring,
    KeyringError,
    create_keyring,
    keyring_path,
    load_keyring,
    public_key_id,
)


def raw_private(key: Any) -> bytes:
    return bytes(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))


def same_keys(a: Keyring, b: Keyring) -> bool:
    return (
        a.master_key == b.master_key
        and raw_private(a.signing_key) == raw_private(b.signing_key)
        and raw_private(a.token_key) == raw_private(b.token_key)
    )


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_create_writes_a_0600_file_in_a_0700_home(home: Path) -> None:
    keyring = create_keyring(home)
    path = keyring_path(home)
    assert path == home / "keyring.json"
    assert mode_of(path) == 0o600
    assert mode_of(home) == 0o700
    assert same_keys(Keyring.from_json(path.read_text()), keyring)


def test_create_tightens_an_existing_home(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    create_keyring(tmp_path)
    assert mode_of(tmp_path) == 0o700


def test_create_ignores_a_permissive_umask(home: Path) -> None:
    old = os.umask(0)
    try:
        create_keyring(home)
    finally:
        os.umask(old)
    assert mode_of(keyring_path(home)) == 0o600


def test_create_refuses_to_overwrite(home: Path) -> None:
    create_keyring(home)
    before = keyring_path(home).read_bytes()
    with pytest.raises(KeyringError, match="refusing to overwrite"):
        create_keyring(home)
    assert keyring_path(home).read_bytes() == before


def test_create_refuses_to_overwrite_any_file_at_the_path(home: Path) -> None:
    home.mkdir()
    keyring_path(home).write_text("not a keyring")
    with pytest.raises(KeyringError, match="already exists"):
        create_keyring(home)
    assert keyring_path(home).read_text() == "not a keyring"


def test_round_trip_through_the_file(home: Path) -> None:
    created = create_keyring(home)
    loaded = load_keyring(home)
    assert same_keys(created, loaded)
    assert loaded.signing_key_id == created.signing_key_id
    assert loaded.token_key_id == created.token_key_id


def test_generated_keyrings_hold_distinct_keys() -> None:
    a, b = Keyring.generate(), Keyring.generate()
    assert len(a.master_key) == 32
    assert a.master_key != b.master_key
    assert raw_private(a.signing_key) != raw_private(a.token_key)
    assert a.signing_key_id != a.token_key_id
    assert a.signing_key_id != b.signing_key_id


def test_key_ids_are_hashes_of_the_public_keys() -> None:
    keyring = Keyring.generate()
    assert len(keyring.signing_key_id) == 16
    int(keyring.signing_key_id, 16)
    assert keyring.signing_key_id == public_key_id(keyring.signing_public)
    raw = keyring.token_public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert len(raw) == 32
    assert keyring.token_key_id == public_key_id(keyring.token_key.public_key())


def test_public_keys_verify_signatures_of_the_private_keys() -> None:
    keyring = Keyring.generate()
    keyring.signing_public.verify(keyring.signing_key.sign(b"head"), b"head")
    keyring.token_public.verify(keyring.token_key.sign(b"jwt"), b"jwt")


def test_derived_keys_are_stable_across_reloads(home: Path) -> None:
    created = create_keyring(home)
    assert load_keyring(home).derived("totp") == created.derived("totp")
    assert created.derived("totp") != created.derived("other")


def test_json_holds_only_the_documented_fields() -> None:
    data = json.loads(Keyring.generate().to_json())
    assert set(data) == {"format", "master_key", "signing_key", "token_key"}
    assert data["format"] == 1
    for name in ("master_key", "signing_key", "token_key"):
        assert len(base64.b64decode(data[name], validate=True)) == 32


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o610, 0o601, 0o720])
def test_load_refuses_a_file_readable_by_others(home: Path, mode: int) -> None:
    create_keyring(home)
    path = keyring_path(home)
    path.chmod(mode)
    with pytest.raises(KeyringError) as caught:
        load_keyring(home)
    assert f"chmod 600 {path}" in str(caught.value)
    assert "readable by others" in str(caught.value)


def test_load_accepts_a_0400_file(home: Path) -> None:
    created = create_keyring(home)
    keyring_path(home).chmod(0o400)
    assert same_keys(load_keyring(home), created)


def test_load_without_a_keyring_says_to_run_init(home: Path) -> None:
    with pytest.raises(KeyringError, match="hvelv init"):
        load_keyring(home)


def write(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path = keyring_path(home)
    path.write_text(text)
    path.chmod(0o600)


def good() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Keyring.generate().to_json())
    return data


def with_(**changes: Any) -> str:
    data = good()
    for name, value in changes.items():
        if value is ...:
            del data[name]
        else:
            data[name] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("keyring", "not valid JSON"),
        ("[]", "format must be 1"),
        ("null", "format must be 1"),
        ('"text"', "format must be 1"),
        (with_(format=2), "format must be 1"),
        (with_(format="1"), "format must be 1"),
        (with_(format=...), "format must be 1"),
        (with_(master_key=...), "lacks 'master_key'"),
        (with_(signing_key=...), "lacks 'signing_key'"),
        (with_(token_key=...), "lacks 'token_key'"),
        (with_(master_key="not base64!"), "'master_key' is not base64"),
        (with_(signing_key="@@@@"), "'signing_key' is not base64"),
        (with_(token_key=12), "'token_key' is not base64"),
        (with_(master_key=None), "'master_key' is not base64"),
        (with_(master_key=base64.b64encode(bytes(16)).decode()), "master_key must be 32 bytes"),
        (with_(signing_key=base64.b64encode(bytes(31)).decode()), "invalid key"),
        (with_(token_key=base64.b64encode(bytes(64)).decode()), "invalid key"),
    ],
)
def test_load_refuses_malformed_keyrings(home: Path, text: str, message: str) -> None:
    write(home, text)
    with pytest.raises(KeyringError, match=message):
        load_keyring(home)


def test_error_messages_do_not_echo_key_material(home: Path) -> None:
    data = good()
    secret = data["master_key"]
    data["signing_key"] = base64.b64encode(bytes(31)).decode()
    write(home, json.dumps(data))
    with pytest.raises(KeyringError) as caught:
        load_keyring(home)
    assert secret not in str(caught.value)
