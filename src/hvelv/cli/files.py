"""File commands: upload, download, ls, mv, rm, trash, restore and upload links."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from hvelv.cli.client import ApiError, raise_for
from hvelv.cli.output import console, err_console, fail, print_json
from hvelv.cli.transfer import (
    Downloader,
    LocalFile,
    Remote,
    RemoteFile,
    TransferError,
    Uploader,
    file_sha256,
)
from hvelv.errors import InvalidInput
from hvelv.files.paths import clean_path, clean_prefix

F = TypeVar("F", bound=Callable[..., Any])


class AreaName(StrEnum):
    IMPORT = "import"
    FILES = "files"
    EXPORT = "export"


ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        envvar="HVELV_PROJECT",
        help="Project id, e.g. p1001 (default: the project your login is scoped to).",
    ),
]
AreaOpt = Annotated[AreaName, typer.Option("--area", "-a", help="Area: import, files or export.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar and no per-file lines.")
]


def file_errors(command: F) -> F:
    """One line on stderr and a non-zero exit for every expected failure; no traceback."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ApiError as exc:
            fail(f"{exc.message} ({exc.code}, HTTP {exc.status})")
        except TransferError as exc:
            fail(str(exc))
        except InvalidInput as exc:
            fail(str(exc))
        except httpx.HTTPError as exc:
            fail(f"network error: {exc}")
        except OSError as exc:
            name = f": {exc.filename}" if exc.filename else ""
            fail(f"{exc.strerror or exc}{name}")
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to continue where it stopped", 130)
        finally:
            while _OPEN:
                _OPEN.pop().http.close()

    return run  # type: ignore[return-value]


_OPEN: list[Remote] = []  # closed when the command ends


def _remote(project: str | None) -> Remote:
    remote = Remote.from_login(project)
    _OPEN.append(remote)
    return remote


@dataclass
class Bar:
    """A progress bar with throughput and ETA on stderr (none when quiet or not a TTY)."""

    progress: Progress
    task: TaskID
    quiet: bool

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def describe(self, text: str) -> None:
        self.progress.update(self.task, description=text[-40:])

    def say(self, text: str) -> None:
        """A per-file line: above the bar while it is shown, else on stdout."""
        if self.quiet:
            return
        out = console if self.progress.disable else self.progress.console
        out.print(text, highlight=False, markup=False)


