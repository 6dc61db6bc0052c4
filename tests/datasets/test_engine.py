"""Consent-enforced queries: rows of participants not permitted never appear, in any query."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hvelv.datasets.enforce import connect_locked
from hvelv.datasets.engine import EngineSettings, QueryEngine, QueryLimits
from hvelv.datasets.errors import (
    DatasetNotQueryable,
    QueryFailed,
    QueryLimitExceeded,
    RefusedQuery,
)
from hvelv.datasets.ingest import DatasetVersion
from hvelv.datasets.keys import PK_COLUMN, ParticipantKeys, Permits
from hvelv.datasets.storage import read_table
from hvelv.datasets.synthetic import ICD10, Cohort
from hvelv.storage.local import LocalBlobStore
from tests.datasets.conftest import Ingest, ingester

QUERIES = [
    "SELECT count(*) FROM visits",
    "SELECT participant, count(*) FROM visits GROUP BY participant",
    "SELECT min(lab_value), max(lab_value), min(participant), max(participant) FROM visits",
    "SELECT string_agg(DISTINCT participant, ',' ORDER BY participant) FROM visits",
    "SELECT list(DISTINCT participant ORDER BY participant) FROM visits",
    "SELECT v.participant, v.icd10, p.sex FROM visits v JOIN people p USING (participant)",
    "SELECT p.participant, v.icd10 FROM people p LEFT JOIN visits v"
    " ON v.participant = p.participant",
    "SELECT * FROM people WHERE participant IN (SELECT participant FROM visits WHERE age > '40')",
    "SELECT * FROM people p"
    " WHERE EXISTS (SELECT 1 FROM visits v WHERE v.participant = p.participant)",
    "SELECT (SELECT max(participant) FROM people), (SELECT count(*) FROM visits)",
    "WITH visits AS (SELECT * FROM visits) SELECT count(DISTINCT participant) FROM visits",
    "WITH x AS (SELECT participant FROM people) SELECT * FROM x JOIN visits USING (participant)",
    "SELECT participant, row_number() OVER (PARTITION BY participant"
    " ORDER BY visit_date, lab_value) FROM visits",
    "SELECT participant, count(*) OVER () FROM people",
    "SELECT participant, lag(participant) OVER (ORDER BY participant) FROM people",
    "SELECT participant FROM visits UNION SELECT participant FROM people",
    "SELECT participant FROM visits UNION ALL SELECT participant FROM people",
    "SELECT participant FROM people EXCEPT SELECT participant FROM visits",
    "SELECT participant FROM people INTERSECT SELECT participant FROM visits",
    "SELECT * FROM people, LATERAL (SELECT count(*) AS n FROM visits v "
    "WHERE v.participant = people.participant) l",
    "SELECT d.description, count(*) FROM visits v JOIN icd_names d ON v.icd10 = d.code GROUP BY 1",
    "SELECT * FROM icd_names",
    "SELECT arg_max(participant, lab_value), arg_min(participant, lab_value) FROM visits",
    "SELECT icd10, count(*), count(DISTINCT participant) FROM visits GROUP BY ALL",
]


def canonical(table: pa.Table) -> list[tuple[object, ...]]:
    rows = [tuple(r.values()) for r in table.to_pylist()]
    return sorted(rows, key=repr)


class World:
    """Three datasets ingested from a synthetic cohort, and a reference oracle."""

    def __init__(self, run_ingest: Ingest, cohort: Cohort, visits: pa.Table, tmp: Path) -> None:
        self.keys = ParticipantKeys()
        pq.write_table(visits, tmp / "visits.parquet")
        pq.write_table(cohort.participants(), tmp / "people.parquet")
        codes = pa.table(
            {"code": [c for c, _ in ICD10], "description": [f"d-{c}" for c, _ in ICD10]}
        )
        pq.write_table(codes, tmp / "codes.parquet")
        pq.write_table(pa.table({"note": ["x"]}), tmp / "notes.parquet")
        self.versions: dict[str, DatasetVersion] = {}
        for name, path, opts in [
            ("visits", tmp / "visits.parquet", {"drop": frozenset({"name"})}),
            ("people", tmp / "people.parquet", {"drop": frozenset({"name"})}),
            ("icd_names", tmp / "codes.parquet",
             {"participant_column": None, "personal_data": False}),
            ("notes", tmp / "notes.parquet", {"participant_column": None}),
        ]:  # fmt: skip
            report = run_ingest(path, name, keys=self.keys, **opts)
            assert report.version is not None
            self.versions[name] = report.version
        self.plain = {n: read_table(v.location) for n, v in self.versions.items()}
        self.all = list(self.keys.pseudonyms())

    def reference(
        self, sql: str, permitted: set[str], *, ordered: bool = False
    ) -> list[tuple[object, ...]]:
        con = duckdb.connect()
        for name, table in self.plain.items():
            if PK_COLUMN in table.column_names:
                keep = pa.array([p in permitted for p in table.column("participant").to_pylist()])
                table = table.filter(keep).drop_columns([PK_COLUMN])
            con.register(f"t_{name}", table)
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM "t_{name}"')  # noqa: S608
        table = con.sql(sql).to_arrow_table()
        return [tuple(r.values()) for r in table.to_pylist()] if ordered else canonical(table)

    def permits(self, permitted: set[str], position: int = 1) -> Permits:
        return Permits.from_pseudonyms(self.keys, permitted, position)


@pytest.fixture(scope="module")
def world(cohort: Cohort, visits: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Built once per module: versions are immutable and every test has its own engine."""
    tmp = tmp_path_factory.mktemp("world")
    return World(ingester(LocalBlobStore(tmp / "blobs")), cohort, visits, tmp)


