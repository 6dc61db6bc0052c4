"""The scripted walk of the core issue, against a live server process over HTTP:
init → operator logs in with MFA → creates a project in under a second → adds an owner →
the owner logs in with MFA and sees it → another project's member gets 403 → the audit
log shows it all → `hvelv audit verify` passes, and fails after a row is edited."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from hvelv.security import totp
from tests.conftest import PROJECT_BODY
from tests.support.server import hvelv_command, running_server


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*hvelv_command(), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mfa_login(url: str, creds: dict[str, Any], new_password: str | None = None) -> str:
    body = {
        "username": creds["username"],
        "password": creds["password"],
        "totp_code": totp.current_code(creds["totp_secret"]),
    }
    if new_password:
        body["new_password"] = new_password
    response = httpx.post(f"{url}/v1/auth/token", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_scripted_walk(tmp_path: Path, database_for: Any) -> None:
    home = tmp_path / "home"
    env = {"HVELV_HOME": str(home), "HVELV_DATABASE_URL": database_for(home)}
    init = run_cli(env, "init", "--json")
    assert init.returncode == 0, init.stderr
    operator = json.loads(init.stdout)
    with running_server(env, tmp_path / "server.log") as url:
        op_token = mfa_login(url, operator, new_password="operator passphrase 1")
        op = {"Authorization": f"Bearer {op_token}"}
        started = time.perf_counter()
        created = httpx.post(f"{url}/v1/projects", json=PROJECT_BODY, headers=op)
        assert created.status_code == 201
        assert time.perf_counter() - started < 1.0
        pid = created.json()["pid"]
        other = httpx.post(f"{url}/v1/projects", json=PROJECT_BODY, headers=op).json()["pid"]
        owner = httpx.post(f"{url}/v1/users", json={"username": "pi"}, headers=op).json()
        stranger = run_cli(env, "user", "create", "stranger", "--json")
        assert stranger.returncode == 0, stranger.stderr
        stranger_creds = json.loads(stranger.stdout)
        assert (
            httpx.post(
                f"{url}/v1/projects/{pid}/members",
                json={"username": "pi", "role": "owner"},
                headers=op,
            ).status_code
            == 201
        )
        assert (
            httpx.post(
                f"{url}/v1/projects/{other}/members",
                json={"username": "stranger", "role": "member"},
                headers=op,
            ).status_code
            == 201
        )
        # the owner enrols TOTP at first login and sets a password
        enrol = httpx.post(
            f"{url}/v1/auth/totp/enrol",
            json={"username": "pi", "password": owner["one_time_password"]},
        ).json()
        pi = {
            "username": "pi",
            "password": owner["one_time_password"],
            "totp_secret": enrol["secret"],
        }
        pi_token = mfa_login(url, pi, new_password="principal investigator")
        pi_headers = {"Authorization": f"Bearer {pi_token}"}
        mine = httpx.get(f"{url}/v1/projects", headers=pi_headers).json()["items"]
        assert [p["pid"] for p in mine] == [pid]
        stranger_token = mfa_login(url, stranger_creds, new_password="a stranger passphrase")
        refused = httpx.get(
            f"{url}/v1/projects/{pid}", headers={"Authorization": f"Bearer {stranger_token}"}
        )
        assert refused.status_code == 403
        audit = httpx.get(f"{url}/v1/projects/{pid}/audit", headers=pi_headers).json()["items"]
        actions = [(e["action"], e["outcome"]) for e in audit]
        assert ("project.create", "success") in actions
        assert ("member.add", "success") in actions
        assert ("project.read", "denied") in actions
        platform_log = httpx.get(f"{url}/v1/audit", headers=op).json()["items"]
        assert {"user.create", "auth.login"} <= {e["action"] for e in platform_log}
    ok = run_cli(env, "audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout
    engine = create_engine(env["HVELV_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'user:nobody' WHERE seq = 3"))
    engine.dispose()
    tampered = run_cli(env, "audit", "verify")
    assert tampered.returncode == 1
    assert "event 3" in tampered.stderr + tampered.stdout
