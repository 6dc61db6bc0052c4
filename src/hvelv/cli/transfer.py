"""Moving bytes for the file commands: a tus 1.0.0 client on httpx, resumable downloads.

* Memory stays bounded: request bodies are generators that read ``BLOCK`` bytes at a time
  from the file (a PATCH carries at most ``chunk`` bytes, 256 MiB by default), downloads are
  written as they arrive.
* Uploads resume across interruptions: the upload URL(s) of every unfinished upload are
  kept in a local state file keyed by server, project, area, remote path and the local
  file's path, size and modification time; the next run asks the server (``HEAD``) where
  to continue. Downloads resume from ``DEST.part`` with ``Range`` + ``If-Range``.
* Everything is verified end to end: the local SHA-256 is compared with the server's
  (``X-Content-SHA256``) after an upload and with the downloaded bytes after a download.
  Uploads through an upload link cannot read the file back, so each PATCH carries an
  ``Upload-Checksum`` (sha256) that the server checks before it keeps the bytes.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import mimetypes
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx

from hvelv.cli.client import ApiError, Client, StoredLogin, config_dir, raise_for

BLOCK: Final = 1024 * 1024  # bytes read from or written to a file at a time
# bytes per PATCH: the server stores parts as they arrive, and each PATCH ends by waiting
# for its last part to be durable, so fewer, longer PATCHes keep the disk busy (256 MiB
# measured 10-20 % faster than 64 MiB); an interruption loses no more than before
CHUNK: Final = 256 * 1024 * 1024
LINK_CHUNK: Final = 16 * 1024 * 1024  # per PATCH with Upload-Checksum (the server buffers it)
MIN_PARTIAL: Final = 4 * 1024 * 1024  # smaller files are not split for --parallel
TUS: Final = {"Tus-Resumable": "1.0.0"}
OCTETS: Final = "application/offset+octet-stream"
PART_INDEX: Final = "partIndex"  # Upload-Metadata: a partial's place (as hvelv.files.uploads)
STATE_DAYS: Final = 30  # forget unfinished transfers after this long
RETRIES: Final = 5
LOCK_WAIT: Final = 120.0  # seconds to wait for a stale lease of an interrupted PATCH
# test hook: stall (as if the network hung) once this many bytes were sent, so that a test
# can kill the process at a known point; never set in normal use
STALL_ENV: Final = "HVELV_CLI_TEST_STALL_AFTER_BYTES"
CHUNK_ENV: Final = "HVELV_CLI_CHUNK_BYTES"


class TransferError(Exception):
    """A transfer failed; the message is one line for the user."""


Meter = Callable[[int], None]


def _no_meter(_: int) -> None:
    return None


# -- where requests go --------------------------------------------------------------------


@dataclass
class Remote:
    """A server and project, and how to authenticate: a stored login or an upload link."""

    base_url: str
    pid: str
    http: httpx.Client
    auth: Callable[[], dict[str, str]]
    link: bool = False

    @classmethod
    def from_login(cls, project: str | None) -> Remote:
        login = StoredLogin.load()
        if login is None:
            raise TransferError("not logged in; run `hvelv login` first")
        pid = project or login.scope_project
        if not pid:
            raise TransferError("name the project with --project (or set HVELV_PROJECT)")
        client = Client(login)
        client.http.timeout = _timeout()
        return cls(login.url.rstrip("/"), pid, client.http, client.auth_headers)

    @classmethod
    def from_link(cls, token: str, url: str, project: str | None) -> Remote:
        """``url`` is the link's upload URL (``.../v1/projects/P/files/import/uploads``)
        or the server's base URL together with ``project``."""
        if not token.startswith("hvl_"):
            raise TransferError("an upload link token starts with hvl_")
        match = re.match(r"^(https?://[^/]+.*?)/v1/projects/(p[0-9]+)(/.*)?$", url.strip())
        if match:
            base, pid = match.group(1), match.group(2)
            if project and project != pid:
                raise TransferError(f"the link's URL is for project {pid}, not {project}")
        elif re.match(r"^https?://", url):
            if not project:
                raise TransferError("give the link's upload URL, or --project with the server URL")
            base, pid = url.rstrip("/"), project
        else:
            raise TransferError(f"not an http(s) URL: {url}")
        http = httpx.Client(base_url=base, timeout=_timeout())
        header = {"Authorization": f"Bearer {token}"}
        return cls(base, pid, http, lambda: header, link=True)

    def area_url(self, area: str) -> str:
        return f"/v1/projects/{self.pid}/files/{area}"

    def content_url(self, area: str, path: str) -> str:
        return f"{self.area_url(area)}/content/{quote(path, safe='/')}"

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth(), **kwargs.pop("headers", {})}
        try:
            return self.http.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise TransferError(f"cannot reach {self.base_url}: {_describe(exc)}") from None

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.call(method, url, **kwargs)
        raise_for(response)
        return response.json() if response.content else None

    def listing(self, area: str, prefix: str = "", **params: Any) -> Iterator[dict[str, Any]]:
        """Every file of the area under ``prefix``, page by page."""
        cursor: str | None = None
        while True:
            query: dict[str, Any] = {"prefix": prefix, "limit": 1000, **params}
            if cursor:
                query["cursor"] = cursor
            page = self.json("GET", self.area_url(area), params=query)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


