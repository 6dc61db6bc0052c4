"""Offline commands for consent receipts and the platform's public signing key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hvelv.cli.local import HomeOption, JsonOption, settings_for
from hvelv.cli.output import console, fail, print_json
from hvelv.consent.receipts import (
    ReceiptError,
    TamperedReceipt,
    WrongKey,
    load_public_key,
    public_key_pem,
    verify_receipt,
)
from hvelv.crypto.keyring import KeyringError, load_keyring, public_key_id

consent_app = typer.Typer(help="Consent receipts (offline checks).", no_args_is_help=True)
keys_app = typer.Typer(help="The platform's public keys.", no_args_is_help=True)


def _platform_public(home: Path | None) -> Ed25519PublicKey:
    settings = settings_for(home)
    try:
        return load_keyring(settings.home).signing_public
    except KeyringError as exc:
        fail(str(exc), 2)


@consent_app.command("verify-receipt")
def verify_receipt_command(
    file: Annotated[Path, typer.Argument(help="The signed receipt (JSON).")],
    key: Annotated[
        Path | None,
        typer.Option("--key", help="The platform's public signing key (PEM file)."),
    ] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Verify a signed consent receipt offline; exit 0 valid, 1 tampered or malformed, 2 usage.

    The key comes from --key (a PEM file from `hvelv keys public`) or, on the instance, from
    the keyring in --home.
    """
    if key is not None and home is not None:
        fail("give either --key or --home, not both", 2)
    try:
        public = load_public_key(key.read_bytes()) if key is not None else _platform_public(home)
    except OSError as exc:
        fail(f"cannot read the key file: {exc.strerror or exc}", 2)
    except ReceiptError as exc:
        fail(f"{key}: {exc}", 2)
    try:
        document: Any = json.loads(file.read_bytes())
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}", 2)
    except ValueError as exc:
        _report(as_json, False, f"{file} is not JSON: {exc}", None, public)
        raise typer.Exit(1) from None
    try:
        verify_receipt(document, public)
    except (TamperedReceipt, WrongKey) as exc:
        _report(as_json, False, str(exc), document, public)
        raise typer.Exit(1) from None
    except ReceiptError as exc:
        _report(as_json, False, f"malformed receipt: {exc}", document, public)
        raise typer.Exit(1) from None
    _report(as_json, True, None, document, public)


def _report(
    as_json: bool, ok: bool, problem: str | None, document: Any, public: Ed25519PublicKey
) -> None:
    receipt_id = document.get("consentReceiptID") if isinstance(document, dict) else None
    if as_json:
        print_json(
            {
                "ok": ok,
                "receipt_id": receipt_id,
                "key_id": public_key_id(public),
                "problem": problem,
            }
        )
    elif ok:
        console.print(
            f"[green]receipt valid[/]: {receipt_id}, signed with key {public_key_id(public)}",
            highlight=False,
        )
    else:
        console.print(f"[bold red]receipt NOT valid[/]: {problem}", highlight=False)


@keys_app.command("public")
def keys_public(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Print the platform's public signing key (PEM) for verifying receipts offline."""
    public = _platform_public(home)
    pem = public_key_pem(public)
    if as_json:
        print_json({"key_id": public_key_id(public), "algorithm": "Ed25519", "pem": pem})
    else:
        typer.echo(pem, nl=False)
