"""The warm-up after an ingest builds the new version's working copy for the uses already
reading the dataset: their next query does not build (counted by the copies' ``stats`` and the
engine's ``warm_builds``, never timed), still applies consent changes since, and never sees a
half-built copy; a query of the use that reads other datasets interrupts the build.

Version 1 of ``visits`` holds the rows of 30 of the cohort's 40 participants, version 2 all of
them (so it registers 10 new participant keys); ``codes`` is a small dataset without
participants, marked as holding no personal data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hvelv.datasets import engine as engine_module
from hvelv.datasets.engine import EngineSettings, QueryEngine
from hvelv.datasets.errors import QueryLimitExceeded
from hvelv.datasets.ingest import DatasetVersion
from hvelv.datasets.keys import ParticipantKeys, Permits
from hvelv.datasets.limits import Deadline
from hvelv.datasets.storage import read_table
from hvelv.datasets.synthetic import Cohort
from hvelv.storage.local import LocalBlobStore
from tests.datasets.conftest import ingester

COUNT = "SELECT count(*) FROM visits"


@dataclass
class Data:
    keys: ParticipantKeys
    v1: DatasetVersion
    v2: DatasetVersion
    codes: DatasetVersion
    known_at_v1: int  # participant keys registered by version 1

    def permits(self, permitted: set[str], known: int | None = None) -> Permits:
        """The permits of a snapshot taken when ``known`` keys were registered."""
        mask = self.keys.mask(permitted)
        return Permits(mask[: len(mask) if known is None else known], 1)

    def pseudonyms(self) -> list[str]:
        return list(self.keys.pseudonyms())

    @staticmethod
    def rows(version: DatasetVersion, permitted: set[str]) -> int:
        participants = read_table(version.location).column("participant")
        return int(pc.sum(pc.is_in(participants, pa.array(sorted(permitted)))).as_py() or 0)


@pytest.fixture(scope="module")
def data(cohort: Cohort, visits: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Data:
    tmp = tmp_path_factory.mktemp("warm")
    run = ingester(LocalBlobStore(tmp / "blobs"))
    first30 = pa.array(cohort.participants().column("national_id").to_pylist()[:30])
    pq.write_table(visits.filter(pc.is_in(visits.column("national_id"), first30)), tmp / "1.pq")
    pq.write_table(visits, tmp / "2.pq")
    pq.write_table(pa.table({"code": ["A", "B"]}), tmp / "codes.parquet")
    keys = ParticipantKeys()
    drop = frozenset({"name"})
    v1 = run(tmp / "1.pq", "visits", keys=keys, drop=drop, format="parquet").version
    known = len(keys)
    v2 = run(tmp / "2.pq", "visits", keys=keys, drop=drop, format="parquet", version=2).version
    codes = run(
        tmp / "codes.parquet", "codes", keys=keys, participant_column=None, personal_data=False
    ).version
    assert v1 is not None
    assert v2 is not None
    assert codes is not None
    assert (known, len(keys)) == (30, 40)
    return Data(keys, v1, v2, codes, known)


@pytest.fixture
def engine() -> Iterator[QueryEngine]:
    eng = QueryEngine(EngineSettings(memory_limit="256MB", threads=1))
    yield eng
    eng.close()


def count(
    engine: QueryEngine, data: Data, version: DatasetVersion, permits: Permits, use: str
) -> int:
    result = engine.query(
        COUNT, datasets={"visits": version, "codes": data.codes}, use=use, permits=permits
    )
    value: int = result.table.column(0)[0].as_py()
    return value


def test_the_next_query_of_an_active_use_does_not_build(engine: QueryEngine, data: Data) -> None:
    everyone = data.pseudonyms()
    uses = {"half": set(everyone[::2]), "all": set(everyone)}
    for use, permitted in uses.items():
        assert count(engine, data, data.v1, data.permits(permitted), use) > 0
    engine.query("SELECT count(*) FROM codes", datasets={"codes": data.codes}, use="codes only",
                 permits=data.permits(set(everyone)))  # fmt: skip

    assert engine.warm(data.v2).result(timeout=600) == 2
    assert engine.warm_builds == 2
    for use, permitted in uses.items():
        db = engine.database(use)
        copy = db.copy_of(data.v2)
        assert copy.stats == {"builds": 1, "updates": 0}
        assert data.v1.location.key not in db.copies()  # the superseded copy went
        expected = data.rows(data.v2, permitted)
        assert count(engine, data, data.v2, data.permits(permitted), use) == expected
        assert copy.stats == {"builds": 1, "updates": 0}  # the query found it built
    assert engine.database("codes only").keys() == {data.codes.location.key}  # never read visits
    assert engine.warm(data.v2).result(timeout=600) == 0  # already built: nothing to do
    assert engine.warm(data.v1).result(timeout=600) == 0  # older than what the uses read
    assert engine.warm_builds == 2


def test_consent_changes_since_the_warm_up_reach_the_next_query(
    engine: QueryEngine, data: Data
) -> None:
    everyone = data.pseudonyms()
    before = set(everyone)
    assert count(engine, data, data.v1, data.permits(before), "u") == data.rows(data.v1, before)
    assert engine.warm(data.v2).result(timeout=600) == 1
    withdrawn = before - {everyone[0]}
    assert count(engine, data, data.v2, data.permits(withdrawn), "u") == data.rows(
        data.v2, withdrawn
    )
    assert engine.database("u").copy_of(data.v2).stats == {"builds": 1, "updates": 1}


def test_participants_new_in_the_version_are_added_by_the_next_query(
    engine: QueryEngine, data: Data
) -> None:
    """The warm-up knows only the permits of the use's last query, taken before the ingest
    registered the new participants: it leaves them out, the next query adds them (10 of 40
    participants is more than the incremental threshold: a rebuild)."""
    everyone = set(data.pseudonyms())
    old = data.permits(everyone, known=data.known_at_v1)
    assert count(engine, data, data.v1, old, "u") == data.rows(data.v1, everyone)
    assert engine.warm(data.v2).result(timeout=600) == 1
    copy = engine.database("u").copy_of(data.v2)
    assert copy.mask is not None
    assert int(copy.mask.sum()) == data.known_at_v1
    assert count(engine, data, data.v2, data.permits(everyone), "u") == data.rows(data.v2, everyone)
    assert copy.stats == {"builds": 2, "updates": 0}


def test_only_the_most_recently_used_are_warmed(data: Data) -> None:
    engine = QueryEngine(EngineSettings(memory_limit="256MB", threads=1, warm_uses=2))
    try:
        permits = data.permits(set(data.pseudonyms()))
        for use in ("u1", "u2", "u3", "u4"):
            count(engine, data, data.v1, permits, use)
        count(engine, data, data.v1, permits, "u2")  # u2 is now the most recently used
        assert engine.warm(data.v2).result(timeout=600) == 2
        warmed = {
            use
            for use in ("u1", "u2", "u3", "u4")
            if data.v2.location.key in engine.database(use).copies()
        }
        assert warmed == {"u2", "u4"}
    finally:
        engine.close()


def test_a_deleted_version_is_not_warmed(engine: QueryEngine, data: Data) -> None:
    permits = data.permits(set(data.pseudonyms()))
    count(engine, data, data.v1, permits, "u")
    engine.forget(data.v2.location.key)  # deleted before its warm-up
    with pytest.raises(engine_module.VersionGone):
        engine.warm(data.v2)
    assert data.v2.location.key not in engine.database("u").copies()
    assert data.v1.location.key in engine.database("u").copies()


def test_a_warm_up_build_cut_off_leaves_no_copy(
    engine: QueryEngine, data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm-up build stopped half-way (here by its time bound, as a query's interruption
    does) is rolled back: the use's next query builds the copy itself."""
    permits = data.permits(set(data.pseudonyms()))
    count(engine, data, data.v1, permits, "u")
    monkeypatch.setattr(engine_module, "WARM_BUILD_TIMEOUT_S", 0.0)
    assert engine.warm(data.v2).result(timeout=600) == 0
    assert engine.warm_interrupted == 1
    db = engine.database("u")
    unbuilt = db.copies().get(data.v2.location.key)  # none, or the entry a cut-off build leaves
    assert unbuilt is None or not unbuilt.built
    tables = db.con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
    assert tables == [(0,)]  # none: version 1's copy was superseded, version 2's rolled back
    assert count(engine, data, data.v2, permits, "u") == data.rows(data.v2, set(data.pseudonyms()))
    assert db.copy_of(data.v2).stats == {"builds": 1, "updates": 0}


