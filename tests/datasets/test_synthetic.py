"""The synthetic cohort generator."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from hvelv.consent.national_id import NationalIdKind, parse_national_id
from hvelv.datasets.synthetic import ICD10, make_cohort, synthetic_national_ids, visits_schema


def test_national_ids_are_valid_distinct_synthetic_and_match_birth_and_sex() -> None:
    cohort = make_cohort(3000, seed=5)
    ids = cohort.national_ids.to_pylist()
    assert len(set(ids)) == len(ids)
    births = cohort.births.astype("datetime64[D]").tolist()
    for nid, birth, sex in zip(ids, births, cohort.sex.to_pylist(), strict=True):
        parsed = parse_national_id(nid, allow_synthetic=True)
        assert parsed.kind is NationalIdKind.SYNTHETIC
        assert parsed.birth_date == birth
        assert (int(nid[8]) % 2 == 0) == (sex == "F")
    with pytest.raises(ValueError, match="synthetic"):
        parse_national_id(ids[0])  # never accepted as a real number


def test_births_outside_the_century_rules_are_refused() -> None:
    births = np.array([(dt.date(1899, 12, 31) - dt.date(1970, 1, 1)).days], dtype=np.int32)
    with pytest.raises(ValueError, match="1900"):
        synthetic_national_ids(births, np.random.default_rng(1))


def test_deterministic_for_a_seed_and_batch_independent() -> None:
    a = make_cohort(500, seed=9)
    b = make_cohort(500, seed=9)
    assert a.national_ids.equals(b.national_ids)
    assert not a.national_ids.equals(make_cohort(500, seed=10).national_ids)
    big = pa.Table.from_batches(list(a.visits(1000, batch_rows=100)))
    again = pa.Table.from_batches(list(b.visits(1000, batch_rows=100)))
    assert big.equals(again)
    first = next(iter(a.visits(1000, batch_rows=100)))
    assert first.equals(big.slice(0, 100).to_batches()[0])


def test_visits_shape_and_values() -> None:
    cohort = make_cohort(200, seed=2)
    batches = list(cohort.visits(1050, batch_rows=500))
    assert [b.num_rows for b in batches] == [500, 500, 50]
    table = pa.Table.from_batches(batches)
    assert table.schema == visits_schema()
    assert set(table.column("national_id").to_pylist()) <= set(cohort.national_ids.to_pylist())
    assert set(table.column("icd10").to_pylist()) <= {c for c, _ in ICD10}
    assert min(table.column("age").to_pylist()) >= 0
    assert table.column("q_sleep").null_count > 0
    visit = table.column("visit_date").to_numpy()
    birth = table.column("birth_date").to_numpy()
    assert (visit >= birth).all()
    assert cohort.participants().num_rows == 200
