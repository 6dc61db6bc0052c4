"""`hvelv consent verify-receipt` and `hvelv keys public`: offline receipt checks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from hvelv.cli.main import app
from hvelv.consent.receipts import Controller, build_receipt, sign_receipt
from hvelv.crypto.keyring import Keyring, public_key_id, write_keyring
from tests.consent import factories as f

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("HVELV_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HVELV_CLI_CONFIG", str(tmp_path / "cli-config"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "instance"
    write_keyring(path, Keyring.generate())
    return path


@pytest.fixture
def keyring(home: Path) -> Keyring:
    return Keyring.from_json((home / "keyring.json").read_text())


def signed_receipt(keyring: Keyring) -> dict[str, Any]:
    receipt = build_receipt(
        event=f.given(3, f.day(2), {"hmb": True}),
        event_id="ce-3",
        subject_pseudonym="pz-0a1b2c",
        controller=Controller("OUS", "personvern@ous.example"),
        ledger_position=3,
        ledger_hash="ab" * 32,
        issued_at=f.day(2),
        template=f.MAIN_V1,
        receipt_id="r-1",
    )
    return sign_receipt(receipt, keyring.signing_key)


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def test_keys_public_prints_the_signing_key(home: Path, keyring: Keyring) -> None:
    result = run("keys", "public", "--home", str(home))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    as_json = json.loads(run("keys", "public", "--home", str(home), "--json").stdout)
    assert as_json["key_id"] == keyring.signing_key_id
    assert as_json["pem"] == result.stdout
    assert "PRIVATE" not in result.stdout


def test_verify_with_an_exported_public_key(tmp_path: Path, home: Path, keyring: Keyring) -> None:
    pem = tmp_path / "platform.pem"
    pem.write_text(run("keys", "public", "--home", str(home)).stdout)
    receipt = write(tmp_path / "receipt.json", signed_receipt(keyring))
    result = run("consent", "verify-receipt", str(receipt), "--key", str(pem))
    assert result.exit_code == 0, result.output
    assert "receipt valid" in result.stdout
    assert keyring.signing_key_id in result.stdout
    data = json.loads(
        run("consent", "verify-receipt", str(receipt), "--key", str(pem), "--json").stdout
    )
    assert data == {
        "ok": True,
        "receipt_id": "r-1",
        "key_id": keyring.signing_key_id,
        "problem": None,
    }


def test_verify_with_the_home_keyring(tmp_path: Path, home: Path, keyring: Keyring) -> None:
    receipt = write(tmp_path / "receipt.json", signed_receipt(keyring))
    result = run("consent", "verify-receipt", str(receipt), "--home", str(home))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.__setitem__("piiPrincipalId", "pz-ffffff"), "does not match"),
        (lambda d: d["hvelv"]["event"].__setitem__("kind", "withdrawn"), "does not match"),
        (lambda d: d["services"][0]["purposes"][0].__setitem__("granted", False), "not match"),
        (lambda d: d.pop("proof"), "malformed receipt"),
        (lambda d: d["proof"].__setitem__("keyId", "0" * 16), "signing key"),
    ],
)
def test_tampered_receipts_exit_1(
    tmp_path: Path, home: Path, keyring: Keyring, change: Any, needle: str
) -> None:
    doc = signed_receipt(keyring)
    change(doc)
    receipt = write(tmp_path / "receipt.json", doc)
    result = run("consent", "verify-receipt", str(receipt), "--home", str(home), "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert needle in data["problem"]
    plain = run("consent", "verify-receipt", str(receipt), "--home", str(home))
    assert plain.exit_code == 1
    assert "NOT valid" in plain.stdout


def test_not_json_exits_1(tmp_path: Path, home: Path) -> None:
    bad = tmp_path / "receipt.json"
    bad.write_text("{not json")
    result = run("consent", "verify-receipt", str(bad), "--home", str(home))
    assert result.exit_code == 1
    assert "not JSON" in result.stdout


def test_usage_errors_exit_2(tmp_path: Path, home: Path, keyring: Keyring) -> None:
    receipt = write(tmp_path / "receipt.json", signed_receipt(keyring))
    missing = run("consent", "verify-receipt", str(tmp_path / "nope.json"), "--home", str(home))
    assert missing.exit_code == 2
    assert "cannot read" in missing.stderr
    not_pem = tmp_path / "key.pem"
    not_pem.write_text("hello")
    result = run("consent", "verify-receipt", str(receipt), "--key", str(not_pem))
    assert result.exit_code == 2
    assert "PEM" in result.stderr
    both = run("consent", "verify-receipt", str(receipt), "--key", str(not_pem), "--home", "x")
    assert both.exit_code == 2
    no_home = run("consent", "verify-receipt", str(receipt), "--home", str(tmp_path / "empty"))
    assert no_home.exit_code == 2
    assert "keyring" in no_home.stderr


def test_a_receipt_from_another_platform_names_the_key(tmp_path: Path, home: Path) -> None:
    other = Keyring.generate()
    receipt = write(tmp_path / "receipt.json", signed_receipt(other))
    result = run("consent", "verify-receipt", str(receipt), "--home", str(home), "--json")
    assert result.exit_code == 1
    assert public_key_id(other.signing_public) in json.loads(result.stdout)["problem"]
