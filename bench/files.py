"""Benchmark file transfer through the API against the disk it lands on.

One `hvelv serve` process (1 worker, SQLite, local blob store) on loopback, its home in a
temporary directory on the same filesystem as the measurements. In one run:

* ``dd if=/dev/zero bs=4M conv=fdatasync`` of the same size: the disk's durable write speed;
* upload of a file of random bytes (written beforehand, so page-cached) with the CLI's tus
  client (`hvelv upload` code: streamed 256 MiB PATCHes, SHA-256 verified against the
  server's afterwards), single stream and ``--parallel 4`` (tus concatenation);
* download of the stored file through the API (streamed, discarded) against reading the
  raw stored object file (the encrypted segments under HOME/blobs/objects) with
  ``dd of=/dev/null`` (both page-cached, as the object was just written);
* the peak RSS (VmHWM) of a freshly started server process while a file of
  ``--rss-size-mib`` is uploaded and downloaded.

Every timed write and cold read, baseline and API alike, starts from a settled machine:
``--settle-seconds`` (15) after the last large free. On the virtual machines here, memory
the guest freed a moment ago is filled several times faster than memory the host has taken
back: dd of 1 GiB with fdatasync measured 1.7 GB/s right after 4 GiB were deleted, 800 MB/s
5 s later and 330 MB/s from 15 s on. Without the pause each figure reports how recently the
run before it freed memory (a run started right after another gave dd 1.5 GB/s and the same
uploads 430 MiB/s). ``dd oflag=direct`` (no page cache) is printed for context.

Usage: python bench/files.py [--size-mib 1024] [--rss-size-mib 4096] [--dir DIR]
    [--settle-seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.server import hvelv_command
from tests.support.server import server_process as server

from hvelv.cli.transfer import LocalFile, Remote, Uploader
from hvelv.security import totp

MiB = 1024 * 1024
BLOCK = 4 * MiB


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Phase:
    """Wall time and the CPU time of the server and of this process (the client)."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid

    def __enter__(self) -> Phase:
        self.started = time.perf_counter()
        self.server0 = cpu_seconds(self.pid)
        self.client0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.server_cpu = cpu_seconds(self.pid) - self.server0
        self.client_cpu = time.process_time() - self.client0

    def cpu(self) -> str:
        return (
            f"server CPU {self.server_cpu / self.seconds:.0%}, "
            f"client CPU {self.client_cpu / self.seconds:.0%} of one core"
        )


