"""The ``hvelv`` command line: help everywhere, local administration, clear failures."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import typer
from typer.testing import CliRunner, Result

from hvelv.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No HVELV_* variable from the shell; an empty CLI config dir; a fresh working dir."""
    for name in list(os.environ):
        if name.upper().startswith("HVELV_"):
            monkeypatch.delenv(name)
    cli_config = tmp_path / "cli-config"
    cli_config.mkdir()
    monkeypatch.setenv("HVELV_CLI_CONFIG", str(cli_config))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return cli_config


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def init(home: Path, *extra: str) -> dict[str, Any]:
    result = run("init", "--home", str(home), "--json", *extra)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def snapshot(directory: Path) -> dict[str, tuple[str, int, int]]:
    """Content hash, mode and mtime of every file under ``directory``."""
    return {
        str(p.relative_to(directory)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mode,
            p.stat().st_mtime_ns,
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "instance"
    init(path)
    return path


# ---------------------------------------------------------------------------------------
# help for every command, found by walking the app


def subcommands(command: Any) -> dict[str, Any]:
    """The sub-commands of a group (Typer vendors its own click, so no isinstance)."""
    return dict(getattr(command, "commands", {}))


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, sub in subcommands(command).items():
        yield from command_paths(sub, (*prefix, name))


def resolve(path: tuple[str, ...]) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = subcommands(command)[name]
    return command


ALL_COMMANDS = list(command_paths(typer.main.get_command(app)))


def test_the_walk_finds_the_commands() -> None:
    found = {" ".join(p) for p in ALL_COMMANDS}
    expected = {
        "init",
        "serve",
        "demo",
        "login",
        "logout",
        "whoami",
        "version",
        "user create",
        "db upgrade",
        "audit verify",
        "audit list",
        "config show",
        "project create",
        "project list",
        "project show",
        "project status",
        "project rotate-key",
        "member add",
        "member remove",
        "member list",
        "apikey create",
        "apikey revoke",
        "apikey list",
        "consent verify-receipt",
        "keys public",
    }
    assert expected <= found


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "hvelv")
def test_help_works_for_every_command(path: tuple[str, ...]) -> None:
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: {' '.join(('hvelv', *path))} " in result.stdout
    command = resolve(path)
    assert command.help, f"`hvelv {' '.join(path)}` has no help text"
    first_line = command.help.strip().splitlines()[0]
    assert first_line[:40] in " ".join(result.stdout.split())


@pytest.mark.parametrize("path", [p for p in ALL_COMMANDS if p], ids=" ".join)
def test_every_option_has_help(path: tuple[str, ...]) -> None:
    for param in resolve(path).params:
        if param.param_type_name == "option":
            assert param.help, f"`hvelv {' '.join(path)}` option {param.name} has no help"


def test_groups_without_a_command_show_help() -> None:
    for path in ALL_COMMANDS:
        if subcommands(resolve(path)):
            result = run(*path)
            assert "Usage:" in result.output, path
            assert result.exit_code in (0, 2), path


def test_version() -> None:
    from hvelv import __version__

    result = run("version")
    assert result.exit_code == 0
    assert result.stdout.strip() == __version__


def test_the_installed_script_runs() -> None:
    script = Path(sys.executable).parent / "hvelv"
    if not script.exists():
        pytest.skip("the hvelv console script is not installed in this environment")
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert "init" in done.stdout


# ---------------------------------------------------------------------------------------
# init


def test_init_prints_credentials_and_creates_the_instance(tmp_path: Path) -> None:
    target = tmp_path / "instance"
    data = init(target)
    assert data["username"] == "operator"
    assert len(data["password"]) >= 12
    assert data["home"] == str(target.resolve())
    assert data["database"] == f"sqlite:///{target.resolve() / 'hvelv.db'}"
    secret = data["totp_secret"]
    uri = urlsplit(data["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert parse_qs(uri.query)["secret"] == [secret]
    assert parse_qs(uri.query)["issuer"] == ["Hvelv"]
    keyring = target / "keyring.json"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    with sqlite3.connect(target / "hvelv.db") as conn:
        users = conn.execute("SELECT username, is_operator, password_hash FROM users").fetchall()
        events = conn.execute("SELECT seq, actor, action FROM audit_events").fetchall()
    assert [(u, bool(op)) for u, op, _ in users] == [("operator", True)]
    assert data["password"] not in users[0][2]
    assert events == [(1, "local:admin", "user.create")]
    # no secret is stored in the clear
    raw = (target / "hvelv.db").read_bytes()
    assert secret.encode() not in raw
    assert data["password"].encode() not in raw


def test_init_with_another_operator_name(tmp_path: Path) -> None:
    assert init(tmp_path / "i", "--operator", "root-admin")["username"] == "root-admin"


def test_init_without_json_shows_the_credentials(tmp_path: Path) -> None:
    result = run("init", "--home", str(tmp_path / "i"))
    assert result.exit_code == 0, result.output
    assert "Initialised Hvelv" in result.stdout
    assert "operator" in result.stdout
    assert "TOTP secret" in result.stdout


def test_second_init_fails_and_changes_nothing(home: Path) -> None:
    before = snapshot(home)
    result = run("init", "--home", str(home), "--json")
    assert result.exit_code == 2
    assert "already initialised" in result.stderr
    assert "nothing was changed" in result.stderr
    assert result.stdout == ""
    assert snapshot(home) == before


def test_init_with_an_invalid_operator_name_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "instance"
    result = run("init", "--home", str(target), "--operator", "Not Valid")
    assert result.exit_code == 2
    assert "username" in result.stderr
    assert not (target / "keyring.json").exists()
    assert not (target / "hvelv.db").exists()


def test_init_that_fails_on_the_database_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("HVELV_DATABASE_URL", f"sqlite:///{tmp_path / 'a-file' / 'x.db'}")
    target = tmp_path / "instance"
    result = runner.invoke(app, ["init", "--home", str(target)])
    assert result.exit_code != 0
    assert not (target / "keyring.json").exists()
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_init_reports_invalid_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HVELV_PORT", "0")
    result = run("init", "--home", str(tmp_path / "i"))
    assert result.exit_code == 2
    assert "HVELV_PORT" in result.stderr
    assert not (tmp_path / "i").exists()


# ---------------------------------------------------------------------------------------
# user create


def test_user_create(home: Path) -> None:
    result = run("user", "create", "ada", "--home", str(home), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["username"] == "ada"
    assert data["operator"] is False
    assert len(data["password"]) >= 12
    assert parse_qs(urlsplit(data["otpauth_uri"]).query)["secret"] == [data["totp_secret"]]
    with sqlite3.connect(home / "hvelv.db") as conn:
        rows = conn.execute("SELECT username, is_operator FROM users ORDER BY id").fetchall()
    assert rows == [("operator", 1), ("ada", 0)]


def test_user_create_operator(home: Path) -> None:
    result = run("user", "create", "olga", "--operator", "--home", str(home), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["operator"] is True


def test_user_create_refuses_a_duplicate(home: Path) -> None:
    assert run("user", "create", "ada", "--home", str(home)).exit_code == 0
    again = run("user", "create", "ada", "--home", str(home), "--json")
    assert again.exit_code == 1
    assert "already exists" in again.stderr
    assert again.stdout == ""


def test_user_create_refuses_an_invalid_name(home: Path) -> None:
    result = run("user", "create", "Ada Lovelace", "--home", str(home))
    assert result.exit_code == 1
    assert "username" in result.stderr


def test_user_create_needs_an_initialised_home(tmp_path: Path) -> None:
    result = run("user", "create", "ada", "--home", str(tmp_path / "empty"))
    assert result.exit_code == 2
    assert "hvelv init" in result.stderr


# ---------------------------------------------------------------------------------------
# audit verify


def test_audit_verify_intact_then_tampered(home: Path) -> None:
    assert run("user", "create", "ada", "--home", str(home)).exit_code == 0
    intact = run("audit", "verify", "--home", str(home))
    assert intact.exit_code == 0, intact.output
    assert "intact" in intact.stdout
    assert "2 events" in intact.stdout

    with sqlite3.connect(home / "hvelv.db") as conn:
        conn.execute("UPDATE audit_events SET actor='x' WHERE seq=1")
    tampered = run("audit", "verify", "--home", str(home))
    assert tampered.exit_code == 1
    assert "event 1" in tampered.stderr
    assert "tampered" in tampered.stderr
    assert "intact" not in tampered.stdout

    as_json = run("audit", "verify", "--home", str(home), "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["problem"]["seq"] == 1
    assert report["problem"]["kind"] == "altered"


def test_audit_verify_json_when_intact(home: Path) -> None:
    result = run("audit", "verify", "--home", str(home), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "ok": True,
        "events": 1,
        "checkpoints": 0,
        "problem": None,
    }


def test_audit_verify_catches_a_deleted_event(home: Path) -> None:
    assert run("user", "create", "ada", "--home", str(home)).exit_code == 0
    with sqlite3.connect(home / "hvelv.db") as conn:
        conn.execute("DELETE FROM audit_events WHERE seq=2")
    result = run("audit", "verify", "--home", str(home))
    assert result.exit_code == 1
    assert "removed" in result.stderr


def test_audit_verify_needs_a_keyring(tmp_path: Path) -> None:
    result = run("audit", "verify", "--home", str(tmp_path / "empty"))
    assert result.exit_code == 2
    assert "hvelv init" in result.stderr


def test_audit_verify_refuses_an_open_keyring(home: Path) -> None:
    (home / "keyring.json").chmod(0o644)
    result = run("audit", "verify", "--home", str(home))
    assert result.exit_code == 2
    assert "chmod 600" in " ".join(result.stderr.split())


# ---------------------------------------------------------------------------------------
# config show


def test_config_show_json_hides_secrets(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = json.loads((home / "keyring.json").read_text())
    result = run("config", "show", "--home", str(home), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["home"] == str(home)
    assert data["port"] == 8000
    for name in ("master_key", "signing_key", "token_key"):
        assert keyring[name] not in result.stdout

    monkeypatch.setenv("HVELV_DATABASE_URL", "postgresql+psycopg://hvelv:pa55word@db/hvelv")
    result = run("config", "show", "--home", str(home), "--json")
    assert result.exit_code == 0, result.output
    assert "pa55word" not in result.output
    assert json.loads(result.stdout)["database_url"] == "postgresql+psycopg://hvelv:***@db/hvelv"


def test_config_show_table_hides_secrets(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVELV_DATABASE_URL", "postgresql+psycopg://hvelv:pa55word@db/hvelv")
    result = run("config", "show", "--home", str(home))
    assert result.exit_code == 0, result.output
    assert "pa55word" not in result.output
    assert "access_token_ttl_seconds" in result.stdout


def test_config_show_reads_the_file_named_by_hvelv_config_file(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "custom.toml").write_text('totp_issuer = "Custom"\n')
    monkeypatch.setenv("HVELV_CONFIG_FILE", str(tmp_path / "custom.toml"))
    result = run("config", "show", "--home", str(home), "--json")
    assert json.loads(result.stdout)["totp_issuer"] == "Custom"


def test_config_show_reads_hvelv_toml_in_the_home_given_by_option(home: Path) -> None:
    (home / "hvelv.toml").write_text('totp_issuer = "Custom"\n')
    result = run("config", "show", "--home", str(home), "--json")
    assert json.loads(result.stdout)["totp_issuer"] == "Custom"


def test_config_show_reports_invalid_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HVELV_ACCESS_TOKEN_TTL_SECONDS", "7200")
    result = run("config", "show", "--home", str(tmp_path))
    assert result.exit_code == 2
    assert "HVELV_ACCESS_TOKEN_TTL_SECONDS" in result.stderr


# ---------------------------------------------------------------------------------------
# commands that need a login


NEEDS_LOGIN = [
    ("whoami",),
    ("project", "list"),
    ("project", "show", "p1001"),
    ("project", "status", "p1001", "frozen"),
    ("project", "rotate-key", "p1001"),
    ("member", "list", "p1001"),
    ("member", "add", "p1001", "ada"),
    ("member", "remove", "p1001", "ada"),
    ("apikey", "list", "p1001"),
    ("apikey", "revoke", "p1001", "0123456789ab"),
    ("apikey", "create", "p1001", "--name", "lab", "--action", "project.read"),
    ("audit", "list"),
    ("audit", "list", "p1001"),
    (
        "project",
        "create",
        "--name",
        "Heart",
        "--ethics-ref",
        "REK 1",
        "--start",
        "2026-01-01",
        "--end",
        "2027-01-01",
        "--purpose",
        "DUO:0000006",
    ),
]


@pytest.mark.parametrize("args", NEEDS_LOGIN, ids=" ".join)
def test_commands_needing_a_login_say_so(args: tuple[str, ...], clean_env: Path) -> None:
    result = run(*args)
    assert result.exit_code != 0
    assert "not logged in" in result.stderr
    assert "hvelv login" in result.stderr
    assert list(clean_env.iterdir()) == []


def test_a_corrupt_stored_login_counts_as_not_logged_in(clean_env: Path) -> None:
    (clean_env / "session.json").write_text("{not json")
    result = run("project", "list")
    assert result.exit_code != 0
    assert "not logged in" in result.stderr


def test_logout_without_a_login_is_harmless(clean_env: Path) -> None:
    result = run("logout")
    assert result.exit_code == 0
    assert "not logged in" in result.stdout
