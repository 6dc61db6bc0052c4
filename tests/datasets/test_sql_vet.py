"""Vetting and rewriting researcher SQL (sqlglot, DuckDB dialect)."""

from __future__ import annotations

import duckdb
import pytest

from hvelv.datasets.errors import RefusedQuery
from hvelv.datasets.sql_vet import vet_query

REL = {"visits": "__hv_v1", "people": "__hv_v2"}


def refused(sql: str) -> RefusedQuery:
    with pytest.raises(RefusedQuery) as info:
        vet_query(sql, REL)
    return info.value


@pytest.mark.parametrize(
    ("sql", "reason", "names"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "function", "read_csv"),
        ("SELECT * FROM read_csv_auto('/etc/passwd')", "function", "read_csv_auto"),
        ("SELECT * FROM read_parquet('x.parquet')", "function", "read_parquet"),
        ("SELECT * FROM read_json_auto('x.json')", "function", "read_json_auto"),
        ("SELECT * FROM read_text('/etc/hosts')", "function", "read_text"),
        ("SELECT * FROM glob('/*')", "function", "glob"),
        ("SELECT getenv('HOME')", "function", "getenv"),
        ("SELECT current_setting('memory_limit')", "function", "current_setting"),
        ("SELECT * FROM query('SELECT 1')", "function", "query"),
        ("SELECT * FROM duckdb_tables()", "function", "duckdb_tables"),
        ("SELECT * FROM duckdb_settings()", "function", "duckdb_settings"),
        ("SELECT getvariable('x')", "function", "getvariable"),
        ("SELECT load_extension('httpfs')", "function", "load_extension"),
        ("SELECT * FROM visits WHERE participant IN (SELECT * FROM glob('*'))", "function", "glob"),
        ("SELECT * FROM '/etc/passwd'", "table", "/etc/passwd"),
        ("SELECT * FROM 'https://example.org/x.parquet'", "table", "https://example.org"),
        ("SELECT * FROM other_project_data", "table", "other_project_data"),
        ("SELECT * FROM main.visits", "table", "main.visits"),
        ("SELECT * FROM otherdb.main.visits", "table", "otherdb"),
        ("SELECT * FROM information_schema.tables", "table", "information_schema"),
        ("SELECT * FROM sqlite_master", "table", "sqlite_master"),
        ("SELECT * FROM __hv_v2", "reserved", "__hv"),
        ('SELECT * FROM "__hv_v1"', "reserved", "__hv"),
        ("WITH __hv_v1 AS (SELECT 1 AS x) SELECT * FROM visits", "reserved", "__hv"),
        ("SELECT * FROM visits AS __hv_v2", "reserved", "__hv"),
        ("SELECT 1; SELECT 2", "statements", "exactly one"),
        ("SELECT * FROM visits; DROP TABLE visits", "statements", "exactly one"),
        ("", "statements", "got 0"),
        ("PRAGMA database_list", "statement", "PRAGMA"),
        ("PRAGMA enable_external_access", "statement", "PRAGMA"),
        ("SET enable_external_access = true", "statement", "SET"),
        ("ATTACH '/tmp/x.db' AS x", "statement", "ATTACH"),
        ("DETACH x", "statement", "DETACH"),
        ("INSTALL httpfs", "statement", "INSTALL"),
        ("LOAD httpfs", "statement", "COMMAND"),
        ("COPY visits TO '/tmp/out.csv'", "statement", "COPY"),
        ("CREATE TABLE x AS SELECT * FROM visits", "statement", "CREATE"),
        ("INSERT INTO visits VALUES (1)", "statement", "INSERT"),
        ("DELETE FROM visits", "statement", "DELETE"),
        ("DESCRIBE visits", "statement", "DESCRIBE"),
        ("SELECT * FROM (DESCRIBE visits)", "statement", "DESCRIBE"),
        ("SUMMARIZE visits", "statement", "SUMMARIZE"),
        ("EXPLAIN SELECT 1", "statement", ""),
        ("SELECT * FROM visits WHERE participant = $1", "statement", ""),
        ("SELECT * FROM visits WHERE participant = ?", "statement", ""),
        ("SELECT FROM WHERE", "syntax", ""),
    ],
)
def test_escape_attempts_are_refused_naming_what(sql: str, reason: str, names: str) -> None:
    error = refused(sql)
    assert error.reason == reason
    assert names.lower() in str(error).lower()
    assert error.status == 400
    assert error.code == "query_refused"


