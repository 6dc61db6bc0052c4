"""The datasets API end to end: a file uploaded with tus is ingested, queried under consent, and
a withdrawal through the participant API removes the participant from the next query."""

from __future__ import annotations

import datetime as dt
import io
import random
from dataclasses import dataclass, field
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hvelv.datasets.engine import QueryLimits
from hvelv.datasets.models import Dataset, DatasetVersionRow, ParticipantKeyRow
from hvelv.platform import Platform
from tests.consent.conftest import TEXTS
from tests.files.support import upload
from tests.support.participants import national_id, session_headers
from tests.support.people import Person

HMB = "DUO:0000006"
GRU = "DUO:0000042"
POA = "DUO:0000011"
ITEMS: list[dict[str, Any]] = [
    {"item_id": "hmb", "effect": "permit", "purpose": {"code": "HMB"}, "actions": ["analyse"]},
    {"item_id": "gru", "effect": "permit", "purpose": {"code": "GRU"}, "actions": ["analyse"]},
]
# who consents to what: A health research only, B both, C nothing, D both (and withdraws later)
CHOICES = {
    "A": {"hmb": True, "gru": False},
    "B": {"hmb": True, "gru": True},
    "C": None,
    "D": {"hmb": True, "gru": True},
}
ROWS_EACH = {"A": 3, "B": 2, "C": 4, "D": 5}


@dataclass
class World:
    client: TestClient
    platform: Platform
    pid: str
    people: dict[str, Person]
    nids: dict[str, str] = field(default_factory=dict)
    pseudonyms: dict[str, str] = field(default_factory=dict)

    @property
    def dm(self) -> dict[str, str]:
        return self.people["data_manager"].headers

    @property
    def member(self) -> dict[str, str]:
        return self.people["member"].headers

    def query(self, sql: str, purpose: str = HMB, who: str = "member", **extra: Any) -> Any:
        return self.client.post(
            f"/v1/projects/{self.pid}/datasets/query",
            json={"sql": sql, "purpose": purpose, **extra},
            headers=self.people[who].headers,
        )

    def rows(self, sql: str, purpose: str = HMB) -> list[list[Any]]:
        response = self.query(sql, purpose)
        assert response.status_code == 200, response.text
        rows: list[list[Any]] = response.json()["rows"]
        return rows

    def ingest(self, path: str, **body: Any) -> Any:
        return self.client.post(
            f"/v1/projects/{self.pid}/datasets",
            json={"source": {"area": "import", "path": path}, **body},
            headers=self.dm,
        )

    def csv(self, lines: list[str], name: str) -> None:
        upload(self.client, self.pid, self.dm, "\n".join(lines).encode() + b"\n", name, "import")


def make_world(
    client: TestClient, platform: Platform, project: str, people: dict[str, Person]
) -> World:
    w = World(client, platform, project, people)
    owner = people["owner"].headers
    patched = client.patch(
        f"/v1/projects/{project}",
        json={"purposes": [{"code": HMB}, {"code": GRU}]},
        headers=owner,
    )
    assert patched.status_code == 200, patched.text
    base = f"/v1/projects/{project}/consent"
    study = client.post(f"{base}/studies", json={"name": "Cohort"}, headers=w.dm).json()
    made = client.post(
        f"{base}/studies/{study['id']}/templates",
        json={"title": "Consent", "texts": TEXTS, "items": ITEMS},
        headers=w.dm,
    ).json()
    published = client.post(
        f"{base}/templates/{made['template_id']}/versions/{made['version']}/publish",
        headers=w.dm,
    )
    assert published.status_code == 200, published.text
    rng = random.Random(7)
    for n, who in enumerate(CHOICES):
        nid = national_id(dt.date(1960 + n, 3, 4 + n), rng)
        enrolled = client.post(
            f"{base}/participants",
            json={"national_id": nid, "email": "x@example.org"},
            headers=w.dm,
        )
        assert enrolled.status_code == 201, enrolled.text
        w.nids[who] = nid
        w.pseudonyms[who] = enrolled.json()["pseudonym"]
        choices = CHOICES[who]
        if choices is not None:
            given = client.post(
                "/v1/participant/consents",
                json={"template_version": published.json()["version_id"], "choices": choices},
                headers=session_headers(platform, project, w.pseudonyms[who]),
            )
            assert given.status_code == 201, given.text
    lines = ["national_id;score;code;name"]
    for who, count in ROWS_EACH.items():
        for i in range(count):
            lines.append(f"{w.nids[who]};{10 * i + len(who)};C{i % 2};Person {who}")
    w.csv(lines, "visits.csv")
    return w