def query(engine: QueryEngine, world: World, sql: str, permitted: set[str], use: str = "u1",
          **kw: object) -> pa.Table:  # fmt: skip
    return engine.query(
        sql,
        datasets=world.versions,
        use=use,
        permits=world.permits(permitted),
        **kw,  # type: ignore[arg-type]
    ).table


@pytest.mark.parametrize("sql", QUERIES)
def test_hidden_participants_never_appear(sql: str, engine: QueryEngine, world: World) -> None:
    rnd = random.Random(sql)
    permitted = set(rnd.sample(world.all, len(world.all) // 2))
    hidden = set(world.all) - permitted
    result = query(engine, world, sql, permitted)
    text = repr(result.to_pylist())
    assert not any(h in text for h in hidden)
    assert canonical(result) == world.reference(sql, permitted)


def test_the_oracle_would_notice_a_leak(world: World) -> None:
    rows = world.plain["visits"].to_pylist()
    hidden = {
        min(rows, key=lambda r: r["lab_value"])["participant"],
        max(rows, key=lambda r: r["lab_value"])["participant"],
        min(r["participant"] for r in rows),
        max(r["participant"] for r in rows),
    }
    permitted = set(world.all) - hidden
    for sql in QUERIES[:6]:
        assert world.reference(sql, permitted) != world.reference(sql, set(world.all))


def test_withdrawal_is_visible_to_the_next_query(engine: QueryEngine, world: World) -> None:
    permitted = set(world.all)
    counts = world.plain["visits"].group_by("participant").aggregate([("participant", "count")])
    per = dict(zip(counts.column(0).to_pylist(), counts.column(1).to_pylist(), strict=True))
    total = sum(per.values())
    sql = "SELECT count(*) AS n FROM visits"
    assert query(engine, world, sql, permitted).column("n")[0].as_py() == total
    leaving = world.all[3]
    permitted.discard(leaving)
    assert query(engine, world, sql, permitted).column("n")[0].as_py() == total - per[leaving]
    names = query(engine, world, "SELECT DISTINCT participant FROM visits", permitted)
    assert leaving not in names.column(0).to_pylist()
    permitted.add(leaving)  # consents again
    assert query(engine, world, sql, permitted).column("n")[0].as_py() == total
    stats = engine.database("u1").copy_of(world.versions["visits"]).stats
    assert stats == {"builds": 1, "updates": 2}  # incremental, not rebuilt


@pytest.mark.parametrize("rebuild_fraction", [0.0, 1.0])
def test_incremental_and_rebuilt_copies_agree(rebuild_fraction: float, world: World) -> None:
    engine = QueryEngine(EngineSettings(memory_limit="256MB", threads=1,
                                        rebuild_fraction=rebuild_fraction))  # fmt: skip
    rnd = random.Random(7)
    try:
        for _ in range(8):
            permitted = set(rnd.sample(world.all, rnd.randrange(len(world.all) + 1)))
            sql = "SELECT participant, count(*), sum(lab_value) FROM visits GROUP BY 1"
            assert canonical(query(engine, world, sql, permitted)) == world.reference(
                sql, permitted
            )
    finally:
        engine.close()


def test_uses_are_isolated_databases(engine: QueryEngine, world: World) -> None:
    a = set(world.all[:5])
    b = set(world.all[5:])
    query(engine, world, "SELECT count(*) FROM visits", a, use="use-a")
    query(engine, world, "SELECT count(*) FROM visits", b, use="use-b")
    con = engine.database("use-a").con
    tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
    seen: set[str] = set()
    for t in tables:
        seen |= {r[0] for r in con.execute(f'SELECT participant FROM "{t}"').fetchall()}  # noqa: S608
    assert seen == {p for p in a if p in set(world.plain["visits"].column(0).to_pylist())}


def test_permits_shorter_than_the_keys_deny_the_rest(engine: QueryEngine, world: World) -> None:
    permits = Permits.from_mask(np.ones(3, dtype=np.bool_), 9)  # snapshot before enrolment
    result = engine.query(
        "SELECT DISTINCT participant FROM people", datasets=world.versions, use="u", permits=permits
    )
    assert sorted(result.table.column(0).to_pylist()) == sorted(world.all[:3])
    assert result.ledger_position == 9
    assert result.datasets == ("people@1",)


def test_dataset_without_participants_needs_the_no_personal_data_mark(
    engine: QueryEngine, world: World
) -> None:
    with pytest.raises(DatasetNotQueryable, match="notes"):
        query(engine, world, "SELECT * FROM notes", set(world.all))
    # a query not reading it is unaffected
    assert query(engine, world, "SELECT count(*) FROM icd_names", set()).num_rows == 1


def test_refused_sql_never_reaches_duckdb(engine: QueryEngine, world: World) -> None:
    for sql in ["PRAGMA database_list", "SELECT * FROM read_csv('/etc/passwd')",
                "ATTACH ':memory:' AS x", "SELECT 1; SELECT 2", "SELECT * FROM other"]:  # fmt: skip
        with pytest.raises(RefusedQuery):
            query(engine, world, sql, set(world.all))


def test_duckdb_errors_are_clear_and_hide_internal_names(engine: QueryEngine, world: World) -> None:
    with pytest.raises(QueryFailed) as info:
        query(engine, world, "SELECT no_such_column FROM visits", set(world.all))
    assert "no_such_column" in str(info.value)
    assert "__hv" not in str(info.value)


@pytest.mark.parametrize(
    ("sql", "limits", "which"),
    [
        ("SELECT * FROM visits", QueryLimits(max_rows=10), "rows"),
        ("SELECT * FROM visits", QueryLimits(max_bytes=1000), "bytes"),
        ("SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b",
         QueryLimits(timeout_s=0.2), "time"),
    ],
)  # fmt: skip
def test_limits(
    sql: str, limits: QueryLimits, which: str, engine: QueryEngine, world: World
) -> None:
    with pytest.raises(QueryLimitExceeded) as info:
        query(engine, world, sql, set(world.all), limits=limits)
    assert info.value.limit == which
    # the use's database still works afterwards
    assert query(engine, world, "SELECT count(*) FROM people", set(world.all)).num_rows == 1


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/hvelv-leak.csv'",
        "ATTACH '/tmp/hvelv-leak.db' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET memory_limit = '100GB'",
        "SET temp_directory = '/tmp'",
        "SELECT * FROM secret_arrow_table",
    ],
)
def test_the_duckdb_database_is_locked_down_even_without_vetting(statement: str) -> None:
    secret_arrow_table = pa.table({"x": [1]})  # a replacement scan would find this
    con = connect_locked(memory_limit="64MB", threads=1)
    assert secret_arrow_table.num_rows == 1
    with pytest.raises(duckdb.Error):
        con.execute(statement)