@contextmanager
def _progress(total: int, quiet: bool, label: str) -> Iterator[Bar]:
    progress = Progress(
        TextColumn("[bold]{task.description}", justify="left"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,
        transient=False,
    )
    with progress:
        yield Bar(progress, progress.add_task(label, total=total), quiet)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# -- upload -----------------------------------------------------------------------------------


def _remote_name(base: str, into: str) -> str:
    name = f"{into.strip('/')}/{base}" if into.strip("/") else base
    try:
        return clean_path(name)
    except InvalidInput as exc:
        raise TransferError(f"{name!r} cannot be a file name on the server: {exc}") from None


def collect(paths: list[str], into: str) -> list[LocalFile]:
    """The files to upload with their remote paths: a file by its name, a directory with
    its name and structure (``dir/`` with a trailing slash: only what is inside)."""
    found: list[LocalFile] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise TransferError(f"no such file or directory: {raw}")
        if path.is_file():
            found.append(LocalFile.of(path, _remote_name(path.resolve().name, into)))
            continue
        if not path.is_dir():
            raise TransferError(f"not a regular file or directory: {raw}")
        contents_only = raw.endswith((os.sep, "/"))
        top = "" if contents_only else path.resolve().name
        for folder, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                file = Path(folder) / name
                if not file.is_file():
                    continue  # sockets, fifos, broken links
                rel = file.relative_to(path).as_posix()
                remote = f"{top}/{rel}" if top else rel
                found.append(LocalFile.of(file, _remote_name(remote, into)))
    seen: dict[str, Path] = {}
    for item in found:
        if item.remote in seen:
            raise TransferError(
                f"{seen[item.remote]} and {item.path} would both be uploaded as {item.remote}"
            )
        seen[item.remote] = item.path
    return found


def _already_there(remote: Remote, area: str, items: list[LocalFile]) -> set[str]:
    """Remote paths whose file has the same size and SHA-256 as the local one."""
    prefixes = sorted({item.remote.split("/", 1)[0] for item in items})
    server: dict[str, dict[str, Any]] = {}
    for prefix in prefixes:
        for entry in remote.listing(area, prefix):
            server[entry["path"]] = entry
    same: set[str] = set()
    for item in items:
        found = server.get(item.remote)
        if found and found["size"] == item.size and found["sha256"] == file_sha256(item.path):
            same.add(item.remote)
    return same


@file_errors
def upload(
    paths: Annotated[
        list[str],
        typer.Argument(help="Files and directories (structure kept; dir/ uploads its contents)."),
    ],
    project: ProjectOpt = None,
    to: Annotated[
        AreaName | None,
        typer.Option(
            "--to", help="Area: import, files or export (default files; import with --link)."
        ),
    ] = None,
    into: Annotated[str, typer.Option("--into", help="Remote folder to put them in.")] = "",
    parallel: Annotated[
        int,
        typer.Option("--parallel", min=1, max=16, help="Streams per file (tus concatenation)."),
    ] = 1,
    sync: Annotated[
        bool, typer.Option("--sync", help="Skip files already there with the same SHA-256.")
    ] = False,
    link: Annotated[
        str | None,
        typer.Option("--link", envvar="HVELV_UPLOAD_LINK", help="Upload link token (hvl_...)."),
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="With --link: the link's upload URL.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Upload files and directories; re-run the same command to resume an interrupted one."""
    if link:
        if not url:
            raise TransferError("--link needs --url (the upload URL given with the link)")
        if to not in (None, AreaName.IMPORT):
            raise TransferError("an upload link delivers into the import area only")
        if sync:
            raise TransferError("--sync needs a login (an upload link cannot list files)")
        remote = Remote.from_link(link, url, project)
        _OPEN.append(remote)
        area = AreaName.IMPORT.value
    else:
        remote = _remote(project)
        area = (to or AreaName.FILES).value
    items = collect(paths, into)
    skipped: set[str] = set()
    if sync:
        skipped = _already_there(remote, area, items)
    todo = [item for item in items if item.remote not in skipped]
    total = sum(item.size for item in todo)
    with _progress(total, quiet, "uploading") as bar:
        uploader = Uploader(remote, area, parallel=parallel, meter=bar.advance)
        for item in items:
            if item.remote in skipped:
                bar.say(f"skipped  {item.remote} (same SHA-256 on the server)")
                continue
            bar.describe(item.remote)
            sha = uploader.upload(item)
            bar.say(f"uploaded {item.remote} ({_human(item.size)}, sha256 {sha[:16]}…)")
    console.print(
        f"{len(todo)} file(s), {_human(total)} uploaded to {remote.pid}/{area}"
        + (f"; {len(skipped)} skipped (already there)" if skipped else ""),
        highlight=False,
    )


# -- download ---------------------------------------------------------------------------------


def _targets(
    downloader: Downloader, remote: Remote, area: str, names: list[str], dest: Path | None
) -> list[tuple[RemoteFile, Path]]:
    found: list[tuple[str, RemoteFile | None, list[RemoteFile]]] = []
    for raw in names:
        name = raw.strip("/")
        if not name:  # the whole area
            found.append(("", None, [RemoteFile.of(e) for e in remote.listing(area)]))
            continue
        name = clean_path(name)
        single = downloader.stat(name)
        if single is not None:
            found.append((name, single, []))
            continue
        inside = [RemoteFile.of(e) for e in remote.listing(area, name + "/")]
        if not inside:
            raise TransferError(f"no file or folder {name!r} in {remote.pid}/{area}")
        found.append((name, None, inside))
    one_file = len(found) == 1 and found[0][1] is not None
    if one_file and dest is not None and not dest.is_dir() and not str(dest).endswith(os.sep):
        single = found[0][1]
        assert single is not None
        return [(single, dest)]
    base = dest or Path(".")
    targets: list[tuple[RemoteFile, Path]] = []
    for name, single, inside in found:
        if single is not None:
            targets.append((single, base / name.rsplit("/", 1)[-1]))
            continue
        top = name.rsplit("/", 1)[-1]
        for item in inside:
            rel = item.path[len(name) + 1 :] if name else item.path
            clean_path(rel)  # never anything like ../ in a local path
            targets.append((item, base / top / rel if top else base / rel))
    return targets


@file_errors
def download(
    paths: Annotated[
        list[str], typer.Argument(help="Remote files or folders ('/' for the whole area).")
    ],
    project: ProjectOpt = None,
    area: Annotated[
        AreaName, typer.Option("--from", help="Area to download from: import, files or export.")
    ] = AreaName.FILES,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Local file or directory (default: here)."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Download files or folders; resumes partial downloads and verifies SHA-256."""
    remote = _remote(project)
    downloader = Downloader(remote, area.value)
    targets = _targets(downloader, remote, area.value, paths, output)
    total = sum(item.size for item, _ in targets)
    fetched = 0
    with _progress(total, quiet, "downloading") as bar:
        downloader.meter = bar.advance
        for item, target in targets:
            bar.describe(item.path)
            if downloader.download(item, target):
                fetched += 1
                bar.say(f"downloaded {item.path} → {target}")
            else:
                bar.say(f"skipped    {target} (already the same)")
    console.print(
        f"{fetched} file(s) downloaded, {len(targets) - fetched} already present; "
        f"{_human(total)} verified",
        highlight=False,
    )


# -- listing and managing ---------------------------------------------------------------------


@file_errors
def ls(
    prefix: Annotated[str, typer.Argument(help="Only paths starting with this.")] = "",
    project: ProjectOpt = None,
    area: AreaOpt = AreaName.FILES,
    long: Annotated[
        bool, typer.Option("--long", "-l", help="Size, time, uploader and SHA-256.")
    ] = False,
    sort: Annotated[str, typer.Option(help="Sort by path, size or created_at.")] = "path",
    order: Annotated[str, typer.Option(help="asc or desc.")] = "asc",
    as_json: JsonOpt = False,
) -> None:
    """List the files of an area."""
    remote = _remote(project)
    if sort not in ("path", "size", "created_at") or order not in ("asc", "desc"):
        raise TransferError("--sort is path, size or created_at; --order is asc or desc")
    items = list(
        remote.listing(area.value, clean_prefix(prefix.lstrip("/")), sort=sort, order=order)
    )
    if as_json:
        print_json(items)
        return
    if not long:
        for item in items:
            console.print(item["path"], highlight=False, markup=False)
        return
    table = Table("size", "modified", "uploader", "sha256", "path", box=None)
    for item in items:
        table.add_row(
            _human(item["size"]),
            item["modified_at"][:19].replace("T", " "),
            item["uploader"],
            item["sha256"][:12],
            item["path"],
        )
    console.print(table)
    console.print(f"{len(items)} file(s), {_human(sum(i['size'] for i in items))}")


@file_errors
def mv(
    source: Annotated[str, typer.Argument(help="File or folder.")],
    target: Annotated[str, typer.Argument(help="New path (same area).")],
    project: ProjectOpt = None,
    area: AreaOpt = AreaName.FILES,
) -> None:
    """Rename or move a file or folder within an area."""
    remote = _remote(project)
    body = {"source": clean_path(source.strip("/")), "target": clean_path(target.strip("/"))}
    data = remote.json("POST", f"{remote.area_url(area.value)}/move", json=body)
    console.print(f"moved {len(data['moved'])} file(s) to {body['target']}", highlight=False)


@file_errors
def rm(
    paths: Annotated[list[str], typer.Argument(help="Files (folders with --recursive).")],
    project: ProjectOpt = None,
    area: AreaOpt = AreaName.FILES,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Delete every file in a folder.")
    ] = False,
) -> None:
    """Move files to the project's trash (restorable with `hvelv restore`)."""
    remote = _remote(project)
    for raw in paths:
        name = clean_path(raw.strip("/"))
        response = remote.call("DELETE", remote.content_url(area.value, name))
        if response.status_code == 404 and recursive:
            inside = [e["path"] for e in remote.listing(area.value, name + "/")]
            if not inside:
                raise TransferError(f"no file or folder {name!r} in {remote.pid}/{area.value}")
            for path in inside:
                gone = remote.json("DELETE", remote.content_url(area.value, path))
                console.print(f"trashed {path} (id {gone['id']})", highlight=False)
            continue
        if response.status_code == 404:
            hint = " (a folder? use --recursive)" if _is_folder(remote, area, name) else ""
            raise TransferError(f"no file {name!r} in {remote.pid}/{area.value}{hint}")
        raise_for(response)
        gone = response.json()
        console.print(
            f"trashed {name} (id {gone['id']}; `hvelv restore {gone['id']}` brings it back)",
            highlight=False,
        )


def _is_folder(remote: Remote, area: AreaName, name: str) -> bool:
    return next(iter(remote.listing(area.value, name + "/")), None) is not None


@file_errors
def trash(
    project: ProjectOpt = None,
    area: AreaOpt = AreaName.FILES,
    as_json: JsonOpt = False,
) -> None:
    """List the area's trash: deleted and replaced files until they are purged."""
    remote = _remote(project)
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = remote.json("GET", f"{remote.area_url(area.value)}/trash", params=params)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if as_json:
        print_json(items)
        return
    table = Table("id", "deleted", "by", "size", "purge after", "path", box=None)
    for item in items:
        table.add_row(
            item["id"],
            item["deleted_at"][:19].replace("T", " "),
            item["deleted_by"] or "",
            _human(item["size"]),
            (item["purge_after"] or "")[:10],
            item["path"],
        )
    console.print(table)


@file_errors
def restore(
    file_id: Annotated[str, typer.Argument(help="The id shown by `hvelv trash`.")],
    project: ProjectOpt = None,
    area: AreaOpt = AreaName.FILES,
    to: Annotated[str | None, typer.Option("--to", help="Restore under another path.")] = None,
) -> None:
    """Bring a file back from the trash."""
    remote = _remote(project)
    body = {"to": clean_path(to.strip("/"))} if to else None
    data = remote.json("POST", f"{remote.area_url(area.value)}/trash/{file_id}/restore", json=body)
    console.print(f"restored {data['path']}", highlight=False)


# -- upload links -----------------------------------------------------------------------------

link_app = typer.Typer(
    help="Upload links: let someone deliver files into import without an account.",
    no_args_is_help=True,
)


@link_app.command("create")
@file_errors
def link_create(
    label: Annotated[str, typer.Option("--label", help="Who or what the link is for.")],
    project: ProjectOpt = None,
    hours: Annotated[int, typer.Option("--hours", help="Lifetime in hours.")] = 72,
    max_uses: Annotated[
        int | None, typer.Option("--max-uses", help="Uploads (files) allowed.")
    ] = None,
    max_bytes: Annotated[
        int | None, typer.Option("--max-bytes", help="Total bytes allowed.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an upload link; its token is shown once."""
    remote = _remote(project)
    body: dict[str, Any] = {"label": label, "expires_in_hours": hours}
    if max_uses is not None:
        body["max_uses"] = max_uses
    if max_bytes is not None:
        body["max_bytes"] = max_bytes
    data = remote.json("POST", f"/v1/projects/{remote.pid}/upload-links", json=body)
    if as_json:
        print_json(data)
        return
    console.print(f"upload link {data['id']} ({data['label']}), expires {data['expires_at']}")
    console.print(f"  token:      [bold]{data['token']}[/]   (shown once)", highlight=False)
    console.print(f"  upload URL: {data['upload_url']}", highlight=False)
    console.print(
        f"  send with:  hvelv upload FILE... --link {data['token']} --url {data['upload_url']}",
        highlight=False,
        soft_wrap=True,
    )


@link_app.command("list")
@file_errors
def link_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The project's upload links and their use."""
    remote = _remote(project)
    data = remote.json("GET", f"/v1/projects/{remote.pid}/upload-links")
    if as_json:
        print_json(data)
        return
    table = Table("id", "label", "expires", "uses", "bytes", "state", box=None)
    for link in data:
        uses = f"{link['uses']}/{link['max_uses'] or '∞'}"
        size = _human(link["bytes_reserved"]) + (
            f"/{_human(link['max_bytes'])}" if link["max_bytes"] is not None else ""
        )
        state = "revoked" if link["revoked"] else "active"
        table.add_row(link["id"], link["label"], link["expires_at"][:16], uses, size, state)
    console.print(table)


@link_app.command("revoke")
@file_errors
def link_revoke(
    link_id: Annotated[str, typer.Argument(help="The link's id.")],
    project: ProjectOpt = None,
) -> None:
    """Revoke an upload link at once."""
    remote = _remote(project)
    remote.json("DELETE", f"/v1/projects/{remote.pid}/upload-links/{link_id}")
    console.print(f"revoked upload link {link_id}")


def register(app: typer.Typer) -> None:
    app.command("upload")(upload)
    app.command("download")(download)
    app.command("ls")(ls)
    app.command("mv")(mv)
    app.command("rm")(rm)
    app.command("trash")(trash)
    app.command("restore")(restore)
    app.add_typer(link_app, name="link")
