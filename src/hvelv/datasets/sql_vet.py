"""Vet researcher SQL and rewrite its dataset references to consent-restricted relations.

A query is parsed with sqlglot (DuckDB dialect) and must be exactly one query (``SELECT``,
``UNION``/``INTERSECT``/``EXCEPT`` of selects, ``WITH`` allowed). Refused, with
:class:`RefusedQuery` naming what was refused:

* several statements, or a statement that is not a query (``PRAGMA``, ``SET``, ``ATTACH``,
  ``COPY``, ``INSTALL``, ``LOAD``, ``CREATE``, ``DESCRIBE``...), also nested;
* a table that is neither one of the project's datasets nor a CTE in scope, a qualified table
  name (``main.x``, ``other_db.x``), a string used as a table (``FROM 'file.csv'``) and any
  name starting with the reserved prefix ``__hv`` (CTE names and aliases too);
* a function that is not on the allow-list (:data:`ALLOWED_FUNCTIONS` for the functions sqlglot
  knows by type, :data:`ALLOWED_ANONYMOUS` for DuckDB functions it passes through by name).
  File, network, extension and environment functions (``read_csv``, ``read_parquet``, ``glob``,
  ``getenv``, ``query``, ``current_setting``, ``duckdb_*``...) are not on it; table functions
  are refused except ``range``/``generate_series`` and ``unnest``;
* parameters and placeholders (``$1``, ``?``, ``getvariable``).

Which ``FROM x`` is a dataset and which is a CTE is decided by sqlglot's scope analysis
(:func:`sqlglot.optimizer.scope.traverse_scope`), the same name resolution SQL uses: a CTE
named like a dataset shadows it where it is visible, and the CTE's own body (which may read the
dataset) is rewritten like any other scope. Each dataset reference is replaced by the
schema-qualified internal relation (``main."__hv_..."``), keeping the name the query used as
its alias, so qualified columns (``ds.col``) keep working and no CTE can capture it.
Comments are dropped from the rewritten SQL.

This is the first line of defence. The engine (:mod:`hvelv.datasets.engine`) runs the result on
a DuckDB database that holds only the consent-filtered rows of one use, with file access,
extensions and replacement scans off and its configuration locked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, TokenError
from sqlglot.optimizer.scope import Scope, traverse_scope

from hvelv.datasets.errors import RefusedQuery

__all__ = [
    "ALLOWED_ANONYMOUS",
    "ALLOWED_FUNCTIONS",
    "RESERVED_PREFIX",
    "RefusedQuery",
    "VettedQuery",
    "vet_query",
]

RESERVED_PREFIX: Final = "__hv"
MAX_SQL_CHARS: Final = 100_000

# sqlglot expression classes (functions it knows by type) allowed in a query.
_ALLOWED_CLASS_NAMES: Final = """
And Or Xor Exists Case If Cast TryCast Coalesce Nullif Greatest Least Columns Count CountIf
Sum Avg Min Max Median Mode Quantile PercentileCont PercentileDisc ApproxQuantile
ApproxDistinct Stddev StddevSamp StddevPop Variance VariancePop Corr CovarPop CovarSamp
Kurtosis Skewness RegrSlope RegrIntercept RegrR2 RegrCount RegrAvgx RegrAvgy GroupConcat
ArrayAgg LogicalAnd LogicalOr ArgMin ArgMax AnyValue First Last RowNumber Rank DenseRank
PercentRank CumeDist Ntile Lag Lead FirstValue LastValue NthValue Abs Ceil Floor Round Trunc
Sqrt Cbrt Exp Ln Log Pow Sign IsNan IsInf Pi Degrees Radians Sin Cos Tan Asin Acos Atan
Atan2 Lower Upper Length Substring Left Right Trim Pad Concat ConcatWs Replace Reverse
Repeat Contains StartsWith EndsWith StrPosition SplitPart Split RegexpLike RegexpReplace
RegexpExtract Initcap Levenshtein TimestampTrunc DateTrunc Extract Year Month Day Quarter
Week WeekOfYear DayOfWeek DayOfWeekIso DayOfMonth DayOfYear Hour Minute Second DateDiff
DateAdd DateSub DateFromParts TimeToStr StrToTime StrToDate LastDay CurrentDate Monthname
Dayname ToDays TimeToUnix Date Array ArrayContains ArraySize Explode Unnest Struct
StructExtract GenerateSeries
""".split()  # noqa: SIM905

ALLOWED_FUNCTIONS: Final[frozenset[type[exp.Expression]]] = frozenset(
    getattr(exp, name) for name in _ALLOWED_CLASS_NAMES if hasattr(exp, name)
)

#: DuckDB functions sqlglot passes through as ``Anonymous``, by lower-case name.
ALLOWED_ANONYMOUS: Final = frozenset(
    """
    histogram entropy product fsum favg strlen prefix suffix date_part datepart weekday
    isoyear yearweek age date_sub to_months to_years list_extract cardinality bit_count
    list_sum list_avg list_min list_max list_count list_sort list_distinct list_unique
    array_distinct epoch epoch_ms make_timestamp printf hamming jaccard
    jaro_winkler_similarity damerau_levenshtein bool_xor nullif ifnull iff
    greatest_common_divisor least_common_multiple gcd lcm even factorial mod
    """.split()  # noqa: SIM905
)

# Statement kinds refused anywhere in the tree (a query must only read).
_ALLOWED_TYPES: Final[frozenset[type]] = frozenset(ALLOWED_FUNCTIONS)

_STATEMENT_NAMES: Final = """
DDL DML Command Pragma Set Copy Attach Detach Install Use Describe Summarize Transaction
Commit Rollback Create Drop Insert Update Delete Merge Export Show Alter Kill Refresh Cache
Uncache LoadData Analyze Grant Revoke Comment Declare Execute Into Lock Placeholder
Parameter SessionParameter
""".split()  # noqa: SIM905
_STATEMENTS: Final[tuple[type[exp.Expression], ...]] = tuple(
    getattr(exp, name) for name in _STATEMENT_NAMES if hasattr(exp, name)
)
_TABLE_FUNCTIONS: Final = (exp.GenerateSeries, exp.Unnest, exp.Explode)


@dataclass(frozen=True, slots=True)
class VettedQuery:
    """A vetted, rewritten query.

    ``sql`` is what runs (DuckDB dialect, comments dropped); ``datasets`` the project datasets it
    reads, by the name the researcher used.
    """

    sql: str
    datasets: frozenset[str]


def _parse(sql: str) -> exp.Expr:
    if len(sql) > MAX_SQL_CHARS:
        raise RefusedQuery("too_long", f"a query has at most {MAX_SQL_CHARS} characters")
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except (ParseError, TokenError) as exc:
        raise RefusedQuery("syntax", str(exc).splitlines()[0][:300]) from None
    if len(statements) != 1:
        raise RefusedQuery("statements", f"exactly one statement is allowed, got {len(statements)}")
    return statements[0]


def _function_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    try:
        return str(node.sql_name()).lower()  # type: ignore[attr-defined]
    except (AttributeError, NotImplementedError):
        return type(node).__name__.lower()


def _check_nodes(root: exp.Expr) -> None:
    for node in root.walk():
        if isinstance(node, _STATEMENTS):
            raise RefusedQuery("statement", f"{node.key.upper()} is not allowed in a query")
        if isinstance(node, exp.Anonymous):
            name = str(node.name).lower()
            if name not in ALLOWED_ANONYMOUS:
                raise RefusedQuery("function", f"function {name}() is not allowed")
        elif isinstance(node, exp.Func) and type(node) not in _ALLOWED_TYPES:
            raise RefusedQuery("function", f"function {_function_name(node)}() is not allowed")
        if isinstance(node, exp.Identifier) and str(node.name).lower().startswith(RESERVED_PREFIX):
            raise RefusedQuery("reserved", f"names starting with {RESERVED_PREFIX!r} are reserved")


def _is_cte_reference(scope: Scope, table: exp.Table) -> bool:
    if table.args.get("db") or table.args.get("catalog"):
        return False
    return isinstance(scope.sources.get(table.alias_or_name), Scope)


def vet_query(sql: str, relations: Mapping[str, str]) -> VettedQuery:
    """Vet ``sql`` and rewrite it.

    ``relations`` maps each dataset name the query may use (case-insensitive, as unquoted SQL
    names are) to the internal relation it reads instead, e.g.
    ``{"visits": "__hv_visits_3"}``; internal names must start with :data:`RESERVED_PREFIX`.
    """
    lookup = {name.lower(): internal for name, internal in relations.items()}
    for internal in lookup.values():
        if not internal.startswith(RESERVED_PREFIX):
            raise ValueError("internal relation names must start with the reserved prefix")
    root = _parse(sql)
    if not isinstance(root, exp.Query):
        raise RefusedQuery("statement", f"only a SELECT query is allowed, not {root.key.upper()}")
    _check_nodes(root)

    used: set[str] = set()
    replacements: list[tuple[exp.Table, exp.Table]] = []
    seen: set[int] = set()
    try:
        scopes = traverse_scope(root)
    except OptimizeError as exc:
        raise RefusedQuery("scope", str(exc).splitlines()[0][:300]) from None
    for scope in scopes:
        for table in scope.tables:
            if id(table) in seen:
                continue
            seen.add(id(table))
            if not isinstance(table.this, exp.Identifier):
                if isinstance(table.this, _TABLE_FUNCTIONS):
                    continue
                raise RefusedQuery("table", f"{table.this.sql('duckdb')[:80]} is not a dataset")
            if _is_cte_reference(scope, table):
                continue
            name = str(table.name)
            if table.args.get("db") or table.args.get("catalog"):
                raise RefusedQuery("table", f"qualified name {table.sql('duckdb')} is not allowed")
            if name.lower() not in lookup:
                raise RefusedQuery("table", f"{name!r} is not a dataset of this project")
            internal = lookup[name.lower()]
            used.add(name.lower())
            table_alias = table.args.get("alias")
            if isinstance(table_alias, exp.TableAlias) and table_alias.this:
                alias = table_alias.copy()
            else:
                alias = exp.TableAlias(this=table.this.copy())
            new = exp.Table(
                this=exp.to_identifier(internal, quoted=True),
                db=exp.to_identifier("main"),
                alias=alias,
            )
            for key in ("joins", "pivots", "laterals", "sample", "hints", "version"):
                value = table.args.get(key)
                if value:
                    new.set(key, value)
            replacements.append((table, new))
    # Every exp.Table in the tree must have been seen by the scope walk (defence in depth:
    # a table in a place scope analysis does not visit would otherwise escape the rewrite).
    for table in root.find_all(exp.Table):
        if id(table) not in seen:
            raise RefusedQuery("table", f"{table.sql('duckdb')[:80]} is in an unsupported place")
    for old, new in replacements:
        old.replace(new)
    return VettedQuery(sql=root.sql(dialect="duckdb", comments=False), datasets=frozenset(used))