def test_enum_columns_keep_text_semantics(engine: QueryEngine, world: World) -> None:
    permitted = set(world.all)
    for sql in [
        "SELECT count(*) FROM visits WHERE icd10 = 'NOT-A-CODE'",
        "SELECT count(*) FROM visits WHERE icd10 > 'F' AND icd10 BETWEEN 'A' AND 'K'",
        "SELECT icd10 || '!', upper(lab_test), length(icd10) FROM visits",
        "SELECT max(icd10), min(lab_test) FROM visits",
        "SELECT icd10 FROM visits ORDER BY icd10, lab_test, participant, visit_date, lab_value",
        "SELECT icd10 FROM visits UNION SELECT 'ZZZ'",
        "SELECT count(*) FROM visits WHERE icd10 IN ('I10', 'nope') OR lab_test LIKE 'HbA%'",
    ]:
        result = query(engine, world, sql, permitted)
        if "ORDER BY" in sql:  # the order itself must be that of text
            assert [tuple(r.values()) for r in result.to_pylist()] == world.reference(
                sql, permitted, ordered=True
            )
        assert canonical(result) == world.reference(sql, permitted)


def test_a_value_unknown_to_the_enum_rebuilds_the_copy(run_ingest: Ingest, tmp_path: Path) -> None:
    engine = QueryEngine(EngineSettings(memory_limit="128MB", threads=1, rebuild_fraction=1.0))
    table = pa.table(
        {
            "national_id": ["15108695088", "15108695088", "31129956715"],
            "icd10": ["I10", "I10", "C50.9"],  # C50.9 only for the second participant
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    keys = ParticipantKeys()
    report = run_ingest(tmp_path / "t.parquet", "dx", keys=keys, allow_synthetic=False)
    assert report.version is not None
    datasets = {"dx": report.version}
    sql = "SELECT icd10, count(*) AS n FROM dx GROUP BY icd10 ORDER BY icd10"
    only_first = Permits.from_mask([True, False], 1)
    both = Permits.from_mask([True, True], 2)
    first = engine.query(sql, datasets=datasets, use="u", permits=only_first).table
    assert first.to_pylist() == [{"icd10": "I10", "n": 2}]
    assert engine.database("u").copy_of(report.version).enum_values == {"icd10": {"I10"}}
    second = engine.query(sql, datasets=datasets, use="u", permits=both).table
    assert second.to_pylist() == [{"icd10": "C50.9", "n": 1}, {"icd10": "I10", "n": 2}]
    assert engine.database("u").copy_of(report.version).stats == {"builds": 2, "updates": 0}
    third = engine.query(sql, datasets=datasets, use="u", permits=only_first).table
    assert third.to_pylist() == [{"icd10": "I10", "n": 2}]
    assert engine.database("u").copy_of(report.version).stats == {"builds": 2, "updates": 1}
    engine.close()


def test_type_introspection_is_refused(engine: QueryEngine, world: World) -> None:
    for sql in ["SELECT typeof(icd10) FROM visits", "SELECT enum_range(icd10) FROM visits",
                "SELECT * FROM duckdb_types()"]:  # fmt: skip
        with pytest.raises(RefusedQuery, match="not allowed"):
            query(engine, world, sql, set(world.all))
