"""Dataset commands: ``hvelv dataset create|list|show|delete`` and ``hvelv query``."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hvelv.cli.client import raise_for
from hvelv.cli.files import AreaName, JsonOpt, ProjectOpt, QuietOpt, _progress, _remote, file_errors
from hvelv.cli.output import console, err_console, fail, print_json
from hvelv.cli.transfer import LocalFile, TransferError, Uploader
from hvelv.datasets.schemas import NAME_PATTERN
from hvelv.files.paths import clean_path

dataset_app = typer.Typer(
    help="Project datasets: ingest, list, show, delete.", no_args_is_help=True
)


class OutFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"
    ARROW = "arrow"


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave (None: left to the server's default)."""
    return {key: value for key, value in options.items() if value is not None}


def _rules(values: list[str], option: str = "--generalise") -> dict[str, str]:
    rules: dict[str, str] = {}
    for value in values:
        column, sep, rule = value.partition("=")
        if not sep or not column:
            raise TransferError(f"{option} takes COLUMN=VALUE, not {value!r}")
        rules[column] = rule
    return rules


def _report(details: Any) -> None:
    if not isinstance(details, dict):
        return
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(details.get("reasons", {}).items()))
    err_console.print(
        f"{details.get('rows_rejected')} of {details.get('rows_read')} rows rejected ({reasons})",
        highlight=False,
    )
    for item in details.get("rejections", [])[:20]:
        err_console.print(f"  row {item['row']}: {item['reason']}", highlight=False)
    more = len(details.get("rejections", [])) - 20
    if more > 0 or details.get("rejections_truncated"):
        err_console.print("  ... (--json prints every reported row)", highlight=False)


