"""The file commands against a live `hvelv serve` on loopback: real uploads (tus), real
downloads, resumption after the CLI process is killed, upload links, clear errors.

The server stores 64 KiB segments and parts here, so files of a few hundred KiB are
multi-segment and every PATCH spans many durable parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from hvelv.cli.main import app
from hvelv.cli.transfer import StateFile
from hvelv.security import totp
from tests.conftest import PROJECT_BODY
from tests.support.server import hvelv_command, running_server

runner = CliRunner()
SERVER_ENV = {
    "HVELV_SEGMENT_SIZE": "65536",
    "HVELV_UPLOAD_PART_BYTES": "65536",
    "HVELV_LOG_LEVEL": "WARNING",
}


@dataclass
class Live:
    url: str
    pid: str
    home: Path
    cli_config: Path
    env: dict[str, str]

    def token(self) -> str:
        return str(json.loads((self.cli_config / "session.json").read_text())["access_token"])

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}


def _cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*hvelv_command(), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """An instance with a project in which `ada` (owner and data manager) is logged in
    through `hvelv login`; every test gets its own folder names in it."""
    base = tmp_path_factory.mktemp("files-cli")
    home = base / "home"
    cli_config = base / "cli-config"
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("HVELV_")}
    env = {"HVELV_HOME": str(home), **SERVER_ENV}
    operator = json.loads(
        subprocess.run(
            [*hvelv_command(), "init", "--json"],
            env={**clean, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    ada = json.loads(_cli({**clean, **env}, "user", "create", "ada", "--json").stdout)
    with running_server(env, base / "server.log") as url:
        token = httpx.post(
            f"{url}/v1/auth/token",
            json={
                "username": operator["username"],
                "password": operator["password"],
                "totp_code": totp.current_code(operator["totp_secret"]),
                "new_password": "operator passphrase 1",
            },
        ).json()["access_token"]
        op = {"Authorization": f"Bearer {token}"}
        pid = httpx.post(f"{url}/v1/projects", json=PROJECT_BODY, headers=op).json()["pid"]
        for role in ("owner", "data_manager"):
            added = httpx.post(
                f"{url}/v1/projects/{pid}/members",
                json={"username": "ada", "role": role},
                headers=op,
            )
            assert added.status_code == 201, added.text
        cli_env = {"HVELV_CLI_CONFIG": str(cli_config), "COLUMNS": "200"}
        _cli(
            {**clean, **cli_env},
            "login",
            "--url",
            url,
            "--username",
            "ada",
            "--password",
            ada["password"],
            "--totp",
            totp.current_code(ada["totp_secret"]),
            "--new-password",
            "ada's own passphrase",
        )
        yield Live(url, pid, home, cli_config, {**cli_env, "HVELV_PROJECT": pid})


@pytest.fixture(autouse=True)
def _no_shell_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("HVELV_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(live: Live, *args: str, **env: str) -> Result:
    return runner.invoke(app, list(args), env={**live.env, **env}, catch_exceptions=False)


def ok(live: Live, *args: str, **env: str) -> Result:
    result = run(live, *args, **env)
    assert result.exit_code == 0, result.output
    return result


def refused(result: Result, *needles: str) -> None:
    """A clear failure: non-zero exit, one line naming the problem, no traceback."""
    assert result.exit_code != 0, result.output
    message = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in message, message
    assert "Traceback" not in result.output
    assert result.stderr.strip().startswith("error:")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(live: Live, prefix: str = "", area: str = "files") -> dict[str, dict[str, Any]]:
    result = ok(live, "ls", prefix, "--area", area, "--json")
    return {item["path"]: item for item in json.loads(result.stdout)}


def audit(live: Live, action: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{live.url}/v1/projects/{live.pid}/audit",
        params={"action": action, "limit": 1000},
        headers=live.headers(),
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def make_tree(root: Path) -> dict[str, bytes]:
    """A small directory tree: text, a multi-segment binary, an empty file, unicode."""
    files = {
        "a.txt": b"hello, cohort\n",
        "sub/b.bin": os.urandom(300_000),  # 5 segments of 64 KiB, not aligned
        "sub/deeper/empty.dat": b"",
        "sub/deeper/målinger.csv": b"id,value\n1,2\n",
        "exact.bin": os.urandom(2 * 65536),  # ends on a segment boundary
    }
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return files


# -- upload, list, download ---------------------------------------------------------------------


def test_upload_a_tree_list_it_and_download_it_bit_exact(live: Live, tmp_path: Path) -> None:
    tree = tmp_path / "tree1"
    files = make_tree(tree)
    # 100 000-byte PATCHes: several requests per file, none on a segment boundary
    result = ok(live, "upload", str(tree), "--to", "files", HVELV_CLI_CHUNK_BYTES="100000")
    assert "5 file(s)" in result.stdout
    assert "uploaded tree1/sub/b.bin" in result.stdout

    found = listing(live, "tree1/")
    assert set(found) == {f"tree1/{rel}" for rel in files}
    for rel, data in files.items():
        assert found[f"tree1/{rel}"]["size"] == len(data)
        assert found[f"tree1/{rel}"]["sha256"] == sha(data)
    assert found["tree1/sub/deeper/målinger.csv"]["content_type"] == "text/csv"

    plain = ok(live, "ls", "tree1/sub/").stdout.split("\n")
    assert plain[:3] == [
        "tree1/sub/b.bin",
        "tree1/sub/deeper/empty.dat",
        "tree1/sub/deeper/målinger.csv",
    ]
    long = ok(live, "ls", "tree1", "--long").stdout
    assert "ada" in long
    assert sha(files["a.txt"])[:12] in long
    assert "5 file(s)" in long

    out = tmp_path / "out"
    result = ok(live, "download", "tree1", "-o", str(out))
    assert "5 file(s) downloaded" in result.stdout
    for rel, data in files.items():
        assert (out / "tree1" / rel).read_bytes() == data
    assert not list(out.rglob("*.part"))

    # one file to a file name; a folder inside the tree; the same again is skipped
    ok(live, "download", "tree1/sub/b.bin", "-o", str(tmp_path / "copy.bin"))
    assert (tmp_path / "copy.bin").read_bytes() == files["sub/b.bin"]
    ok(live, "download", "tree1/sub/deeper", "-o", str(tmp_path / "d"))
    assert (tmp_path / "d" / "deeper" / "empty.dat").read_bytes() == b""
    again = ok(live, "download", "tree1/sub/b.bin", "-o", str(tmp_path / "copy.bin"))
    assert "0 file(s) downloaded, 1 already present" in again.stdout


def test_upload_contents_only_into_a_folder_and_single_files(live: Live, tmp_path: Path) -> None:
    tree = tmp_path / "tree2"
    files = make_tree(tree)
    ok(live, "upload", f"{tree}/", "--into", "batch/2026", "-q")
    assert set(listing(live, "batch/2026/")) == {f"batch/2026/{rel}" for rel in files}
    ok(live, "upload", str(tree / "a.txt"), str(tree / "sub" / "b.bin"), "--to", "import")
    found = listing(live, "", area="import")
    assert found["a.txt"]["sha256"] == sha(files["a.txt"])
    assert found["b.bin"]["sha256"] == sha(files["sub/b.bin"])


def test_sync_skips_files_with_the_same_sha256(live: Live, tmp_path: Path) -> None:
    tree = tmp_path / "tree3"
    files = make_tree(tree)
    ok(live, "upload", str(tree))
    before = listing(live, "tree3/")
    again = ok(live, "upload", str(tree), "--sync")
    assert "0 file(s)" in again.stdout
    assert "5 skipped" in again.stdout
    assert listing(live, "tree3/") == before  # nothing was replaced
    (tree / "a.txt").write_bytes(b"changed\n")
    third = ok(live, "upload", str(tree), "--sync")
    assert "uploaded tree3/a.txt" in third.stdout
    assert "4 skipped" in third.stdout
    after = listing(live, "tree3/")
    assert after["tree3/a.txt"]["sha256"] == sha(b"changed\n")
    assert after["tree3/sub/b.bin"] == before["tree3/sub/b.bin"]
    assert len(files) == 5


def test_parallel_upload_concatenates_partials_into_the_same_file(
    live: Live, tmp_path: Path
) -> None:
    data = os.urandom(13 * 1024 * 1024 + 12345)
    (tmp_path / "big.bin").write_bytes(data)
    ok(live, "upload", str(tmp_path / "big.bin"), "--into", "par", "--parallel", "3")
    assert listing(live, "par/")["par/big.bin"]["sha256"] == sha(data)
    ok(live, "download", "par/big.bin", "-o", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    partials = audit(live, "files.upload_partial")
    assert len(partials) == 3
    # the CLI tells each partial's place: only the first one is hashed as it arrives
    first = data[: len(data) // 3]
    assert sorted(str(e["details"].get("sha256")) for e in partials) == sorted(
        [sha(first), "None", "None"]
    )


def test_move_delete_trash_and_restore(live: Live, tmp_path: Path) -> None:
    tree = tmp_path / "tree4"
    files = make_tree(tree)
    ok(live, "upload", str(tree), "-q")
    assert "moved 1 file(s)" in ok(live, "mv", "tree4/a.txt", "tree4/renamed.txt").stdout
    assert "moved 3 file(s)" in ok(live, "mv", "tree4/sub", "moved4/sub").stdout
    assert set(listing(live, "moved4/")) == {
        "moved4/sub/b.bin",
        "moved4/sub/deeper/empty.dat",
        "moved4/sub/deeper/målinger.csv",
    }
    gone = ok(live, "rm", "tree4/renamed.txt").stdout
    assert "trashed tree4/renamed.txt" in gone
    assert "tree4/renamed.txt" not in listing(live, "tree4/")
    trashed = {t["path"]: t for t in json.loads(ok(live, "trash", "--json").stdout)}
    file_id = trashed["tree4/renamed.txt"]["id"]
    assert file_id in ok(live, "trash").stdout
    ok(live, "restore", file_id, "--to", "tree4/back.txt")
    assert listing(live, "tree4/")["tree4/back.txt"]["sha256"] == sha(files["a.txt"])
    refused(run(live, "rm", "moved4/sub"), "no file 'moved4/sub'", "--recursive")
    assert "trashed moved4/sub/b.bin" in ok(live, "rm", "-r", "moved4").stdout
    assert listing(live, "moved4/") == {}
    refused(run(live, "mv", "tree4/exact.bin", "tree4/back.txt"), "HTTP 409")


# -- resumption -------------------------------------------------------------------------------


def _wait_for(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_a_killed_upload_resumes_where_the_server_stopped(live: Live, tmp_path: Path) -> None:
    data = os.urandom(8 * 1024 * 1024 + 777)
    source = tmp_path / "resume.bin"
    source.write_bytes(data)
    state = StateFile(live.cli_config / "transfers.json")
    args = [*hvelv_command(), "upload", str(source), "--into", "resume", "-q"]
    env = {**os.environ, **live.env, "HVELV_CLI_TEST_STALL_AFTER_BYTES": str(5 * 1024 * 1024)}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:

        def upload_url() -> str | None:
            entries = state._load().get("uploads", {})
            mine = [v["url"] for k, v in entries.items() if '"resume/resume.bin"' in k]
            return mine[0] if mine else None

        url = _wait_for(upload_url)

        def offset() -> int:
            head = httpx.head(live.url + url, headers={**live.headers(), "Tus-Resumable": "1.0.0"})
            return int(head.headers["Upload-Offset"])

        # the server made at least 1 MiB durable; the CLI is stuck mid-PATCH: kill it
        _wait_for(lambda: offset() >= 1024 * 1024)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        process.stderr.close()
    stopped_at = offset()
    assert 1024 * 1024 <= stopped_at < len(data)
    assert "resume/resume.bin" not in listing(live, "resume/")

    result = ok(live, "upload", str(source), "--into", "resume")
    assert "uploaded resume/resume.bin" in result.stdout
    assert listing(live, "resume/")["resume/resume.bin"]["sha256"] == sha(data)
    assert upload_url() is None  # the finished upload left no state behind
    # it continued the same upload rather than starting another one
    starts = audit(live, "files.upload_start")
    assert [e["target"] for e in starts].count("files:resume/resume.bin") == 1
    completes = audit(live, "files.upload")
    assert sum(e["target"] == "files:resume/resume.bin" for e in completes) == 1


def test_a_killed_parallel_upload_resumes_its_partial_uploads(live: Live, tmp_path: Path) -> None:
    data = os.urandom(10 * 1024 * 1024 + 4321)
    source = tmp_path / "par-resume.bin"
    source.write_bytes(data)
    state = StateFile(live.cli_config / "transfers.json")
    partial_starts = [
        e for e in audit(live, "files.upload_start") if e["target"] == "files:partial"
    ]
    args = [*hvelv_command(), "upload", str(source), "--into", "presume", "--parallel", "2"]
    env = {**os.environ, **live.env, "HVELV_CLI_TEST_STALL_AFTER_BYTES": str(7 * 1024 * 1024)}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:

        def parts() -> list[str] | None:
            entries = state._load().get("uploads", {})
            mine = [v for k, v in entries.items() if '"presume/par-resume.bin"' in k]
            return [p["url"] for p in mine[0]["parts"]] if mine else None

        urls = _wait_for(parts)
        assert len(urls) == 2

        def offsets() -> list[int]:
            heads = [
                httpx.head(live.url + url, headers={**live.headers(), "Tus-Resumable": "1.0.0"})
                for url in urls
            ]
            return [int(head.headers["Upload-Offset"]) for head in heads]

        _wait_for(lambda: sum(offsets()) >= 2 * 1024 * 1024)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        process.stderr.close()
    assert sum(offsets()) < len(data)
    assert "presume/par-resume.bin" not in listing(live, "presume/")

    ok(live, "upload", str(source), "--into", "presume", "--parallel", "2")
    assert listing(live, "presume/")["presume/par-resume.bin"]["sha256"] == sha(data)
    assert parts() is None
    # the same two partial uploads were continued and concatenated
    after = [e for e in audit(live, "files.upload_start") if e["target"] == "files:partial"]
    assert len(after) == len(partial_starts) + 2
    uploaded = [
        e for e in audit(live, "files.upload") if e["target"] == "files:presume/par-resume.bin"
    ]
    assert len(uploaded) == 1
    assert sorted(uploaded[0]["details"]["partials"]) == sorted(
        url.rsplit("/", 1)[-1] for url in urls
    )


def test_a_partial_download_resumes_with_a_range_and_bad_bytes_are_caught(
    live: Live, tmp_path: Path
) -> None:
    data = os.urandom(500_000)
    (tmp_path / "dl.bin").write_bytes(data)
    ok(live, "upload", str(tmp_path / "dl.bin"), "--into", "dl")
    target = tmp_path / "got.bin"
    part = tmp_path / "got.bin.part"
    state = StateFile(live.cli_config / "transfers.json")

    # an interrupted download: the first 200 000 bytes are there
    part.write_bytes(data[:200_000])
    state.put("downloads", str(part.resolve()), {"sha256": sha(data)})
    ok(live, "download", "dl/dl.bin", "-o", str(target))
    assert target.read_bytes() == data
    assert not part.exists()
    ranges = [e["details"]["range"] for e in audit(live, "files.download")]
    assert [200_000, 500_000] in ranges  # only the missing bytes were fetched

    # a damaged partial file: the end-to-end check refuses it and removes it
    target.unlink()
    part.write_bytes(b"X" * 1000 + data[1000:200_000])
    state.put("downloads", str(part.resolve()), {"sha256": sha(data)})
    refused(run(live, "download", "dl/dl.bin", "-o", str(target)), "INTEGRITY FAILURE")
    assert not target.exists()
    assert not part.exists()
    ok(live, "download", "dl/dl.bin", "-o", str(target))
    assert target.read_bytes() == data


# -- upload links -------------------------------------------------------------------------------


def test_an_upload_link_delivers_into_import_without_a_login(live: Live, tmp_path: Path) -> None:
    created = json.loads(
        ok(live, "link", "create", "--label", "lab partner", "--max-uses", "2", "--json").stdout
    )
    token, upload_url = created["token"], created["upload_url"]
    assert token.startswith("hvl_")
    data = os.urandom(200_000)
    (tmp_path / "delivery.bin").write_bytes(data)
    stranger = tmp_path / "no-login"  # an empty CLI config: nobody is logged in
    stranger.mkdir()
    args = ["upload", str(tmp_path / "delivery.bin"), "--link", token, "--url", upload_url]
    result = run(live, *args, HVELV_CLI_CONFIG=str(stranger), HVELV_CLI_CHUNK_BYTES="70000")
    assert result.exit_code == 0, result.output
    assert "uploaded delivery.bin" in result.stdout
    assert listing(live, "", area="import")["delivery.bin"]["sha256"] == sha(data)
    assert not (stranger / "session.json").exists()

    links = json.loads(ok(live, "link", "list", "--json").stdout)
    mine = next(link for link in links if link["id"] == created["id"])
    assert mine["uses"] == 1
    assert "lab partner" in ok(live, "link", "list").stdout
    refused(
        run(live, *args, "--to", "files", HVELV_CLI_CONFIG=str(stranger)),
        "import area only",
    )
    ok(live, "link", "revoke", created["id"])
    refused(run(live, *args, HVELV_CLI_CONFIG=str(stranger)), "HTTP 401")


# -- clear errors -------------------------------------------------------------------------------


def test_clear_errors(live: Live, tmp_path: Path) -> None:
    refused(run(live, "upload", str(tmp_path / "missing.txt")), "no such file or directory")
    refused(run(live, "download", "nowhere/nothing.txt"), "no file or folder 'nowhere/nothing.txt'")
    refused(run(live, "mv", "a.txt", "../escape.txt"), "invalid file path")
    refused(run(live, "restore", "0" * 32), "HTTP 404")
    (tmp_path / "bad\\name.txt").write_bytes(b"x")
    refused(run(live, "upload", str(tmp_path / "bad\\name.txt")), "cannot be a file name")
    refused(run(live, "ls", "--project", "p9999"), "HTTP 403")
    refused(
        run(live, "upload", str(tmp_path / "bad\\name.txt"), "--link", "nope", "--url", "x"), "hvl_"
    )
    wrong_area = run(live, "ls", "--area", "attic")
    assert wrong_area.exit_code == 2
    assert "attic" in wrong_area.output


@pytest.mark.parametrize(
    "args",
    [
        ("upload", "x"),
        ("download", "x"),
        ("ls",),
        ("mv", "a", "b"),
        ("rm", "a"),
        ("trash",),
        ("restore", "0" * 32),
        ("link", "create", "--label", "x"),
        ("link", "list"),
        ("link", "revoke", "0" * 12),
    ],
    ids=" ".join,
)
def test_file_commands_need_a_login(args: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x")
    result = runner.invoke(
        app, [*args, "-p", "p1001"], env={"HVELV_CLI_CONFIG": str(tmp_path / "empty")}
    )
    refused(result, "not logged in", "hvelv login")