@pytest.fixture
def world(client: TestClient, platform: Platform, project: str, people: dict[str, Person]) -> World:
    return make_world(client, platform, project, people)


def ingest_and_query(w: World) -> None:
    """The scenario run on every backend combination."""
    created = w.ingest("visits.csv", name="visits", participant_column="national_id", drop=["name"])
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["rows_loaded"] == sum(ROWS_EACH.values())
    version = body["version"]
    assert [c["name"] for c in version["columns"]] == ["participant", "score", "code"]
    assert version["lineage"]["source_path"] == "visits.csv"
    assert version["lineage"]["rules"] == [
        "pseudonymise:national_id->participant",
        "drop:name",
        "encoding:utf8",
        "delimiter:;",
    ]
    assert body["read"] == {
        "format": "csv",
        "encoding": "utf8",
        "delimiter": ";",
        "header": True,
        "detected": ["encoding", "delimiter", "header"],
    }
    assert len(version["lineage"]["source_sha256"]) == 64

    count = "SELECT count(*) FROM visits"
    assert w.rows(count) == [[3 + 2 + 5]]  # A, B, D consented to health research
    assert w.rows(count, GRU) == [[2 + 5]]  # only B and D to general research
    shown = w.rows("SELECT DISTINCT participant FROM visits ORDER BY 1")
    assert sorted(r[0] for r in shown) == sorted(w.pseudonyms[x] for x in "ABD")
    agg = w.rows("SELECT max(score), string_agg(participant, ',') FROM visits")
    assert w.pseudonyms["C"] not in agg[0][1]

    # D withdraws through the participant API: gone from the very next query
    me = session_headers(w.platform, w.pid, w.pseudonyms["D"])
    withdrawn = w.client.post("/v1/participant/withdraw", json={"scope": "stop_use"}, headers=me)
    assert withdrawn.status_code == 201, withdrawn.text
    after = w.query(count)
    assert after.json()["rows"] == [[3 + 2]]
    assert w.rows(count, GRU) == [[2]]
    joined = w.rows(
        "WITH s AS (SELECT participant, sum(score) AS t FROM visits GROUP BY 1) "
        "SELECT count(*) FROM visits v JOIN s USING (participant) "
        "WHERE v.participant IN (SELECT participant FROM visits)"
    )
    assert joined == [[3 + 2]]

    # the decision log holds the query with its ledger position and requester
    log = w.client.get(
        f"/v1/projects/{w.pid}/consent/decision-log",
        params={"limit": 500},
        headers=w.people["owner"].headers,
    ).json()["items"]
    last = [e for e in log if e["id"] in after.json()["log_ids"]]
    assert len(last) == 1
    assert last[0]["kind"] == "query"
    assert last[0]["ledger_position"] == after.json()["ledger_position"]
    assert last[0]["requester"] == "user:member"
    assert last[0]["use"]["purpose"]["code"] == "HMB"
    # ... and "which uses relied on my consent" finds the queries for B, not for C
    owner = w.people["owner"].headers
    base = f"/v1/projects/{w.pid}/consent/participants"
    uses_b = w.client.get(f"{base}/{w.pseudonyms['B']}/uses", headers=owner).json()
    assert "query" in {u["kind"] for u in uses_b}
    uses_c = w.client.get(f"{base}/{w.pseudonyms['C']}/uses", headers=owner).json()
    assert uses_c == []
    audit = w.client.get(
        f"/v1/projects/{w.pid}/audit",
        params={"action": "consent.query"},
        headers=w.people["owner"].headers,
    ).json()["items"]
    assert audit[-1]["details"]["datasets"] == ["visits@1"]

    # no plaintext in the stored object
    with w.platform.db.read() as s:
        key = s.execute(select(DatasetVersionRow.storage_key)).scalar_one()
    stored = w.platform.store().read_bytes(key)
    assert w.nids["A"].encode() not in stored
    assert w.pseudonyms["A"].encode() not in stored
    assert b"PAR1" not in stored


