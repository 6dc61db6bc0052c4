"""Commands that talk to a Hvelv server over the REST API."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.table import Table

from hvelv.cli.client import ApiError, Client, StoredLogin, call, raise_for
from hvelv.cli.output import console, fail, print_json, show_qr

F = TypeVar("F", bound=Callable[..., Any])
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
Pid = Annotated[str, typer.Argument(help="Project id, e.g. p1001.")]


def api_errors(command: F) -> F:
    """Turn API errors into a one-line message and exit status 1."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ApiError as exc:
            fail(f"{exc.message} ({exc.code}, HTTP {exc.status})")

    return run  # type: ignore[return-value]


def _ask(value: str | None, prompt: str, secret: bool = True) -> str:
    if value is not None:
        return value
    return getpass.getpass(f"{prompt}: ") if secret else input(f"{prompt}: ")


@api_errors
def login(
    url: Annotated[str, typer.Option(help="Server URL.")] = "http://127.0.0.1:8000",
    username: Annotated[str | None, typer.Option(help="Your username.")] = None,
    password: Annotated[
        str | None, typer.Option(envvar="HVELV_PASSWORD", help="Password (prompted if absent).")
    ] = None,
    totp_code: Annotated[
        str | None, typer.Option("--totp", help="Current TOTP code (prompted if absent).")
    ] = None,
    new_password: Annotated[
        str | None, typer.Option(envvar="HVELV_NEW_PASSWORD", help="Set a new password.")
    ] = None,
    project: Annotated[str | None, typer.Option(help="Scope the login to one project.")] = None,
) -> None:
    """Log in with password + TOTP; enrols TOTP (QR code) at first login. Stores the token 0600."""
    user = _ask(username, "Username", secret=False)
    secret = _ask(password, "Password")
    http = httpx.Client(base_url=url, timeout=30)
    body: dict[str, Any] = {"username": user, "password": secret}
    code = totp_code
    for _ in range(3):
        code = _ask(code, "TOTP code", secret=False)
        payload = {**body, "totp_code": code}
        if new_password:
            payload["new_password"] = new_password
        if project:
            payload["project"] = project
        try:
            response = http.post("/v1/auth/token", json=payload)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {url}: {exc}")
        if response.status_code == 200:
            data = response.json()
            StoredLogin(
                url=url,
                username=user,
                access_token=data["access_token"],
                refresh_token=data["refresh_token"],
                expires_at=data["expires_at"],
                scope_project=data["scope_project"],
            ).save()
            console.print(f"logged in as [bold]{user}[/] at {url}")
            return
        try:
            raise_for(response)
        except ApiError as exc:
            if exc.code == "totp_enrolment_required":
                enrol = http.post("/v1/auth/totp/enrol", json=body)
                raise_for(enrol)
                data = enrol.json()
                console.print("Scan this QR code with your authenticator app:")
                show_qr(data["otpauth_uri"])
                console.print(f"(or enter the secret {data['secret']})")
                code = None
                continue
            if exc.code == "password_change_required":
                new_password = getpass.getpass("Choose a new password (12+ characters): ")
                code = None  # the code was used; wait for the next one
                continue
            raise
    fail("login did not complete")


@api_errors
def logout() -> None:
    """End the stored login session on the server and forget it locally."""
    stored = StoredLogin.load()
    if stored is None:
        console.print("not logged in")
        return
    try:
        Client(stored).request("POST", "/v1/auth/logout")
    finally:
        StoredLogin.forget()
    console.print("logged out")


@api_errors
def whoami(as_json: JsonOption = False) -> None:
    """Show the logged-in user and their project roles."""
    data = call("GET", "/v1/me")
    if as_json:
        print_json(data)
        return
    console.print(f"{data['username']} (operator: {data['operator']})")
    for pid, roles in data["projects"].items():
        console.print(f"  {pid}: {', '.join(roles)}")


project_app = typer.Typer(help="Create, list and show projects.", no_args_is_help=True)


