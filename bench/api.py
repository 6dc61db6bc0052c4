"""Benchmark the cost of authentication + authorization on a read endpoint.

One `hvelv serve` process (1 worker) on loopback; the same asyncio load generator hits
a trivial unauthenticated endpoint (/healthz) and an authenticated project read
(GET /v1/projects/{pid}: token verification, session check, membership, authorize(),
database read), each for the same duration with the same concurrency.

The default load generator is the plain keep-alive HTTP/1.1 one of ``bench/consent.py``
(``--client raw``): it costs a small fraction of the server's work, so the ratio is the
server's. ``--client httpx`` keeps the earlier httpx generator, which costs about as much
CPU per request as the trivial endpoint and so caps it (it printed ≈ 340-490 req/s for
``/healthz`` here, where the raw generator gets ≈ 3,000).

Usage: python bench/api.py [--seconds 8] [--concurrency 16] [--client raw|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import hvelv_command, server_process

from consent import cpu_seconds, load_raw  # bench/consent.py (this folder is on sys.path)
from hvelv.security import totp


async def load(
    url: str, headers: dict[str, str], seconds: float, concurrency: int
) -> tuple[float, int]:
    done = 0
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                response = await client.get(url, headers=headers)
                if response.status_code == 200:
                    done += 1
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return done / elapsed, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    args = parser.parse_args()

    def measure(url: str, headers: dict[str, str], seconds: float) -> tuple[float, int]:
        if args.client == "httpx":
            return asyncio.run(load(url, headers, seconds, args.concurrency))
        rate, _, errors = asyncio.run(
            load_raw([("GET", url, headers, None)] * args.concurrency, seconds)
        )
        return rate, errors

    def measure_cpu(
        pid: int, url: str, headers: dict[str, str], seconds: float
    ) -> tuple[float, int, float]:
        """(requests/s, errors, server CPU ms per request: user + system of all its threads)."""
        before = cpu_seconds(pid)
        rate, errors = measure(url, headers, seconds)
        used = cpu_seconds(pid) - before
        return rate, errors, used * 1000 / max(rate * seconds, 1)

    with tempfile.TemporaryDirectory(prefix="hvelv-bench-") as tmp:
        home = Path(tmp) / "home"
        env = {"HVELV_HOME": str(home), "HVELV_LOG_LEVEL": "WARNING"}
        init = subprocess.run(
            [*hvelv_command(), "init", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        creds = json.loads(init.stdout)
        with server_process(env, Path(tmp) / "server.log") as (url, process):
            token = httpx.post(
                f"{url}/v1/auth/token",
                json={
                    "username": creds["username"],
                    "password": creds["password"],
                    "totp_code": totp.current_code(creds["totp_secret"]),
                    "new_password": "benchmark passphrase",
                },
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            pid = httpx.post(
                f"{url}/v1/projects",
                headers=auth,
                json={
                    "name": "bench",
                    "ethics_ref": "REK 1",
                    "approval_start": "2020-01-01",
                    "approval_end": "2099-01-01",
                    "purposes": [{"code": "DUO:0000006"}],
                },
            ).json()["pid"]
            measure(f"{url}/healthz", {}, 1)  # warm-up
            trivial, e1, cpu1 = measure_cpu(process.pid, f"{url}/healthz", {}, args.seconds)
            authed, e2, cpu2 = measure_cpu(
                process.pid, f"{url}/v1/projects/{pid}", auth, args.seconds
            )
    print(
        f"concurrency {args.concurrency} ({args.client} client), {args.seconds:.0f} s each, "
        "1 server worker, loopback"
    )
    print(
        f"trivial GET /healthz:              {trivial:,.0f} req/s ({e1} errors), "
        f"server CPU {cpu1:.3f} ms/request"
    )
    print(
        f"authenticated GET /v1/projects/ID: {authed:,.0f} req/s ({e2} errors), "
        f"server CPU {cpu2:.3f} ms/request"
    )
    print(f"goal auth_rps_ratio = {authed / trivial:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
