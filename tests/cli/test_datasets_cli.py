"""`hvelv dataset create|list|show|delete` and `hvelv query` against a live `hvelv serve`: a
local CSV is uploaded (tus) and ingested, queried under consent, and a withdrawal recorded by
staff shows in the next query; versions and datasets are deleted after a confirmation."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
from typer.testing import Result

from hvelv.cli.main import app
from tests.cli.test_files_cli import Live, _no_shell_settings, live, ok, refused, run, runner
from tests.consent.conftest import TEXTS
from tests.support.participants import national_id

__all__ = ["_no_shell_settings", "live"]  # fixtures used here

HMB = "DUO:0000006"
ITEMS = [{"item_id": "hmb", "effect": "permit", "purpose": {"code": "HMB"}, "actions": ["analyse"]}]


def _api(live: Live, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(
        method, f"{live.url}/v1/projects/{live.pid}{path}", json=body, headers=live.headers()
    )
    assert response.status_code < 300, response.text
    return response.json()


def _consents(live: Live, seed: int = 5) -> tuple[list[str], list[str], str]:
    """Three enrolled participants, the first two consenting to health research."""
    study = _api(live, "POST", "/consent/studies", {"name": "CLI cohort"})
    made = _api(
        live,
        "POST",
        f"/consent/studies/{study['id']}/templates",
        {"title": "Consent", "texts": TEXTS, "items": ITEMS},
    )
    version = _api(
        live,
        "POST",
        f"/consent/templates/{made['template_id']}/versions/{made['version']}/publish",
    )["version_id"]
    rng = random.Random(seed)
    nids = [national_id(dt.date(1970 + n, 5, 6), rng) for n in range(3)]
    pseudonyms = []
    for n, nid in enumerate(nids):
        p = _api(live, "POST", "/consent/participants", {"national_id": nid})["pseudonym"]
        pseudonyms.append(p)
        if n < 2:
            _api(
                live,
                "POST",
                f"/consent/participants/{p}/events",
                {"kind": "given", "template_version": version, "choices": {"hmb": True}},
            )
    return nids, pseudonyms, version


def test_create_list_query_and_withdraw(live: Live, tmp_path: Path) -> None:
    nids, pseudonyms, _ = _consents(live)
    source = tmp_path / "cli_visits.csv"
    lines = ["national_id,score,name"] + [
        f"{nid},{n * 10 + i},Someone" for n, nid in enumerate(nids) for i in range(n + 1)
    ]
    source.write_text("\n".join(lines) + "\n")
    created = ok(
        live,
        "dataset",
        "create",
        str(source),
        "--name",
        "cli_visits",
        "--participant-column",
        "national_id",
        "--drop",
        "name",
    )
    assert "cli_visits@1: 6 rows loaded" in created.stdout
    listed = json.loads(ok(live, "dataset", "list", "--json").stdout)
    assert [d["name"] for d in listed if d["name"] == "cli_visits"] == ["cli_visits"]
    shown = ok(live, "dataset", "show", "cli_visits").stdout
    assert "drop:name" in shown

    sql = "SELECT count(*) AS n FROM cli_visits"
    csv = ok(live, "query", sql, "--purpose", HMB, "--format", "csv").stdout
    assert csv.split() == ['"n"', "3"]  # 1 + 2 rows of the two who consented
    table = ok(
        live, "query", "SELECT participant, score FROM cli_visits ORDER BY 2", "--purpose", HMB
    )
    assert pseudonyms[0] in table.stdout
    assert pseudonyms[2] not in table.stdout

    _api(
        live,
        "POST",
        f"/consent/participants/{pseudonyms[1]}/events",
        {"kind": "withdrawn", "scope": "stop_use"},
    )
    out = tmp_path / "after.parquet"
    ok(live, "query", "SELECT * FROM cli_visits", "--purpose", HMB, "-o", str(out))
    after = pq.read_table(io.BytesIO(out.read_bytes()))
    assert after.column("participant").to_pylist() == [pseudonyms[0]]

    refused(run(live, "query", sql, "--purpose", "DUO:0000042"), "purpose_not_approved", "HTTP 403")
    refused(run(live, "query", "SELECT * FROM read_csv('x')", "--purpose", HMB), "query_refused")


def test_rejected_rows_are_listed_and_nothing_is_stored(live: Live, tmp_path: Path) -> None:
    good = national_id(dt.date(1980, 1, 2), random.Random(9))
    bad = tmp_path / "cli_bad.csv"
    bad.write_text(f"national_id,x\n{good},1\n123,2\n")
    result = run(
        live,
        "dataset",
        "create",
        str(bad),
        "--name",
        "cli_bad",
        "--participant-column",
        "national_id",
    )
    assert result.exit_code == 1
    assert "row 1: not_enrolled" in result.stderr
    assert "row 2: length" in result.stderr
    assert "nothing was stored" in result.stderr
    listed = json.loads(ok(live, "dataset", "list", "--json").stdout)
    assert "cli_bad" not in [d["name"] for d in listed]


def test_create_by_streaming_a_windows_1252_file(live: Live, tmp_path: Path) -> None:
    nids, pseudonyms, _ = _consents(live, seed=6)
    source = tmp_path / "cli_stream.csv"
    lines = ["fnr;navn;postnr"] + [f"{nid};Åse Ørn;0{150 + n}" for n, nid in enumerate(nids)]
    source.write_bytes(("\n".join(lines) + "\n").encode("cp1252"))
    created = ok(
        live,
        "dataset",
        "create",
        str(source),
        "--stream",
        "--name",
        "cli_stream",
        "--participant-column",
        "fnr",
        "--type",
        "postnr=string",
        "--json",
    )
    body = json.loads(created.stdout)
    assert body["rows_loaded"] == 3
    assert body["read"]["encoding"] == "cp1252"
    lineage = body["version"]["lineage"]
    assert lineage["source_area"] == "upload"
    assert "type:postnr:string" in lineage["rules"]
    files = _api(live, "GET", "/files/import")["items"]
    assert "cli_stream.csv" not in [f["path"] for f in files]  # nothing kept in import
    rows = ok(live, "query", "SELECT postnr, navn FROM cli_stream ORDER BY 1", "--purpose", HMB)
    assert "0150" in rows.stdout
    assert "Åse Ørn" in rows.stdout
    assert pseudonyms[2] not in rows.stdout
    refused(
        run(live, "dataset", "create", str(source), "--stream", "--remote", "--name", "x"),
        "--stream",
    )
    bad = run(
        live, "dataset", "create", str(source), "--stream", "--name", "cli_stream",
        "--participant-column", "fnr", "--encoding", "utf8",
    )  # fmt: skip
    refused(bad, "not valid utf8")


def _ask(live: Live, answer: str, *args: str) -> Result:
    """Run a command that asks for confirmation, answering ``answer`` on its input."""
    return runner.invoke(app, list(args), input=answer, env=live.env, catch_exceptions=False)


def _versions(live: Live, name: str) -> dict[int, dict[str, Any]]:
    return {v["version"]: v for v in _api(live, "GET", f"/datasets/{name}")["versions"]}


def test_delete_a_version_then_the_dataset(live: Live, tmp_path: Path) -> None:
    nids, _, _ = _consents(live, seed=7)
    source = tmp_path / "cli_gone.csv"
    source.write_text("national_id,score\n" + "".join(f"{nid},{n}\n" for n, nid in enumerate(nids)))
    for _ in range(3):
        ok(live, "dataset", "create", str(source), "--name", "cli_gone", "--stream",
           "--participant-column", "national_id")  # fmt: skip

    # asked first: "no", an empty answer and no answer at all delete nothing
    for answer in ("n\n", "\n", ""):
        kept = _ask(live, answer, "dataset", "delete", "cli_gone", "--version", "2")
        assert kept.exit_code == 1, kept.output
        assert "version 2 of dataset 'cli_gone'" in kept.stderr
        assert "3 rows" in kept.stderr
        assert "version 3 becomes current" in kept.stderr
        assert "nothing deleted" in kept.stderr
    assert all(v["deleted_at"] is None for v in _versions(live, "cli_gone").values())

    done = _ask(live, "y\n", "dataset", "delete", "cli_gone", "-v", "2", "--reason", "wrong file")
    assert done.exit_code == 0, done.output
    assert "cli_gone: deleted version 2; current version now 3" in done.stdout
    v2 = _versions(live, "cli_gone")[2]
    assert v2["deleted_at"] is not None
    assert v2["deletion_reason"] == "wrong file"
    shown = " ".join(ok(live, "dataset", "show", "cli_gone").stdout.split())
    assert "deleted at" in shown
    assert ": wrong file (lineage only)" in shown
    refused(run(live, "dataset", "delete", "cli_gone", "-v", "2"), "already deleted")
    refused(run(live, "dataset", "delete", "cli_gone", "-v", "2", "--yes"), "version_deleted",
            "HTTP 409")  # fmt: skip
    refused(run(live, "dataset", "delete", "cli_gone", "-v", "9"), "does not exist")
    assert all(v["deleted_at"] is None for n, v in _versions(live, "cli_gone").items() if n != 2)

    # the whole dataset: the question names every version left
    asked = _ask(live, "no\n", "dataset", "delete", "cli_gone")
    assert asked.exit_code == 1
    assert "versions 1, 3 (6 rows)" in " ".join(asked.stderr.split())
    whole = json.loads(ok(live, "dataset", "delete", "cli_gone", "--yes", "--json").stdout)
    assert whole == {"dataset": "cli_gone", "deleted_versions": [1, 3], "current_version": None}
    listed = json.loads(ok(live, "dataset", "list", "--json").stdout)
    assert "cli_gone" not in [d["name"] for d in listed]
    refused(run(live, "dataset", "delete", "cli_gone", "--yes"), "dataset_not_found", "HTTP 404")
    query = run(live, "query", "SELECT count(*) FROM cli_gone", "--purpose", HMB)
    refused(query, "query_refused")


def test_delete_refuses_what_is_not_a_dataset_name_or_reason(live: Live) -> None:
    # a name with a slash would otherwise reach another route (".../visits/versions/1")
    refused(run(live, "dataset", "delete", "visits/versions/1", "--yes"), "not a dataset name")
    refused(run(live, "dataset", "delete", "Visits", "--yes"), "not a dataset name")
    refused(run(live, "dataset", "delete", "visits", "--yes", "--reason", "a\nb"), "one non-empty")
    refused(run(live, "dataset", "delete", "visits", "--yes", "--reason", "x" * 1001), "1,000")
    bad_version = run(live, "dataset", "delete", "visits", "--version", "0", "--yes")
    assert bad_version.exit_code == 2  # a usage error, before anything is sent
    assert "--version" in bad_version.output
    refused(run(live, "dataset", "delete", "no_such_thing"), "dataset_not_found", "HTTP 404")
    help_text = " ".join(ok(live, "dataset", "delete", "--help").stdout.split())
    for needle in ("--version", "--reason", "--yes", "--json", "cannot be undone"):
        assert needle in help_text