@project_app.command("create")
@api_errors
def project_create(
    name: Annotated[str, typer.Option(help="Project name.")],
    ethics_ref: Annotated[str, typer.Option(help="Ethics approval reference, e.g. REK 2026/123.")],
    start: Annotated[str, typer.Option(help="Approval start (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Approval end (YYYY-MM-DD).")],
    purpose: Annotated[
        list[str], typer.Option(help="Approved DUO purpose, e.g. DUO:0000006; repeatable.")
    ],
    description: Annotated[str, typer.Option(help="Description.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create a project (operators)."""
    body = {
        "name": name,
        "ethics_ref": ethics_ref,
        "approval_start": start,
        "approval_end": end,
        "purposes": [{"code": p} for p in purpose],
        "description": description,
    }
    data = call("POST", "/v1/projects", json=body)
    if as_json:
        print_json(data)
    else:
        console.print(f"created project [bold]{data['pid']}[/] {data['name']}")


@project_app.command("list")
@api_errors
def project_list(as_json: JsonOption = False) -> None:
    """Projects you can see."""
    data = call("GET", "/v1/projects")
    if as_json:
        print_json(data)
        return
    table = Table("pid", "name", "status", "approval", "ethics")
    for p in data["items"]:
        table.add_row(
            p["pid"],
            p["name"],
            p["status"],
            f"{p['approval_start']}..{p['approval_end']}",
            p["ethics_ref"],
        )
    console.print(table)


@project_app.command("show")
@api_errors
def project_show(pid: Pid, as_json: JsonOption = False) -> None:
    """One project."""
    data = call("GET", f"/v1/projects/{pid}")
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        console.print(f"{key:15} {value}")


@project_app.command("status")
@api_errors
def project_status(
    pid: Pid,
    status: Annotated[str, typer.Argument(help="active, frozen or closed.")],
) -> None:
    """Freeze, close or reactivate a project (operators)."""
    call("PATCH", f"/v1/projects/{pid}/admin", json={"status": status})
    console.print(f"{pid} is now {status}")


@project_app.command("rotate-key")
@api_errors
def project_rotate_key(pid: Pid) -> None:
    """Rotate the project key (data keys are re-wrapped, data is not re-encrypted)."""
    data = call("POST", f"/v1/projects/{pid}/keys/rotate")
    console.print(
        f"{pid}: key version {data['version']}, {data['rewrapped_data_keys']} data keys re-wrapped"
    )


member_app = typer.Typer(help="Project memberships.", no_args_is_help=True)
RoleArg = Annotated[str, typer.Option(help="owner, data_manager, member or auditor.")]


@member_app.command("add")
@api_errors
def member_add(pid: Pid, username: str, role: RoleArg = "member") -> None:
    """Give a user a role in a project."""
    call("POST", f"/v1/projects/{pid}/members", json={"username": username, "role": role})
    console.print(f"{username} is now {role} in {pid}")


@member_app.command("remove")
@api_errors
def member_remove(
    pid: Pid,
    username: str,
    role: Annotated[str | None, typer.Option(help="Only this role.")] = None,
) -> None:
    """Remove a user's role (or all roles) in a project."""
    params = {"role": role} if role else {}
    call("DELETE", f"/v1/projects/{pid}/members/{username}", params=params)
    console.print(f"removed {username} from {pid}")


@member_app.command("list")
@api_errors
def member_list(pid: Pid, as_json: JsonOption = False) -> None:
    """Members of a project."""
    data = call("GET", f"/v1/projects/{pid}/members")
    if as_json:
        print_json(data)
        return
    for member in data:
        console.print(f"{member['username']:20} {', '.join(member['roles'])}")


apikey_app = typer.Typer(help="Project API keys for integrations.", no_args_is_help=True)


@apikey_app.command("create")
@api_errors
def apikey_create(
    pid: Pid,
    name: Annotated[str, typer.Option(help="What the key is for.")],
    action: Annotated[list[str], typer.Option(help="Granted action; repeatable.")],
    days: Annotated[int, typer.Option(help="Lifetime in days.")] = 90,
    as_json: JsonOption = False,
) -> None:
    """Create an API key; its secret is shown once."""
    data = call(
        "POST",
        f"/v1/projects/{pid}/api-keys",
        json={"name": name, "actions": action, "expires_in_days": days},
    )
    if as_json:
        print_json(data)
        return
    console.print(f"API key {data['key_id']} (expires {data['expires_at']}):")
    console.print(f"  [bold]{data['secret']}[/]   (shown once; store it safely)")


@apikey_app.command("revoke")
@api_errors
def apikey_revoke(pid: Pid, key_id: str) -> None:
    """Revoke an API key."""
    call("DELETE", f"/v1/projects/{pid}/api-keys/{key_id}")
    console.print(f"revoked {key_id}")


@apikey_app.command("list")
@api_errors
def apikey_list(pid: Pid, as_json: JsonOption = False) -> None:
    """A project's API keys."""
    data = call("GET", f"/v1/projects/{pid}/api-keys")
    if as_json:
        print_json(data)
        return
    for key in data:
        state = "revoked" if key["revoked"] else f"expires {key['expires_at']}"
        console.print(f"{key['key_id']}  {key['name']:20} {','.join(key['actions'])}  {state}")


@api_errors
def audit_list(
    pid: Annotated[
        str | None, typer.Argument(help="Project id; omit for the platform log.")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Filter by actor.")] = None,
    action: Annotated[str | None, typer.Option(help="Filter by action.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many events.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Read audit events of a project (or the platform)."""
    params: dict[str, Any] = {"limit": limit}
    if actor:
        params["actor"] = actor
    if action:
        params["action"] = action
    path = f"/v1/projects/{pid}/audit" if pid else "/v1/audit"
    data = call("GET", path, params=params)
    if as_json:
        print_json(data)
        return
    table = Table("seq", "time", "actor", "action", "outcome", "target")
    for e in data["items"]:
        table.add_row(
            str(e["seq"]), e["ts"], e["actor"], e["action"], e["outcome"], e["target"] or ""
        )
    console.print(table)
