"""Benchmark issue 4's consent goals in one run.

(a) bulk snapshot for 1,000,000 participants with random ledgers (the code of
    ``bench/consent_snapshot.py``): ``snapshot_1m_s`` and ``incremental_event_ms``;
(b) consent changes through the HTTP API: one ``hvelv serve`` process (1 worker, SQLite in a
    temporary home) and ``--concurrency`` clients (default 32), each a signed-in participant who
    grants and withdraws one item in turn (``POST /v1/participant/consents/{t}/items/{i}``: a
    ledger event with engine check, hash chain and audit event, committed). The trivial
    ``GET /healthz`` is measured in the same run with the same clients for comparison.

Goal lines:

    goal snapshot_1m_s = X (target <= 1)
    goal incremental_event_ms = Y (target <= 10)
    goal api_changes_per_s = V (target >= 500)
    goal api_p99_ms = V (target <= 100)

Usage: python bench/consent.py [--seconds 8] [--concurrency 32] [--participants 1000000]
       [--skip-snapshot]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.support.participants import national_id
from tests.support.server import hvelv_command, server_process

import consent_snapshot
from hvelv.config import load_settings
from hvelv.consent import access
from hvelv.consent.models import Participant
from hvelv.db.engine import Database
from hvelv.security import totp

TEMPLATE = {
    "title": "Bench consent",
    "texts": {"nb": "Jeg samtykker.", "en": "I consent."},
    "items": [
        {"item_id": "hmb", "effect": "permit", "purpose": {"code": "HMB"}, "actions": ["analyse"]},
        {"item_id": "gru", "effect": "permit", "purpose": {"code": "GRU"}, "actions": ["store"]},
    ],
}


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [*hvelv_command(), *args, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def login(url: str, creds: dict[str, Any]) -> dict[str, str]:
    response = httpx.post(
        f"{url}/v1/auth/token",
        json={
            "username": creds["username"],
            "password": creds["password"],
            "totp_code": totp.current_code(creds["totp_secret"]),
            "new_password": "benchmark passphrase",
        },
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json() if response.content else None


async def load_httpx(
    requests: list[tuple[str, str, dict[str, str], Any]], seconds: float
) -> tuple[float, list[float], int]:
    """One httpx client per request template; each repeats its request (with ``granted``
    flipped when it has a body) until the time is up. Returns (requests/s, latencies ms,
    errors). httpx costs about as much CPU per request as the server's trivial endpoint."""
    latencies: list[float] = []
    errors = 0
    concurrency = len(requests)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        deadline = time.perf_counter() + seconds

        async def worker(method: str, url: str, headers: dict[str, str], body: Any) -> None:
            nonlocal errors
            flip = False
            while time.perf_counter() < deadline:
                payload = None if body is None else {"granted": flip}
                flip = not flip
                t = time.perf_counter()
                response = await client.request(method, url, headers=headers, json=payload)
                latencies.append((time.perf_counter() - t) * 1000)
                if response.status_code != 200:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(*r) for r in requests))
        elapsed = time.perf_counter() - started
    return (len(latencies) - errors) / elapsed, latencies, errors