def dd_write(path: Path, size_mib: int, *flags: str) -> float:
    """Seconds for dd to write ``size_mib`` MiB of zeros and fdatasync them."""
    started = time.perf_counter()
    subprocess.run(
        [
            "dd",
            "if=/dev/zero",
            f"of={path}",
            "bs=4M",
            f"count={size_mib // 4}",
            "conv=fdatasync",
            *flags,
        ],
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - started
    path.unlink()
    return elapsed


def dd_read(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4M"], check=True, capture_output=True)
    return time.perf_counter() - started


def random_file(path: Path, size_mib: int, seed: Path | None = None) -> None:
    """Random bytes (or copies of ``seed``'s random bytes), synced (so that no writeback
    competes with what is measured next) and left in the page cache."""
    with path.open("wb") as out:
        if seed is None:
            for _ in range(size_mib // 4):
                out.write(os.urandom(BLOCK))
        else:
            left = size_mib * MiB
            while left:
                with seed.open("rb") as src:
                    while left and (data := src.read(min(BLOCK, left))):
                        out.write(data)
                        left -= len(data)
        out.flush()
        os.fsync(out.fileno())


def api_download(remote: Remote, area: str, path: str) -> tuple[float, int]:
    """Seconds to stream a file through the API (bytes discarded) and bytes received;
    with curl when it is installed (a client that costs less CPU than httpx)."""
    url = remote.base_url + remote.content_url(area, path)
    if shutil.which("curl"):
        auth = remote.auth()["Authorization"]
        started = time.perf_counter()
        done = subprocess.run(
            [
                "curl",
                "-sfS",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                "-H",
                f"Authorization: {auth}",
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return time.perf_counter() - started, int(done.stdout)
    got = 0
    started = time.perf_counter()
    with remote.http.stream(
        "GET", remote.content_url(area, path), headers=remote.auth()
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(MiB):
            got += len(chunk)
    return time.perf_counter() - started, got


def evict(path: Path) -> None:
    """Drop a (synced) file's pages from the page cache, so the next read is from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def new_objects(root: Path, before: set[Path]) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p not in before]


def setup(url: str, home: Path, env: dict[str, str]) -> Remote:
    """An operator creates a project; a data manager logs in; a Remote for them."""
    run_env = {**os.environ, **env}
    op = json.loads(
        subprocess.run(
            [*hvelv_command(), "user", "create", "benchop", "--operator", "--json"],
            env=run_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    user = json.loads(
        subprocess.run(
            [*hvelv_command(), "user", "create", "bench", "--json"],
            env=run_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )

    def token(creds: dict[str, Any], new_password: str) -> str:
        response = httpx.post(
            f"{url}/v1/auth/token",
            json={
                "username": creds["username"],
                "password": creds["password"],
                "totp_code": totp.current_code(creds["totp_secret"]),
                "new_password": new_password,
            },
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    op_auth = {"Authorization": f"Bearer {token(op, 'benchmark operator 1')}"}
    pid = httpx.post(
        f"{url}/v1/projects",
        headers=op_auth,
        json={
            "name": "bench",
            "ethics_ref": "REK 1",
            "approval_start": "2020-01-01",
            "approval_end": "2099-01-01",
            "purposes": [{"code": "DUO:0000006"}],
        },
    ).json()["pid"]
    httpx.post(
        f"{url}/v1/projects/{pid}/members",
        headers=op_auth,
        json={"username": "bench", "role": "data_manager"},
    ).raise_for_status()
    auth = {"Authorization": f"Bearer {token(user, 'benchmark member 1')}"}
    http = httpx.Client(base_url=url, timeout=httpx.Timeout(60.0, read=600.0, write=600.0))
    return Remote(url, pid, http, lambda: auth)


def rate(size_mib: int, seconds: float) -> float:
    return size_mib / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-size-mib", type=int, default=4096)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument(
        "--dir", type=Path, default=None, help="Where to work (default: the system temp dir)."
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=15.0,
        help="Pause before every timed write and cold read (0 to see the unsettled figures).",
    )
    args = parser.parse_args()

    def settle() -> None:
        """Wait until memory freed by the previous phase is no longer cheaper to fill than
        any other (see the module docstring)."""
        time.sleep(args.settle_seconds)

    size = args.size_mib - args.size_mib % 4
    rss_size = args.rss_size_mib - args.rss_size_mib % 4
    with tempfile.TemporaryDirectory(prefix="hvelv-bench-files-", dir=args.dir) as tmp:
        work = Path(tmp)
        home = work / "home"
        env = {
            "HVELV_HOME": str(home),
            "HVELV_LOG_LEVEL": "WARNING",
            "HVELV_ACCESS_TOKEN_TTL_SECONDS": "3600",
        }
        subprocess.run(
            [*hvelv_command(), "init", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            check=True,
        )
        print(f"working in {work} ({shutil.disk_usage(work).free // 2**30} GiB free)")

        source = work / "source.bin"
        random_file(source, size)
        direct_rate = rate(size, dd_write(work / "dd.bin", size, "oflag=direct"))
        # the disk's speed varies from minute to minute here: dd before, between and
        # after the uploads, and the median is the baseline
        settle()
        dd_rates = [rate(size, dd_write(work / "dd.bin", size))]
        objects = home / "blobs" / "objects"
        with server(env, work / "server.log") as (url, process):
            remote = setup(url, home, env)
            start_mib = status_kb(process.pid, "VmRSS") / 1024
            print(f"server VmRSS after start-up:         {start_mib:7.0f} MiB")
            before = set(objects.rglob("*"))

            single = Uploader(remote, "files")
            settle()
            with Phase(process.pid) as phase:
                single.upload(LocalFile.of(source, "single.bin"))
            up_s = phase.seconds
            up_rate = rate(size, up_s)
            settle()
            dd_rates.append(rate(size, dd_write(work / "dd.bin", size)))
            print(
                f"upload, 1 stream (encrypt+fsync):    {up_rate:7.0f} MiB/s ({up_s:.2f} s; "
                f"{phase.cpu()})"
            )
            stored = new_objects(objects, before)
            blob = max(stored, key=lambda p: p.stat().st_size)

            before = set(objects.rglob("*"))
            parallel = Uploader(remote, "files", parallel=args.parallel)
            settle()
            with Phase(process.pid) as phase:
                parallel.upload(LocalFile.of(source, "parallel.bin"))
            par_s = phase.seconds
            par_rate = rate(size, par_s)
            settle()
            dd_rates.append(rate(size, dd_write(work / "dd.bin", size)))
            dd_rate = statistics.median(dd_rates)
            print(
                f"dd bs=4M conv=fdatasync, {size} MiB:  {dd_rate:7.0f} MiB/s median of "
                + ", ".join(f"{r:.0f}" for r in dd_rates)
                + f" ({direct_rate:.0f} MiB/s with oflag=direct, past the page cache)"
            )
            print(
                f"upload, --parallel {args.parallel}:                {par_rate:7.0f} MiB/s "
                f"({par_s:.2f} s; {phase.cpu()})"
            )

            raw_mib = blob.stat().st_size / MiB
            dd_read(blob)
            raw_hot = raw_mib / dd_read(blob)
            api_download(remote, "files", "single.bin")  # warm-up
            # reads from disk vary from run to run here as much as writes: alternate the
            # raw read and the download, three of each, and compare the medians
            raw_colds: list[float] = []
            down_colds: list[float] = []
            for _ in range(3):
                evict(blob)
                settle()
                raw_colds.append(raw_mib / dd_read(blob))
                evict(blob)
                settle()
                with Phase(process.pid) as cold_phase:
                    _, got = api_download(remote, "files", "single.bin")
                assert got == size * MiB, got
                down_colds.append(rate(size, cold_phase.seconds))
            raw_cold = statistics.median(raw_colds)
            down_cold = statistics.median(down_colds)
            print(
                f"raw read of the stored object:       {raw_cold:7.0f} MiB/s from disk (median of "
                + ", ".join(f"{r:.0f}" for r in raw_colds)
                + f"), {raw_hot:.0f} MiB/s page-cached ({raw_mib:.0f} MiB, dd bs=4M of=/dev/null)"
            )
            dd_read(blob)  # page-cached again
            with Phase(process.pid) as phase:
                _, got = api_download(remote, "files", "single.bin")
            down_hot = rate(size, phase.seconds)
            print(
                f"download through the API:            {down_cold:7.0f} MiB/s from disk (median of "
                + ", ".join(f"{r:.0f}" for r in down_colds)
                + f"; {cold_phase.cpu()}), {down_hot:.0f} MiB/s page-cached ({phase.cpu()})"
            )
            settle()
            par_down_s, _ = api_download(remote, "files", "parallel.bin")
            print(
                f"download of the concatenated file:   {rate(size, par_down_s):7.0f} MiB/s "
                f"(from disk: uploaded parts are not kept in the page cache)"
            )
            hwm_first = status_kb(process.pid, "VmHWM")
            print(
                f"server VmHWM after these phases:     {hwm_first / 1024:7.0f} MiB "
                "(peak of the uploads and downloads above)"
            )
            for name in ("single.bin", "parallel.bin"):
                remote.json("DELETE", remote.content_url("files", name))
        big = work / "rss.bin"
        random_file(big, rss_size, seed=source)
        source.unlink()
        # a fresh server process: its peak RSS is that of this one upload and download
        with server(env, work / "server2.log") as (url, process):
            remote = Remote(url, remote.pid, httpx.Client(base_url=url), remote.auth)
            remote.http.timeout = httpx.Timeout(60.0, read=600.0, write=600.0)
            start_kb = status_kb(process.pid, "VmRSS")
            with Phase(process.pid) as up:
                Uploader(remote, "files").upload(LocalFile.of(big, "rss.bin"))
            with Phase(process.pid) as down:
                _, got = api_download(remote, "files", "rss.bin")
            assert got == rss_size * MiB
            peak_kb = status_kb(process.pid, "VmHWM")
            now_kb = status_kb(process.pid, "VmRSS")
            print(
                f"{rss_size} MiB on a fresh server:     upload {rate(rss_size, up.seconds):.0f} "
                f"MiB/s, download {rate(rss_size, down.seconds):.0f} MiB/s; VmRSS at start "
                f"{start_kb / 1024:.0f} MiB, VmHWM {peak_kb / 1024:.0f} MiB, "
                f"VmRSS at the end {now_kb / 1024:.0f} MiB"
            )
            remote.http.close()
        big.unlink()
    peak_mb = peak_kb * 1024 / 1e6
    print(f"goal upload_vs_dd = {up_rate / dd_rate:.2f} (target >= 0.8)")
    print(f"goal parallel_upload_vs_dd = {par_rate / dd_rate:.2f} (target >= 0.8)")
    print(f"download_vs_raw page-cached = {down_hot / raw_hot:.2f} (AES-GCM vs memory copy)")
    print(f"goal download_vs_raw = {down_cold / raw_cold:.2f} (target >= 0.8)")
    print(f"goal server_peak_rss_mb = {peak_mb:.0f} (target <= 250)")


if __name__ == "__main__":
    main()