@dataset_app.command("create")
@file_errors
def create(
    file_path: Annotated[
        str,
        typer.Argument(
            help="A local file (uploaded to the import area first) or, with --remote, the path "
            "of a file already in the project's import or files area."
        ),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name (a-z, 0-9, _).")],
    project: ProjectOpt = None,
    participant_column: Annotated[
        str | None,
        typer.Option("--participant-column", help="Column with national identity numbers."),
    ] = None,
    drop: Annotated[
        list[str] | None, typer.Option("--drop", help="Direct identifier to drop; repeatable.")
    ] = None,
    generalise: Annotated[
        list[str] | None,
        typer.Option(
            "--generalise",
            help="COLUMN=RULE (year, year_month, postcode2, age_band5); repeatable.",
        ),
    ] = None,
    keep_valid: Annotated[
        bool, typer.Option("--keep-valid", help="Load the valid rows, report the others.")
    ] = False,
    remote_file: Annotated[
        bool, typer.Option("--remote", help="FILE_PATH is a file already on the server.")
    ] = False,
    area: Annotated[
        AreaName, typer.Option("--area", "-a", help="Area of a --remote file: import or files.")
    ] = AreaName.IMPORT,
    data_class: Annotated[
        str, typer.Option("--data-class", help="questionnaire, registry, clinical, ...")
    ] = "questionnaire",
    no_personal_data: Annotated[
        bool,
        typer.Option(
            "--no-personal-data", help="Mark a dataset without participants as not personal."
        ),
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, parquet or jsonl (default: by suffix).")
    ] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: sniffed).")] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="CSV encoding, e.g. utf8, cp1252, utf-16 (default: detected)."),
    ] = None,
    header: Annotated[
        bool | None,
        typer.Option(
            "--header/--no-header", help="Whether the CSV has a header line (default: detected)."
        ),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            help="COLUMN=TYPE: string, int64, float64, bool, date, timestamp, decimal(p,s), "
            "date(%d.%m.%Y)...; repeatable.",
        ),
    ] = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Send the local file in the ingest request itself (nothing is kept in the "
            "import area; not resumable).",
        ),
    ] = False,
    description: Annotated[str | None, typer.Option(help="Dataset description.")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Ingest a file as a new version of a dataset (national ids become pseudonyms)."""
    remote = _remote(project)
    type_map = _rules(types or [], "--type")
    reading: dict[str, Any] = {
        "format": fmt,
        "delimiter": delimiter,
        "encoding": encoding,
        "header": header,
        "description": description,
    }
    if stream:
        if remote_file:
            raise TransferError("--stream sends a local file; it cannot be used with --remote")
        local = Path(file_path)
        if not local.is_file():
            raise TransferError(f"no such file: {file_path}")
        params: dict[str, Any] = {
            "filename": clean_path(local.name),
            "drop": drop or [],
            "generalise": [f"{c}={r}" for c, r in _rules(generalise or []).items()],
            "types": [f"{c}={t}" for c, t in type_map.items()],
            "keep_valid": keep_valid,
            "data_class": data_class,
            "personal_data": not no_personal_data,
        }
        params.update(_given(participant_column=participant_column, **reading))
        size = local.stat().st_size
        with _progress(size, quiet, f"streaming {local.name}") as bar:

            def chunks() -> Iterator[bytes]:
                with open(local, "rb") as f:
                    while chunk := f.read(1 << 20):
                        bar.advance(len(chunk))
                        yield chunk
                bar.describe(f"ingesting {local.name} ...")

            response = remote.call(
                "POST",
                f"/v1/projects/{remote.pid}/datasets/{name}/upload",
                params=params,
                content=chunks(),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                timeout=None,
            )
        _created(response, name, as_json)
        return
    if remote_file:
        if area is AreaName.EXPORT:
            raise TransferError("datasets are made from the import or files area")
        path = clean_path(file_path)
    else:
        local = Path(file_path)
        if not local.is_file():
            raise TransferError(f"no such file: {file_path} (use --remote for a server path)")
        path = clean_path(local.name)
        item = LocalFile.of(local, path)
        area = AreaName.IMPORT
        with _progress(item.size, quiet, f"uploading {path}") as bar:
            Uploader(remote, area.value, meter=bar.advance).upload(item)
    body: dict[str, Any] = {
        "name": name,
        "source": {"area": area.value, "path": path},
        "participant_column": participant_column,
        "drop": drop or [],
        "generalise": _rules(generalise or []),
        "keep_valid": keep_valid,
        "data_class": data_class,
        "personal_data": not no_personal_data,
    }
    if type_map:
        body["types"] = type_map
    body.update(_given(**reading))
    url = f"/v1/projects/{remote.pid}/datasets"
    with err_console.status(f"ingesting {area.value}/{path} ...", spinner="dots"):
        response = remote.call("POST", url, json=body, timeout=None)
    _created(response, name, as_json)


def _created(response: Any, name: str, as_json: bool) -> None:
    """Print the outcome of an ingest request."""
    if response.status_code == 422 and not as_json:
        error = response.json().get("error", {})
        if error.get("code") == "ingest_rejected":
            _report(error.get("details"))
            fail("nothing was stored (use --keep-valid to load the valid rows)")
    if as_json:
        print_json(response.json())
        if response.status_code >= 400:
            raise typer.Exit(1)
        return
    raise_for(response)
    data = response.json()
    version = data["version"]
    console.print(
        f"{name}@{version['version']}: {data['rows_loaded']} rows loaded"
        + (f", {data['rows_rejected']} rejected" if data["rows_rejected"] else ""),
        highlight=False,
    )
    if data["rows_rejected"]:
        _report(data)


@dataset_app.command("list")
@file_errors
def list_(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The project's datasets."""
    remote = _remote(project)
    data = remote.json("GET", f"/v1/projects/{remote.pid}/datasets")
    if as_json:
        print_json(data)
        return
    table = Table("name", "version", "rows", "class", "queryable", "description")
    for d in data:
        table.add_row(
            d["name"],
            str(d["current_version"] or "-"),
            str(d["rows"] if d["rows"] is not None else "-"),
            d["data_class"],
            "yes" if d["queryable"] else "no",
            d["description"][:40],
        )
    console.print(table)


@dataset_app.command("show")
@file_errors
def show(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A dataset's versions, columns and lineage."""
    remote = _remote(project)
    data = remote.json("GET", f"/v1/projects/{remote.pid}/datasets/{name}")
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{data['name']}[/] ({data['data_class']}) {data['description']}")
    for v in data["versions"] or []:
        lineage = v["lineage"]
        console.print(
            f"  v{v['version']}: {v['rows']} rows from {lineage['source_area']}/"
            f"{lineage['source_path']} (sha256 {lineage['source_sha256'][:16]}…) by "
            f"{lineage['created_by']} at {lineage['created_at']}; rules: "
            f"{', '.join(lineage['rules']) or '-'}",
            highlight=False,
        )
        if v.get("deleted_at"):
            why = f": {v['deletion_reason']}" if v.get("deletion_reason") else ""
            console.print(
                f"      deleted at {v['deleted_at']} by {v['deleted_by']}{why} (lineage only)",
                highlight=False,
            )
            continue
        cols = ", ".join(f"{c['name']} {c['type']}" for c in v["columns"])
        console.print(f"      columns: {cols}", highlight=False)


@dataset_app.command("delete")
@file_errors
def delete(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    project: ProjectOpt = None,
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            "-v",
            min=1,
            help="Delete only this version (default: the whole dataset, every version).",
        ),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why (one line, at most 1,000 characters; audited)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a dataset version, or a whole dataset: the encrypted data and its data key are
    destroyed (cannot be undone); the version rows stay as lineage, the deletion is audited.
    Asks first unless --yes."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise TransferError(f"{name!r} is not a dataset name (a-z, 0-9 and _, starting a-z)")
    if reason is not None and (not reason.strip() or len(reason) > 1000 or "\n" in reason):
        raise TransferError("--reason takes one non-empty line of at most 1,000 characters")
    remote = _remote(project)
    base = f"/v1/projects/{remote.pid}/datasets/{name}"
    if not yes:
        _confirm_deletion(remote.json("GET", base), remote.pid, version)
    url = base if version is None else f"{base}/versions/{version}"
    params = {} if reason is None else {"reason": reason}
    data = remote.json("DELETE", url, params=params)
    if as_json:
        print_json(data)
        return
    numbers = ", ".join(str(n) for n in data["deleted_versions"]) or "none"
    plural = "s" if len(data["deleted_versions"]) != 1 else ""
    current = data["current_version"]
    after = (
        f"current version now {current}"
        if current is not None
        else "the dataset is gone (its name is free)"
    )
    console.print(f"{data['dataset']}: deleted version{plural} {numbers}; {after}", highlight=False)


def _confirm_deletion(dataset: dict[str, Any], pid: str, version: int | None) -> None:
    """Say what is about to be destroyed and ask; exits (nothing deleted) unless confirmed."""
    name = dataset["name"]
    live = [v for v in dataset.get("versions") or [] if v.get("deleted_at") is None]
    if version is not None:
        chosen = [v for v in live if v["version"] == version]
        if not chosen:
            gone = any(v["version"] == version for v in dataset.get("versions") or [])
            state = "was already deleted" if gone else "does not exist"
            raise TransferError(f"version {version} of {name!r} {state}; nothing deleted")
        rest = [v["version"] for v in live if v["version"] != version]
        what = f"version {version} of dataset {name!r} in {pid} ({chosen[0]['rows']:,} rows)"
        then = (
            f"version {max(rest)} becomes current"
            if rest
            else "it is the last version: the dataset goes with it"
        )
    else:
        if not live:
            raise TransferError(f"dataset {name!r} has no versions left; nothing deleted")
        rows = sum(v["rows"] for v in live)
        numbers = ", ".join(str(v["version"]) for v in live)
        plural = "s" if len(live) != 1 else ""
        what = f"dataset {name!r} in {pid}: version{plural} {numbers} ({rows:,} rows)"
        then = "the dataset leaves listings and queries"
    err_console.print(
        f"Deleting {what} destroys the data and its key (cannot be undone; the lineage and the "
        f"audit trail stay); {then}.",
        highlight=False,
    )
    try:
        confirmed = typer.confirm("Delete?", default=False, err=True)
    except typer.Abort:  # no answer (end of input)
        confirmed = False
    if not confirmed:
        fail("not confirmed; nothing deleted (--yes deletes without asking)")


@file_errors
def query(
    sql: Annotated[str, typer.Argument(help="One SELECT over the project's datasets.")],
    purpose: Annotated[
        str, typer.Option("--purpose", help="An approved purpose, e.g. DUO:0000006.")
    ],
    project: ProjectOpt = None,
    action: Annotated[str, typer.Option(help="The consent action, e.g. analyse.")] = "analyse",
    disease: Annotated[str | None, typer.Option(help="Disease term for DS purposes.")] = None,
    institution: Annotated[str, typer.Option(help="Your institution.")] = "",
    fmt: Annotated[
        OutFormat | None, typer.Option("--format", help="json, csv, parquet or arrow.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the result to this file.")
    ] = None,
) -> None:
    """Run a consent-enforced query; prints a table, or writes JSON/CSV/Parquet/Arrow."""
    remote = _remote(project)
    chosen = fmt or (OutFormat.JSON if output is None else _by_suffix(output))
    if chosen in (OutFormat.PARQUET, OutFormat.ARROW) and output is None:
        raise TransferError(f"--format {chosen.value} needs --output FILE")
    body: dict[str, Any] = {
        "sql": sql,
        "purpose": purpose,
        "action": action,
        "requester_institution": institution,
        "format": chosen.value,
    }
    if disease:
        body["disease"] = disease
    url = f"/v1/projects/{remote.pid}/datasets/query"
    if chosen is not OutFormat.JSON:
        response = remote.call("POST", url, json=body, timeout=None)
        raise_for(response)
        if output is None:
            sys.stdout.write(response.text)
        else:
            output.write_bytes(response.content)
            err_console.print(
                f"{response.headers.get('x-hvelv-rows')} rows written to {output} (ledger "
                f"position {response.headers.get('x-hvelv-ledger-position')})",
                highlight=False,
            )
        return
    data = remote.json("POST", url, json=body, timeout=None)  # the server's default page
    rows = data["rows"]
    if data["next_page"] is not None:
        err_console.print(
            f"the first {len(rows)} of {data['total_rows']} rows; --format csv -o FILE gives all",
            highlight=False,
        )
    if fmt is OutFormat.JSON or output is not None:
        text = json.dumps(data, indent=2)
        if output is None:
            sys.stdout.write(text + "\n")
        else:
            output.write_text(text + "\n")
        return
    table = Table(*[c["name"] for c in data["columns"]])
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)
    err_console.print(
        f"{data['total_rows']} row(s); datasets {', '.join(data['datasets'])}; "
        f"{data['permitted_participants']} participants permitted at ledger position "
        f"{data['ledger_position']}",
        highlight=False,
    )


def _by_suffix(path: Path) -> OutFormat:
    return {
        ".csv": OutFormat.CSV,
        ".parquet": OutFormat.PARQUET,
        ".arrow": OutFormat.ARROW,
        ".arrows": OutFormat.ARROW,
    }.get(path.suffix.lower(), OutFormat.JSON)


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
    app.command("query")(query)
