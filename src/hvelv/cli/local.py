"""Commands that act on the local instance directly (no server needed)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from hvelv.audit.verify import verify
from hvelv.cli.output import console, fail, print_json, show_qr
from hvelv.config import ConfigError, Settings, load_settings
from hvelv.crypto.keyring import (
    Keyring,
    KeyringError,
    keyring_path,
    load_keyring,
    write_keyring,
)
from hvelv.db import migrate
from hvelv.db.engine import Database
from hvelv.errors import HvelvError
from hvelv.identity import service as identity
from hvelv.platform import NotInitialised, Platform
from hvelv.security import totp

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Instance directory (default: $HVELV_HOME or ./.hvelv)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

LOCAL_ACTOR = "local:admin"


class InitError(KeyringError):
    """Initialisation failed; nothing usable was left behind."""


def settings_for(home: Path | None, **extra: Any) -> Settings:
    """Settings for a CLI command; ``--home`` acts exactly like HVELV_HOME (also for the
    HOME/hvelv.toml file and for server workers)."""
    if home is not None:
        os.environ["HVELV_HOME"] = str(home)
    try:
        return load_settings(**extra)
    except ConfigError as exc:
        fail(str(exc), 2)


def open_platform(settings: Settings) -> Platform:
    try:
        return Platform.open(settings)
    except (KeyringError, NotInitialised) as exc:
        fail(str(exc), 2)


def initialise(settings: Settings, operator: str) -> dict[str, Any]:
    """Create keyring, database schema and the first operator. Refuses a used home."""
    if keyring_path(settings.home).exists():
        raise KeyringError(
            f"{settings.home} is already initialised (keyring exists); nothing was changed"
        )
    identity.validate_username(operator)
    # the keyring file is written last, so a failed database step leaves nothing behind
    keyring = Keyring.generate()
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        db = Database(
            settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
    except OSError as exc:
        raise InitError(f"cannot create the database: {exc}") from None
    try:
        migrate.upgrade(db.engine)
        platform = Platform.build(settings, db, keyring)
        new = platform.run_as(
            LOCAL_ACTOR,
            lambda trail: identity.create_user(
                trail.session,
                trail,
                keyring,
                operator,
                is_operator=True,
                enrol_totp=True,
                display_name="Platform operator",
            ),
        )
    except SQLAlchemyError as exc:
        raise InitError(f"cannot initialise the database: {exc.__class__.__name__}") from None
    finally:
        db.dispose()
    write_keyring(settings.home, keyring)
    assert new.totp_secret is not None
    return {
        "home": str(settings.home.resolve()),
        "database": settings.redacted()["database_url"],
        "username": operator,
        "password": new.password,
        "totp_secret": new.totp_secret,
        "otpauth_uri": totp.provisioning_uri(new.totp_secret, operator, settings.totp_issuer),
    }


def init(
    home: HomeOption = None,
    operator: Annotated[str, typer.Option(help="Username of the first operator.")] = "operator",
    as_json: JsonOption = False,
) -> None:
    """Create HVELV_HOME: keyring (0600), database, and the first operator account."""
    settings = settings_for(home)
    try:
        result = initialise(settings, operator)
    except (KeyringError, HvelvError) as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(result)
        return
    console.print(f"Initialised Hvelv in [bold]{result['home']}[/]")
    _print_credentials(result)


def _print_credentials(result: dict[str, Any]) -> None:
    console.print(f"  username:           [bold]{result['username']}[/]")
    console.print(f"  one-time password:  [bold]{result['password']}[/] (changed at first login)")
    if result.get("totp_secret"):
        console.print(f"  TOTP secret:        {result['totp_secret']}")
        console.print("Scan this with an authenticator app:")
        show_qr(result["otpauth_uri"])


def db_upgrade(home: HomeOption = None) -> None:
    """Apply database migrations up to the newest schema."""
    settings = settings_for(home)
    db = Database(settings.resolved_database_url)
    try:
        migrate.upgrade(db.engine)
    finally:
        db.dispose()
    console.print("database schema is current")


def user_create(
    username: Annotated[str, typer.Argument(help="Login name (lower-case).")],
    home: HomeOption = None,
    operator: Annotated[bool, typer.Option("--operator", help="Make an operator.")] = False,
    display_name: Annotated[str, typer.Option(help="Full name.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create a user locally with a one-time password and an enrolled TOTP secret."""
    settings = settings_for(home)
    platform = open_platform(settings)
    try:
        new = platform.run_as(
            LOCAL_ACTOR,
            lambda trail: identity.create_user(
                trail.session,
                trail,
                platform.keyring,
                username,
                is_operator=operator,
                enrol_totp=True,
                display_name=display_name,
            ),
        )
    except HvelvError as exc:
        fail(exc.message)
    finally:
        platform.close()
    assert new.totp_secret is not None
    result = {
        "username": username,
        "password": new.password,
        "totp_secret": new.totp_secret,
        "otpauth_uri": totp.provisioning_uri(new.totp_secret, username, settings.totp_issuer),
        "operator": operator,
    }
    if as_json:
        print_json(result)
    else:
        _print_credentials(result)