def test_a_plain_query_is_rewritten_to_the_internal_relation() -> None:
    v = vet_query("SELECT icd10, count(*) FROM visits GROUP BY icd10", REL)
    assert v.sql == 'SELECT icd10, COUNT(*) FROM main."__hv_v1" AS visits GROUP BY icd10'
    assert v.datasets == {"visits"}


def test_names_are_case_insensitive_and_aliases_kept() -> None:
    v = vet_query("SELECT v.x FROM Visits v JOIN PEOPLE ON v.p = people.p", REL)
    assert 'main."__hv_v1" AS v' in v.sql
    assert 'main."__hv_v2" AS PEOPLE' in v.sql
    assert v.datasets == {"visits", "people"}


def test_cte_named_like_a_dataset_reads_the_restricted_dataset() -> None:
    # The CTE's body reads the real dataset (rewritten); the outer query reads the CTE.
    v = vet_query("WITH visits AS (SELECT * FROM visits WHERE x > 1) SELECT * FROM visits", REL)
    assert v.sql == (
        'WITH visits AS (SELECT * FROM main."__hv_v1" AS visits WHERE x > 1) SELECT * FROM visits'
    )


def test_every_reference_in_every_scope_is_rewritten() -> None:
    sql = """
        WITH p AS (SELECT * FROM people)
        SELECT (SELECT max(a) FROM people WHERE people.id = visits.id)
        FROM visits, LATERAL (SELECT * FROM people pp WHERE pp.id = visits.id) l
        WHERE id IN (SELECT id FROM people) AND EXISTS (SELECT 1 FROM visits v2)
        UNION ALL SELECT * FROM p
    """
    v = vet_query(sql, REL)
    parsed = v.sql
    assert parsed.count('main."__hv_v2"') == 4
    assert parsed.count('main."__hv_v1"') == 2
    for word in (" people ", " visits ", "FROM people", "FROM visits"):
        assert word not in parsed.replace("AS people", "").replace("AS visits", "")


def test_a_table_alias_named_like_a_cte_is_still_the_dataset() -> None:
    v = vet_query("WITH x AS (SELECT 1 AS a) SELECT * FROM visits AS x", REL)
    assert v.sql.endswith('FROM main."__hv_v1" AS x')


def test_a_cte_referenced_under_an_alias_is_not_rewritten() -> None:
    v = vet_query("WITH people AS (SELECT 1 AS a) SELECT * FROM people AS y", REL)
    assert "__hv" not in v.sql


def test_recursive_cte_and_table_functions() -> None:
    v = vet_query(
        "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT * FROM r, visits, range(3) t(i)",
        REL,
    )
    assert 'main."__hv_v1" AS visits' in v.sql
    assert v.datasets == {"visits"}


def test_comments_are_dropped() -> None:
    v = vet_query("SELECT 1 /* */ AS x FROM visits -- ; DROP TABLE x", REL)
    assert "--" not in v.sql
    assert "/*" not in v.sql


def test_internal_names_must_be_reserved() -> None:
    with pytest.raises(ValueError, match="reserved prefix"):
        vet_query("SELECT 1", {"visits": "plain_name"})


def test_rewritten_sql_runs_on_duckdb_with_common_functions() -> None:
    con = duckdb.connect()
    con.execute(
        'CREATE TABLE "__hv_v1" AS SELECT range AS id, range % 3 AS a, '
        "DATE '2024-01-01' + range::INT AS d, 'x' || range AS s FROM range(10)"
    )
    sql = """
        SELECT a, count(*) AS n, min(d), max(s), string_agg(s, ',' ORDER BY s),
               avg(id), median(id), quantile_cont(id, 0.5), stddev(id),
               date_trunc('month', min(d)), year(min(d)), strftime(min(d), '%Y'),
               list(id ORDER BY id), count_if(id > 3), arg_max(s, id), coalesce(max(id), 0),
               CASE WHEN a > 0 THEN 'y' ELSE 'n' END AS flag, round(avg(id), 1),
               sum(id) FILTER (WHERE id > 2), bool_or(id > 8)
        FROM visits GROUP BY a ORDER BY a
    """
    rows = con.execute(vet_query(sql, REL).sql).fetchall()
    assert [r[1] for r in rows] == [4, 3, 3]
    window = vet_query(
        "SELECT id, row_number() OVER (PARTITION BY a ORDER BY id), "
        "lag(id) OVER (ORDER BY id), rank() OVER (ORDER BY a) FROM visits",
        REL,
    )
    assert len(con.execute(window.sql).fetchall()) == 10