def test_ingest_query_withdraw_and_log(world: World) -> None:
    ingest_and_query(world)


def test_purposes_not_approved_are_refused_and_audited(world: World) -> None:
    assert world.ingest("visits.csv", name="visits", participant_column="national_id").status_code
    refused = world.query("SELECT count(*) FROM visits", POA)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "purpose_not_approved"
    unknown = world.query("SELECT 1", "DUO:9999999")
    assert unknown.status_code == 422
    denied = world.client.get(
        f"/v1/projects/{world.pid}/audit",
        params={"action": "dataset.query", "outcome": "denied"},
        headers=world.people["owner"].headers,
    ).json()["items"]
    assert denied[-1]["details"]["reason"] == "purpose_not_approved"


def test_an_action_the_consent_does_not_cover_sees_nobody(world: World) -> None:
    world.ingest("visits.csv", name="visits", participant_column="national_id")
    response = world.query("SELECT count(*) FROM visits", action="share")
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [[0]]


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "function"),
        ("SELECT count(*) FROM visits; SELECT 1", "statements"),
        ("ATTACH 'x.db' AS x", "statement"),
        ("PRAGMA database_list", "statement"),
        ("SELECT * FROM '/etc/passwd'", "table"),
        ("SELECT * FROM other_projects_table", "table"),
        ("SELECT getenv('HOME')", "function"),
    ],
)
def test_sql_escapes_are_refused(world: World, sql: str, reason: str) -> None:
    world.ingest("visits.csv", name="visits", participant_column="national_id")
    response = world.query(sql)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "query_refused"
    assert reason in error["details"]["reason"]


def test_another_projects_dataset_is_not_a_table(world: World) -> None:
    world.ingest("visits.csv", name="visits", participant_column="national_id")
    outsider = world.people["outsider"]
    other = outsider.extra["project"]
    response = world.client.post(
        f"/v1/projects/{other}/datasets/query",
        json={"sql": "SELECT count(*) FROM visits", "purpose": HMB},
        headers=outsider.headers,
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] == "table"


def test_invalid_ids_are_reported_by_row_and_nothing_is_loaded(world: World) -> None:
    good = world.nids["A"]
    world.csv(
        [
            "national_id,score",
            f"{good},1",
            f"{good[:-1]}{(int(good[-1]) + 1) % 10},2",  # checksum
            "123,3",  # length
            f"{national_id(dt.date(1990, 1, 1), random.Random(3))},4",  # valid, not enrolled
            ",5",
        ],
        "bad.csv",
    )
    response = world.ingest("bad.csv", name="bad", participant_column="national_id")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "ingest_rejected"
    assert error["details"]["rejections"] == [
        {"row": 2, "reason": "checksum"},
        {"row": 3, "reason": "length"},
        {"row": 4, "reason": "not_enrolled"},
        {"row": 5, "reason": "missing"},
    ]
    assert good not in response.text
    with world.platform.db.read() as s:
        assert s.execute(select(func.count()).select_from(Dataset)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(DatasetVersionRow)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(ParticipantKeyRow)).scalar_one() == 0
    stored = [i.key for i in world.platform.store().list() if "/datasets/" in i.key]
    assert stored == []
    assert list(world.platform.store().list_uploads()) == []
    assert world.client.get(f"/v1/projects/{world.pid}/datasets", headers=world.member).json() == []

    kept = world.ingest("bad.csv", name="bad", participant_column="national_id", keep_valid=True)
    assert kept.status_code == 201, kept.text
    assert kept.json()["rows_loaded"] == 1
    assert kept.json()["version"]["rejections"] == {
        "checksum": 1,
        "length": 1,
        "not_enrolled": 1,
        "missing": 1,
    }
    assert "keep_valid" in kept.json()["version"]["lineage"]["rules"]


