"""Property: for random consent ledgers and purposes, a query counts exactly the permitted rows.

The consent engine's bulk snapshot feeds the query engine; the oracle is ``decide()`` run per
participant on the same ledgers. One query engine is shared by all examples, so its working
copies are updated incrementally from one random snapshot to the next (and, for a second
engine, rebuilt every time).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections import Counter
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hvelv.consent.model import ConsentEvent, Use
from hvelv.consent.snapshot import ConsentIndex
from hvelv.datasets.engine import EngineSettings, QueryEngine
from hvelv.datasets.ingest import DatasetVersion, IngestOptions, ingest
from hvelv.datasets.keys import ParticipantKeys, Permits
from hvelv.datasets.storage import BlobLocation
from hvelv.datasets.synthetic import make_cohort
from hvelv.storage.local import LocalBlobStore
from tests.consent.factories import APPROVAL, lookup
from tests.consent.strategies import births, decision_times, ledgers, uses
from tests.datasets.conftest import NOW, pseudonym_of

PARTICIPANTS = 8


@cache
def world() -> tuple[DatasetVersion, ParticipantKeys, dict[str, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="hvelv-consent-prop-"))
    cohort = make_cohort(PARTICIPANTS, seed=21)
    table = pa.Table.from_batches(list(cohort.visits(90)))
    pq.write_table(table, tmp / "visits.parquet")
    keys = ParticipantKeys()
    report = ingest(
        tmp / "visits.parquet",
        name="visits",
        version=1,
        location=BlobLocation(LocalBlobStore(tmp / "blobs"), "p/visits/1", os.urandom(32)),
        options=IngestOptions(participant_column="national_id", allow_synthetic=True),
        pseudonymise=pseudonym_of,
        keys=keys,
        created_by="dm",
        now=NOW,
    )
    assert report.version is not None
    rows = Counter(pseudonym_of(n) for n in table.column("national_id").to_pylist())
    return report.version, keys, dict(rows)


INCREMENTAL = QueryEngine(EngineSettings(memory_limit="256MB", threads=1, rebuild_fraction=1.0))
REBUILD = QueryEngine(EngineSettings(memory_limit="256MB", threads=1, rebuild_fraction=0.0))


@st.composite
def cohorts_ledgers(draw: st.DrawFn) -> tuple[list[ConsentEvent], dict[str, dt.date | None]]:
    _, keys, _ = world()
    events: list[ConsentEvent] = []
    people: dict[str, dt.date | None] = {}
    for n, name in enumerate(keys.pseudonyms()):
        people[name] = draw(births)
        events.extend(draw(ledgers(participant=name, first_seq=1 + 100 * n, max_size=5)))
    return events, people


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts_ledgers(), uses, decision_times)
def test_count_equals_rows_of_permitted_participants(
    data: tuple[list[ConsentEvent], dict[str, dt.date | None]], use: Use, at: dt.datetime
) -> None:
    events, people = data
    version, keys, rows = world()
    index = ConsentIndex(template_lookup=lookup)
    index.add_participants(people.items())
    index.load(events)
    snapshot = index.snapshot(use, at, approval=APPROVAL)
    permitted = {p for p in people if index.decide(p, use, at, approval=APPROVAL).permit}
    assert snapshot.pseudonyms == permitted  # the consent engine's own invariant
    expected = sum(rows.get(p, 0) for p in permitted)
    event(f"{len(permitted)} of {len(people)} permitted")
    permits = Permits.from_snapshot(keys, snapshot)
    for engine in (INCREMENTAL, REBUILD):
        result = engine.query(
            "SELECT count(*) AS n, string_agg(DISTINCT participant, ',') AS who FROM visits",
            datasets={"visits": version},
            use=use,
            permits=permits,
        )
        n, who = result.table.column("n")[0].as_py(), result.table.column("who")[0].as_py()
        assert n == expected
        assert set(who.split(",") if who else []) == {p for p in permitted if p in rows}
        assert result.ledger_position == snapshot.ledger_position