def _timeout() -> httpx.Timeout:
    # a PATCH may wait for the server to store and fsync its last part
    return httpx.Timeout(60.0, read=600.0, write=600.0)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


# -- local state of unfinished transfers ------------------------------------------------------


class StateFile:
    """A small JSON file (0600) of unfinished uploads and downloads; safe across threads."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "transfers.json"
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        cutoff = time.time() - STATE_DAYS * 86400
        for section in data.values():
            for key in [k for k, v in section.items() if v.get("at", 0) < cutoff]:
                del section[key]
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, self.path)

    def get(self, section: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._load().get(section, {}).get(key)
        return value if isinstance(value, dict) else None

    def put(self, section: str, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            data = self._load()
            data.setdefault(section, {})[key] = {**value, "at": time.time()}
            self._save(data)

    def drop(self, section: str, key: str) -> None:
        with self._lock:
            data = self._load()
            if data.get(section, {}).pop(key, None) is not None:
                self._save(data)


# -- hashing ----------------------------------------------------------------------------------


def file_sha256(path: Path, start: int = 0, end: int | None = None) -> str:
    return str(_hash_range(path, start, end).hexdigest())


def _hash_range(path: Path, start: int = 0, end: int | None = None, into: Any = None) -> Any:
    digest = into if into is not None else hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(start)
        left = (end if end is not None else os.fstat(handle.fileno()).st_size) - start
        while left > 0:
            data = handle.read(min(BLOCK, left))
            if not data:
                break
            digest.update(data)
            left -= len(data)
    return digest


class RunningHash:
    """SHA-256 of a file computed from the bytes as they are sent, in order; bytes sent
    again after a retry are not hashed twice, and a gap is read from the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.upto = 0

    def feed(self, position: int, data: bytes) -> None:
        if position == self.upto:
            self.digest.update(data)
            self.upto += len(data)

    def catch_up(self, to: int) -> None:
        if to > self.upto:
            _hash_range(self.path, self.upto, to, self.digest)
            self.upto = to

    def hexdigest(self, size: int) -> str:
        self.catch_up(size)
        return str(self.digest.hexdigest())


# -- uploads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFile:
    path: Path
    remote: str  # path inside the area
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path, remote: str) -> LocalFile:
        info = path.stat()
        return cls(path, remote, info.st_size, info.st_mtime_ns)


def _stall_after() -> int | None:
    value = os.environ.get(STALL_ENV)
    return int(value) if value else None