def _raw_request(method: str, url: str, headers: dict[str, str], body: bytes | None) -> bytes:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def load_raw(
    requests: list[tuple[str, str, dict[str, str], Any]], seconds: float
) -> tuple[float, list[float], int]:
    """As :func:`load_httpx` over plain keep-alive HTTP/1.1 connections (asyncio streams,
    requests prebuilt, responses read by Content-Length): the load generator then costs a
    small fraction of the server's work, so the figures are the server's."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(method: str, url: str, headers: dict[str, str], body: Any) -> None:
        nonlocal errors
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        prebuilt = [
            _raw_request(method, url, headers, None if body is None else json.dumps(b).encode())
            for b in ([None] if body is None else [{"granted": False}, {"granted": True}])
        ]
        n = 0
        try:
            while time.perf_counter() < deadline:
                request = prebuilt[n % len(prebuilt)]
                n += 1
                t = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                latencies.append((time.perf_counter() - t) * 1000)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(*r) for r in requests))
    elapsed = time.perf_counter() - started
    return (len(latencies) - errors) / elapsed, latencies, errors


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(root: int) -> list[int]:
    """The server process and its worker processes (``--workers``)."""
    children = Path(f"/proc/{root}/task/{root}/children")
    found = [int(c) for c in children.read_text().split()] if children.exists() else []
    return [root, *found]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")


def part_b(seconds: float, concurrency: int, client: str, workers: int) -> tuple[float, float]:
    load = load_raw if client == "raw" else load_httpx
    with tempfile.TemporaryDirectory(prefix="hvelv-bench-consent-") as tmp:
        home = Path(tmp) / "home"
        env = {"HVELV_HOME": str(home), "HVELV_LOG_LEVEL": "WARNING"}
        operator = cli(env, "init")
        manager = cli(env, "user", "create", "dm")
        with server_process(env, Path(tmp) / "server.log", workers=workers) as (url, process):
            op = login(url, operator)
            dm = login(url, manager)
            pid = ok(
                httpx.post(
                    f"{url}/v1/projects",
                    headers=op,
                    json={
                        "name": "bench",
                        "ethics_ref": "REK 1",
                        "approval_start": "2020-01-01",
                        "approval_end": "2099-01-01",
                        "purposes": [{"code": "DUO:0000006"}],
                    },
                )
            )["pid"]
            for role in ("data_manager", "auditor"):
                ok(
                    httpx.post(
                        f"{url}/v1/projects/{pid}/members",
                        headers=op,
                        json={"username": "dm", "role": role},
                    )
                )
            base = f"{url}/v1/projects/{pid}/consent"
            study = ok(httpx.post(f"{base}/studies", headers=dm, json={"name": "bench"}))
            template = ok(
                httpx.post(f"{base}/studies/{study['id']}/templates", headers=dm, json=TEMPLATE)
            )
            key, version = template["template_id"], template["version"]
            ok(httpx.post(f"{base}/templates/{key}/versions/{version}/publish", headers=dm))
            births = [dt.date(1950, 1, 1) + dt.timedelta(days=97 * i) for i in range(concurrency)]
            csv = "national_id\n" + "\n".join(national_id(b) for b in births)
            ok(httpx.post(f"{base}/participants/import", headers=dm, json={"csv": csv}))

            # participant sessions (the invitation + code steps are not what is measured)
            settings = load_settings(home=home)
            db = Database(settings.resolved_database_url)
            tokens: list[str] = []
            with db.write() as session:
                for p in session.query(Participant).filter_by(project_id=pid).all():
                    tokens.append(
                        access.open_session(session, settings, p, None, assurance="low").token
                    )
            db.dispose()
            participants = [{"Authorization": f"Bearer {t}"} for t in tokens]
            for headers in participants:
                ok(
                    httpx.post(
                        f"{url}/v1/participant/consents",
                        headers=headers,
                        json={"template_version": f"{key}.{version}", "choices": {"hmb": True}},
                    )
                )

            health = [("GET", f"{url}/healthz", {}, None)] * concurrency
            change_url = f"{url}/v1/participant/consents/{key}/items/hmb"
            changes = [("POST", change_url, h, {"granted": False}) for h in participants]
            asyncio.run(load(health, 1))  # warm-up
            asyncio.run(load(changes[:4], 1))
            pids = server_pids(process.pid)

            def cpu() -> float:
                return sum(cpu_seconds(p) for p in pids)

            before = cpu()
            trivial, trivial_ms, e1 = asyncio.run(load(health, seconds))
            middle = cpu()
            rate, change_ms, e2 = asyncio.run(load(changes, seconds))
            after = cpu()
            trivial_cpu = (middle - before) * 1000 / max(trivial * seconds, 1)
            change_cpu = (after - middle) * 1000 / max(rate * seconds, 1)
            verify = ok(httpx.get(f"{base}/ledger/verify", headers=dm))
    print(f"info api: {concurrency} clients ({client}), {seconds:.0f} s each, {workers} server "
          f"worker(s), SQLite (synchronous=FULL), loopback")  # fmt: skip
    print(f"info trivial GET /healthz: {trivial:,.0f} req/s, p99 {p99(trivial_ms):.1f} ms "
          f"({e1} errors), server CPU {trivial_cpu:.3f} ms/request")  # fmt: skip
    print(f"info consent change POST .../items/hmb: {rate:,.0f} changes/s, p50 "
          f"{sorted(change_ms)[len(change_ms) // 2]:.1f} ms, p99 {p99(change_ms):.1f} ms "
          f"({e2} errors), server CPU {change_cpu:.3f} ms/change; ledger verified: "
          f"{verify['events']} events")  # fmt: skip
    print(f"info changes/trivial ratio = {rate / trivial:.2f}")
    return rate, p99(change_ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--participants", type=int, default=1_000_000)
    parser.add_argument("--skip-snapshot", action="store_true", help="only part (b)")
    parser.add_argument(
        "--workers", type=int, default=1, help="server worker processes (hvelv serve --workers)"
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator: plain asyncio HTTP/1.1 (default) or httpx (costs more CPU)",
    )
    args = parser.parse_args()
    if not args.skip_snapshot:
        status = consent_snapshot.main(["--participants", str(args.participants)])
        if status:
            return status
    rate, latency = part_b(args.seconds, args.concurrency, args.client, args.workers)
    print(f"goal api_changes_per_s = {rate:.0f} (target >= 500)")
    print(f"goal api_p99_ms = {latency:.1f} (target <= 100)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
