"""`hvelv serve` and `hvelv demo`."""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from hvelv.cli.local import (
    LOCAL_ACTOR,
    HomeOption,
    initialise,
    open_platform,
    settings_for,
)
from hvelv.cli.output import console, fail, show_qr
from hvelv.config import Settings
from hvelv.crypto.keyring import KeyringError, keyring_path
from hvelv.identity import service as identity
from hvelv.portal import demo as portal_demo
from hvelv.projects import service as projects
from hvelv.security import totp
from hvelv.security.actions import Role

DEMO_FILE = "demo-credentials.json"


def _run(settings: Settings, workers: int) -> None:
    os.environ["HVELV_HOME"] = str(settings.home.resolve())
    os.environ["HVELV_HOST"] = settings.host
    os.environ["HVELV_PORT"] = str(settings.port)
    open_platform(settings).close()  # fail fast with a clear message before forking workers
    uvicorn.run(
        "hvelv.server:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=settings.trust_proxy_headers,
    )


def serve(
    home: HomeOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Run the API server."""
    extra: dict[str, Any] = {}
    if host:
        extra["host"] = host
    if port:
        extra["port"] = port
    settings = settings_for(home, **extra)
    console.print(
        f"Hvelv API on {settings.base_url}  (OpenAPI: {settings.base_url}/v1/openapi.json)"
    )
    _run(settings, workers)


def seed_demo(settings: Settings) -> dict[str, Any]:
    """Initialise an instance with a demo project, an owner and a member."""
    result = initialise(settings, "operator")
    platform = open_platform(settings)
    today = date.today()

    def work(trail: Any) -> dict[str, Any]:
        session = trail.session
        owner = identity.create_user(
            session,
            trail,
            platform.keyring,
            "ada",
            display_name="Ada Owner (PI)",
            enrol_totp=True,
        )
        member = identity.create_user(
            session,
            trail,
            platform.keyring,
            "bjorn",
            display_name="Bjørn Researcher",
            enrol_totp=True,
        )
        operator = identity.get_user(session, "operator")
        project = projects.create_project(
            session,
            trail,
            platform.keyring,
            operator.id,
            name="Demo: Nordic heart cohort",
            ethics_ref="REK 2026/0001",
            approval_start=today - timedelta(days=30),
            approval_end=today + timedelta(days=3 * 365),
            purposes=[{"code": "DUO:0000006", "disease": None, "commercial": False}],
            description="A demo project created by `hvelv demo`.",
        )
        projects.add_member(session, trail, project.pid, "ada", Role.OWNER, operator.id)
        projects.add_member(session, trail, project.pid, "bjorn", Role.MEMBER, operator.id)
        portal_links = portal_demo.seed(trail, settings, platform.keyring, project)
        users = [
            {
                "username": "operator",
                "role": "operator",
                "password": result["password"],
                "totp_secret": result["totp_secret"],
            },
        ]
        for new, role in ((owner, "owner"), (member, "member")):
            users.append(
                {
                    "username": new.user.username,
                    "role": role,
                    "password": new.password,
                    "totp_secret": new.totp_secret,
                }
            )
        return {"project": project.pid, "users": users, "portal": portal_links}

    from hvelv.datasets.demo import seed_demo_dataset  # DuckDB/pyarrow: only when seeding

    try:
        seeded: dict[str, Any] = platform.run_as(LOCAL_ACTOR, work)
        seeded["datasets"] = platform.run_as(
            LOCAL_ACTOR, lambda trail: seed_demo_dataset(platform, trail, seeded["project"])
        )
    finally:
        platform.close()
    path = settings.home / DEMO_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(seeded, handle, indent=2)
    return seeded


def _print_demo_query(seeded: dict[str, Any]) -> None:
    data = seeded.get("datasets")
    if not data:
        return
    console.print(
        f"Demo dataset [bold]{data['dataset']}[/] ({data['dataset_rows']} synthetic visits; "
        f"{data['consenting']} of {data['participants']} participants consent to health "
        "research). As bjorn, after logging in:\n"
        f'  hvelv query "{data["query"]}" --purpose DUO:0000006 --project {seeded["project"]}',
        highlight=False,
        soft_wrap=True,
    )


def demo(
    home: Annotated[Path, typer.Option("--home", help="Instance directory.")] = Path(".hvelv"),
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Only set up; do not serve.")
    ] = False,
) -> None:
    """Set up a demo instance (SQLite + local disk) with a demo project, then serve it."""
    settings = settings_for(home, port=port)
    if not keyring_path(settings.home).exists():
        try:
            seed_demo(settings)
        except KeyringError as exc:
            fail(str(exc), 2)
        console.print(f"[green]Demo instance created in {settings.home.resolve()}[/]")
    demo_file = settings.home / DEMO_FILE
    if demo_file.exists():
        seeded = json.loads(demo_file.read_text())
        console.rule("Demo credentials (one-time passwords: you set your own at first login)")
        for user in seeded["users"]:
            console.print(
                f"  [bold]{user['username']:9}[/] {user['role']:9} password {user['password']}"
                f"   TOTP secret {user['totp_secret']}   (code now: "
                f"{totp.current_code(user['totp_secret'])})"
            )
        console.print(f"  Demo project: [bold]{seeded['project']}[/]")
        console.rule()
        first = seeded["users"][1]
        show_qr(
            totp.provisioning_uri(first["totp_secret"], first["username"], settings.totp_issuer)
        )
        console.print(
            f"Scan for [bold]{first['username']}[/] in an authenticator app, "
            "or let the CLI do it:\n"
            f"  hvelv login --url {settings.base_url} --username {first['username']}\n"
            f"Open: {settings.base_url}/healthz  ·  "
            f"API: {settings.base_url}/v1/openapi.json"
        )
        _print_demo_query(seeded)
        links = seeded.get("portal")
        if links:
            console.rule("Participant portal (open in a phone-sized browser window)")
            console.print(f"  Demo participant invitation: {links['participant']}", soft_wrap=True)
            console.print(f"  Demo guardian invitation:    {links['guardian']}", soft_wrap=True)
            console.print(
                "  The one-time code goes through the outbox; without SMTP, read it with\n"
                f"  hvelv outbox show --home {settings.home}"
            )
    if not no_serve:
        _run(settings, 1)