class Uploader:
    """Uploads files into one area with the tus protocol; see the module's docstring."""

    def __init__(
        self,
        remote: Remote,
        area: str,
        *,
        parallel: int = 1,
        state: StateFile | None = None,
        meter: Meter = _no_meter,
    ) -> None:
        self.remote = remote
        self.area = area
        self.parallel = max(1, parallel)
        self.state = state or StateFile()
        self.meter = meter
        self.checksums = remote.link  # a link cannot read the file back to verify it
        default = LINK_CHUNK if remote.link else CHUNK
        self.chunk = int(os.environ.get(CHUNK_ENV) or default)
        self.uploads_url = f"{remote.area_url(area)}/uploads"
        self._stop = threading.Event()
        self._sent = 0
        self._sent_lock = threading.Lock()
        self._stall = _stall_after()

    # -- one file -----------------------------------------------------------------------

    def key(self, item: LocalFile) -> str:
        return json.dumps(
            [
                self.remote.base_url,
                self.remote.pid,
                self.area,
                item.remote,
                str(item.path.resolve()),
                item.size,
                item.mtime_ns,
            ]
        )

    def upload(self, item: LocalFile) -> str:
        """Upload one file (continuing an earlier attempt); return its verified SHA-256."""
        key = self.key(item)
        entry = self.state.get("uploads", key)
        split = entry["kind"] == "concat" if entry else self._splits(item)
        send = self._concatenated if split else self._single
        sha = send(item, key, entry)
        self.state.drop("uploads", key)
        now = LocalFile.of(item.path, item.remote)
        if (now.size, now.mtime_ns) != (item.size, item.mtime_ns):
            raise TransferError(
                f"{item.path} changed while it was uploaded; upload it again when it is final"
            )
        self.verify(item, sha)
        return sha

    def _splits(self, item: LocalFile) -> bool:
        return self.parallel > 1 and item.size >= self.parallel * MIN_PARTIAL

    def verify(self, item: LocalFile, sha: str) -> None:
        """Compare the server's SHA-256 of the stored file with the local one."""
        if self.remote.link:
            return  # every PATCH carried a checksum the server verified
        response = self.remote.call("HEAD", self.remote.content_url(self.area, item.remote))
        if response.status_code != 200:
            raise TransferError(
                f"{item.remote}: the upload finished but the file cannot be found on the "
                f"server (HTTP {response.status_code})"
            )
        server = response.headers.get("x-content-sha256", "")
        if server != sha:
            raise TransferError(
                f"{item.remote}: INTEGRITY FAILURE: the server's SHA-256 {server or '(none)'} "
                f"differs from the local file's {sha}"
            )

    def _metadata(self, item: LocalFile) -> str:
        kind = mimetypes.guess_type(item.path.name)[0] or "application/octet-stream"
        items = {
            "filename": item.remote.rsplit("/", 1)[-1],
            "relativePath": item.remote,
            "filetype": kind,
        }
        return _encode_metadata(items)

    def _create(self, length: int, headers: dict[str, str]) -> str:
        response = self.remote.call(
            "POST",
            self.uploads_url,
            headers={**TUS, "Upload-Length": str(length), **headers},
        )
        raise_for(response)
        location = response.headers.get("location")
        if response.status_code != 201 or not location:
            status = response.status_code
            raise TransferError(f"the server did not create the upload (HTTP {status})")
        return str(location)

    def _offset(self, url: str) -> int | None:
        """The server's durable offset of an upload; None when it is gone."""
        response = self.remote.call("HEAD", url, headers=TUS)
        if response.status_code in (403, 404, 410):
            return None
        raise_for(response)
        return int(response.headers["upload-offset"])

    def _single(self, item: LocalFile, key: str, entry: dict[str, Any] | None) -> str:
        hasher = RunningHash(item.path)
        url = entry.get("url") if entry else None
        offset: int | None = None
        if url:
            offset = self._offset(url)
            if offset is None:
                url = None
        if url is None:
            url = self._create(item.size, {"Upload-Metadata": self._metadata(item)})
            offset = 0
            if item.size == 0:
                return hasher.hexdigest(0)
            self.state.put("uploads", key, {"kind": "single", "url": url})
        assert offset is not None
        if offset:
            hasher.catch_up(offset)
            self.meter(offset)
        self._send(url, item.path, 0, item.size, offset, hasher)
        return hasher.hexdigest(item.size)

    def _concatenated(self, item: LocalFile, key: str, entry: dict[str, Any] | None) -> str:
        parts: list[dict[str, Any]] = list(entry["parts"]) if entry else []
        offsets: list[int] = []
        for part in parts:
            offset = self._offset(part["url"])
            if offset is None:  # one partial is gone: start the file over
                for other in parts:
                    self.remote.call("DELETE", other["url"], headers=TUS)
                parts, offsets = [], []
                break
            offsets.append(offset)
        if not parts:
            count = self.parallel
            bounds = [item.size * i // count for i in range(count + 1)]
            for index, (start, end) in enumerate(itertools.pairwise(bounds)):
                # the server hashes only the first partial as it arrives (its place is ours
                # to say: tus has no word for it)
                place = _encode_metadata({PART_INDEX: str(index)})
                url = self._create(
                    end - start, {"Upload-Concat": "partial", "Upload-Metadata": place}
                )
                parts.append({"url": url, "start": start, "length": end - start})
                offsets.append(0)
            self.state.put("uploads", key, {"kind": "concat", "parts": parts})
        self.meter(sum(offsets))
        self._stop.clear()
        with ThreadPoolExecutor(len(parts) + 1) as pool:
            hashing: Future[str] = pool.submit(file_sha256, item.path)
            sending = [
                pool.submit(self._send, p["url"], item.path, p["start"], p["length"], o, None)
                for p, o in zip(parts, offsets, strict=True)
            ]
            try:
                for future in sending:
                    future.result()
            finally:
                self._stop.set()
        urls = " ".join(p["url"] for p in parts)
        response = self.remote.call(
            "POST",
            self.uploads_url,
            headers={
                **TUS,
                "Upload-Concat": f"final;{urls}",
                "Upload-Metadata": self._metadata(item),
            },
        )
        raise_for(response)
        return hashing.result()

    # -- PATCH requests -----------------------------------------------------------------

    def _send(
        self,
        url: str,
        path: Path,
        base: int,
        length: int,
        offset: int,
        hasher: RunningHash | None,
    ) -> None:
        """Send ``path[base + offset : base + length]`` to the upload at ``url``."""
        failures = 0
        waited = 0.0
        while offset < length:
            size = min(self.chunk, length - offset)
            headers = {
                **TUS,
                "Upload-Offset": str(offset),
                "Content-Type": OCTETS,
                "Content-Length": str(size),
            }
            if self.checksums:
                digest = _hash_range(path, base + offset, base + offset + size).digest()
                headers["Upload-Checksum"] = "sha256 " + base64.b64encode(digest).decode()
            sent = [0]
            body = self._body(path, base, offset, size, hasher, sent)
            try:
                response = self.remote.http.request(
                    "PATCH", url, headers={**self.remote.auth(), **headers}, content=body
                )
            except httpx.TransportError as exc:
                if self._stop.is_set():
                    raise TransferError("stopped") from None
                failures += 1
                if failures > RETRIES:
                    raise TransferError(
                        f"the upload of {path.name} keeps failing ({_describe(exc)}); "
                        "run the same command again to continue"
                    ) from None
                time.sleep(min(2**failures, 10))
                new = self._offset(url)
                if new is None:
                    raise TransferError(f"the upload of {path.name} is gone; run again") from None
                self.meter(new - offset - sent[0])
                offset = new
                continue
            status = response.status_code
            if status == 204:
                new = int(response.headers["upload-offset"])
                self.meter(new - offset - sent[0])
                offset = new
                failures = 0
                continue
            self.meter(-sent[0])
            if status == 423 and waited < LOCK_WAIT:
                # an interrupted request still holds the upload until the server notices
                pause = min(float(response.headers.get("retry-after") or 1), 5.0)
                time.sleep(pause)
                waited += pause
                continue
            if status == 409 and "upload-offset" in response.headers and failures < RETRIES:
                failures += 1
                offset = int(response.headers["upload-offset"])
                continue
            if status in (404, 410):
                raise TransferError(
                    f"the upload of {path.name} is gone on the server (HTTP {status}); "
                    "run the same command again to start it over"
                )
            raise_for(response)
            raise TransferError(f"unexpected HTTP {status} to a tus PATCH")

    def _body(
        self,
        path: Path,
        base: int,
        offset: int,
        size: int,
        hasher: RunningHash | None,
        sent: list[int],
    ) -> Iterator[bytes]:
        with path.open("rb") as handle:
            position = base + offset
            handle.seek(position)
            left = size
            while left:
                if self._stop.is_set():
                    raise TransferError("stopped")
                data = handle.read(min(BLOCK, left))
                if not data:
                    raise TransferError(f"{path} became shorter while it was uploaded")
                if hasher is not None:
                    hasher.feed(position, data)
                position += len(data)
                left -= len(data)
                sent[0] += len(data)
                self.meter(len(data))
                self._count(len(data))
                yield data

    def _count(self, n: int) -> None:
        if self._stall is None:
            return
        with self._sent_lock:
            self._sent += n
            stalled = self._sent >= self._stall
        if stalled:
            time.sleep(3600)


# -- downloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> RemoteFile:
        return cls(data["path"], int(data["size"]), data["sha256"])


class Downloader:
    """Downloads files of one area into local paths, resuming ``.part`` files."""

    def __init__(
        self, remote: Remote, area: str, *, state: StateFile | None = None, meter: Meter = _no_meter
    ) -> None:
        self.remote = remote
        self.area = area
        self.state = state or StateFile()
        self.meter = meter

    def stat(self, path: str) -> RemoteFile | None:
        response = self.remote.call("HEAD", self.remote.content_url(self.area, path))
        if response.status_code == 404:
            return None
        raise_for(response)
        return RemoteFile(
            path,
            int(response.headers["content-length"]),
            response.headers.get("x-content-sha256", ""),
        )

    def download(self, item: RemoteFile, target: Path) -> bool:
        """Fetch ``item`` into ``target``; False when ``target`` already holds it."""
        same_size = target.is_file() and target.stat().st_size == item.size
        if same_size and file_sha256(target) == item.sha256:
            self.meter(item.size)
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        key = str(part.resolve())
        known = self.state.get("downloads", key)
        start = 0
        if part.exists():
            have = part.stat().st_size
            if known and known.get("sha256") == item.sha256 and have <= item.size:
                start = have
        if start == 0:
            part.write_bytes(b"")
        self.state.put("downloads", key, {"sha256": item.sha256})
        failures = 0
        while True:
            try:
                start = self._fetch(item, part, start)
                break
            except httpx.TransportError as exc:
                failures += 1
                if failures > RETRIES:
                    raise TransferError(
                        f"the download of {item.path} keeps failing ({_describe(exc)}); "
                        "run the same command again to continue"
                    ) from None
                time.sleep(min(2**failures, 10))
                start = part.stat().st_size
        sha = file_sha256(part)
        if start != item.size or sha != item.sha256:
            part.unlink(missing_ok=True)
            self.state.drop("downloads", key)
            raise TransferError(
                f"{item.path}: INTEGRITY FAILURE: the downloaded bytes have SHA-256 {sha}, "
                f"the server recorded {item.sha256}; the partial file was removed"
            )
        os.replace(part, target)
        self.state.drop("downloads", key)
        return True

    def _fetch(self, item: RemoteFile, part: Path, start: int) -> int:
        """Append the rest of the file to ``part``; return the bytes it then holds."""
        self.meter(start)
        if start >= item.size:
            return start
        headers = {"Range": f"bytes={start}-", "If-Range": f'"{item.sha256}"'} if start else {}
        url = self.remote.content_url(self.area, item.path)
        written = 0
        try:
            with self.remote.http.stream(
                "GET", url, headers={**self.remote.auth(), **headers}
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for(response)
                if response.status_code == 200 and start:
                    self.meter(-start)  # the file changed: the server sends all of it
                    start = 0
                elif response.status_code not in (200, 206):
                    raise TransferError(f"unexpected HTTP {response.status_code} to a download")
                sha = response.headers.get("x-content-sha256")
                if sha and sha != item.sha256:
                    raise TransferError(f"{item.path} changed on the server; run again")
                with part.open("r+b" if start else "wb") as handle:
                    handle.seek(start)
                    handle.truncate()
                    try:
                        for data in response.iter_raw(BLOCK):
                            handle.write(data)
                            written += len(data)
                            self.meter(len(data))
                    finally:
                        handle.flush()
                        os.fsync(handle.fileno())
        except httpx.TransportError:
            self.meter(-(start + written))
            raise
        return start + written


__all__ = [
    "ApiError",
    "Downloader",
    "LocalFile",
    "Remote",
    "RemoteFile",
    "StateFile",
    "TransferError",
    "Uploader",
    "file_sha256",
]


def _encode_metadata(items: dict[str, str]) -> str:
    """A tus ``Upload-Metadata`` value."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in items.items())