def test_a_query_of_other_datasets_interrupts_the_warm_up(engine: QueryEngine, data: Data) -> None:
    """The protocol, step by step: while a warm-up holds the use's database building version 2
    (the lock and ``warming`` as :meth:`QueryEngine._warm_use` sets them), a query that reads
    only ``codes`` fires the warm-up's deadline (which rolls the build back, as the test above
    shows) and runs once the database is free."""
    db = engine.database("u")
    errors: list[BaseException] = []
    results: list[int] = []

    def other() -> None:
        try:
            table = engine.query(
                "SELECT count(*) FROM codes",
                datasets={"codes": data.codes},
                use="u",
                permits=data.permits(set()),
            ).table
            results.append(table.column(0)[0].as_py())
        except BaseException as exc:
            errors.append(exc)

    with Deadline(600) as warming:
        with db.lock:
            db.warming = (data.v2.location.key, warming)
            worker = threading.Thread(target=other)
            worker.start()
            while not warming.fired and worker.is_alive():
                threading.Event().wait(0.01)
            db.warming = None
        worker.join(timeout=600)
    assert warming.fired
    assert (errors, results) == ([], [2])


def test_a_query_of_the_version_being_built_waits_for_it(data: Data) -> None:
    db = QueryEngine().database("u")
    try:
        with Deadline(600) as warming:
            db.warming = (data.v2.location.key, warming)
            assert not db.yield_to({data.v2.location.key, data.codes.location.key})
            assert not warming.fired
            assert db.yield_to({data.codes.location.key})
            assert warming.fired
            with pytest.raises(QueryLimitExceeded):
                warming.check()
    finally:
        db.close()


def test_the_permits_of_the_latest_sync_are_kept(engine: QueryEngine, data: Data) -> None:
    permits = data.permits(set(data.pseudonyms()[:5]))
    count(engine, data, data.v1, permits, "u")
    kept = engine.database("u").permits
    assert kept is permits
    assert np.array_equal(kept.mask, permits.mask)


def test_no_warm_up_without_a_query_before(engine: QueryEngine, data: Data) -> None:
    assert engine.warm(data.v2).result(timeout=600) == 0
    assert engine.bases.cached(data.v2.location.key)  # decrypted all the same
    assert engine.databases() == []