def test_versions_datasets_and_lineage(world: World) -> None:
    first = world.ingest(
        "visits.csv",
        name="visits",
        participant_column="national_id",
        description="Clinic visits",
        column_descriptions={"score": "Points"},
    )
    assert first.status_code == 201, first.text
    second = world.ingest(
        "visits.csv", name="visits", participant_column="national_id", drop=["code"]
    )
    assert second.json()["version"]["version"] == 2
    listed = world.client.get(f"/v1/projects/{world.pid}/datasets", headers=world.member).json()
    assert [(d["name"], d["current_version"], d["queryable"]) for d in listed] == [
        ("visits", 2, True)
    ]
    shown = world.client.get(
        f"/v1/projects/{world.pid}/datasets/visits", headers=world.member
    ).json()
    assert shown["description"] == "Clinic visits"
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    one = world.client.get(
        f"/v1/projects/{world.pid}/datasets/visits/versions/1", headers=world.member
    ).json()
    assert one["columns"][1] == {"name": "score", "type": "int64", "description": "Points"}
    assert one["lineage"]["created_by"] == "user:datamanager"
    # queries read the current version: "code" is gone
    failed = world.query("SELECT code FROM visits")
    assert failed.status_code == 400
    assert failed.json()["error"]["code"] == "query_failed"
    missing = world.client.get(
        f"/v1/projects/{world.pid}/datasets/visits/versions/3", headers=world.member
    )
    assert missing.status_code == 404


def test_a_dataset_without_participants_needs_the_no_personal_data_mark(world: World) -> None:
    world.ingest("visits.csv", name="visits", participant_column="national_id")
    world.csv(["code,label", "C0,first", "C1,second"], "codes.csv")
    created = world.ingest("codes.csv", name="codes")
    assert created.status_code == 201, created.text
    sql = "SELECT c.label, count(*) FROM visits v JOIN codes c USING (code) GROUP BY 1 ORDER BY 1"
    refused = world.query(sql)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "dataset_not_queryable"
    marked = world.client.patch(
        f"/v1/projects/{world.pid}/datasets/codes", json={"personal_data": False}, headers=world.dm
    )
    assert marked.status_code == 200, marked.text
    assert marked.json()["queryable"] is True
    assert world.rows(sql) == [["first", 6], ["second", 4]]


def test_result_formats_pages_and_limits(world: World) -> None:
    world.ingest("visits.csv", name="visits", participant_column="national_id")
    sql = "SELECT participant, score FROM visits ORDER BY score, participant"
    first = world.query(sql, limit=4).json()
    assert (first["total_rows"], len(first["rows"]), first["next_page"]) == (10, 4, 2)
    third = world.query(sql, limit=4, page=3).json()
    assert len(third["rows"]) == 2
    assert third["next_page"] is None
    csv = world.query(sql, format="csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert pacsv.read_csv(io.BytesIO(csv.content)).num_rows == 10
    assert csv.headers["x-hvelv-ledger-position"] == str(first["ledger_position"])
    parquet = world.query(sql, format="parquet")
    assert pq.read_table(io.BytesIO(parquet.content)).column_names == ["participant", "score"]
    arrow = world.query(sql, format="arrow")
    assert ipc.open_stream(arrow.content).read_all().num_rows == 10
    world.platform.datasets.limits = QueryLimits(max_rows=3)
    limited = world.query(sql)
    assert limited.status_code == 422
    assert limited.json()["error"]["details"]["limit"] == "rows"


def test_roles(world: World) -> None:
    member = world.people["member"].headers
    body = {"name": "visits", "source": {"area": "import", "path": "visits.csv"}}
    url = f"/v1/projects/{world.pid}/datasets"
    assert world.client.post(url, json=body, headers=member).status_code == 403
    assert (
        world.client.post(url, json=body, headers=world.people["owner"].headers).status_code == 403
    )
    assert world.client.get(url, headers=world.people["auditor"].headers).status_code == 403
    assert world.client.get(url, headers=world.people["operator"].headers).status_code == 403
    assert world.query("SELECT 1", who="auditor").status_code == 403
    assert world.query("SELECT 1", who="operator").status_code == 403
    assert world.query("SELECT 1", who="owner").status_code == 200