def audit_verify(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Recompute the audit hash chain, checkpoints and signed head offline; exit 1 on tampering."""
    settings = settings_for(home)
    try:
        keyring = load_keyring(settings.home)
    except KeyringError as exc:
        fail(str(exc), 2)
    db = Database(settings.resolved_database_url)
    try:
        report = verify(db.engine, keyring.signing_public)
    finally:
        db.dispose()
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "events": report.events,
                "checkpoints": report.checkpoints,
                "problem": asdict(report.problem) if report.problem else None,
            }
        )
    elif report.ok:
        console.print(
            f"[green]audit ledger intact[/]: {report.events} events, "
            f"{report.checkpoints} signed checkpoints"
        )
    if report.problem is not None:
        if not as_json:
            fail(f"audit ledger tampered: {report.problem.message}")
        raise typer.Exit(1)


def config_show(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Show the effective settings, with secrets redacted."""
    settings = settings_for(home)
    data = settings.redacted()
    if as_json:
        print_json(data)
        return
    table = Table("setting", "value", title="Hvelv settings (HVELV_<NAME>)")
    for name, value in sorted(data.items()):
        table.add_row(name, json.dumps(value, default=str))
    console.print(table)


def storage_migrate(
    project: Annotated[str, typer.Option("--project", "-p", help="Project id, e.g. p1001.")],
    to: Annotated[str, typer.Option("--to", help="Target store: local or s3.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a project's stored files to another blob store while the server keeps running;
    every copy is decrypted and its SHA-256 checked before the switch."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from hvelv.files import migrate as files_migrate

    if to not in ("local", "s3"):
        fail("--to must be local or s3", 2)
    settings = settings_for(home)
    platform = open_platform(settings)
    try:
        try:
            platform.store(to)
        except ConfigError as exc:
            fail(str(exc), 2)
        with platform.db.read() as session:
            from hvelv.projects.models import Project

            if session.get(Project, project) is None:
                fail(f"no project {project}", 2)
        total = files_migrate.pending_bytes(platform, project, to)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=as_json or not console.is_terminal,
        ) as bar:
            task = bar.add_task(f"{project} → {to}", total=total)
            report = files_migrate.migrate_project(
                platform, project, to, LOCAL_ACTOR, lambda n: bar.advance(task, n)
            )
    finally:
        platform.close()
    if as_json:
        print_json({**asdict(report), "ok": report.ok})
    else:
        console.print(
            f"moved {report.files_moved} files ({report.bytes_copied} bytes), "
            f"{report.files_skipped} already on {to}"
        )
        for failure in report.failures:
            console.print(f"[red]not moved[/]: {failure}")
    if not report.ok:
        raise typer.Exit(1)
