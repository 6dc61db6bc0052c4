"""The vectorised fast path never accepts what parse_national_id rejects, and is used."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hvelv.consent.national_id import InvalidNationalId, parse_national_id
from hvelv.datasets.ids import surely_valid
from hvelv.datasets.synthetic import make_cohort, synthetic_national_ids


def accepted(value: str, allow_synthetic: bool, today: dt.date | None) -> bool:
    try:
        parsed = parse_national_id(value, allow_synthetic=allow_synthetic, today=today)
    except InvalidNationalId:
        return False
    return parsed.normalized == value


digits11 = st.text(alphabet="0123456789", min_size=11, max_size=11)


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    """Numbers with valid check digits over every day/month/marker/individual combination."""
    day = draw(st.integers(0, 99))
    month = draw(st.integers(0, 99))
    body = f"{day:02d}{month:02d}{draw(st.integers(0, 99)):02d}{draw(st.integers(0, 999)):03d}"
    digits = [int(c) for c in body]
    k1 = (11 - sum(w * x for w, x in zip((3, 7, 6, 1, 8, 9, 4, 5, 2), digits, strict=True))) % 11
    k2 = (11 - sum(w * x for w, x in zip((5, 4, 3, 2, 7, 6, 5, 4, 3, 2), [*digits, k1 % 10],
                                         strict=True))) % 11  # fmt: skip
    return body + str(k1 % 10) + str(k2 % 10)


values = st.one_of(digits11, near_valid(), st.text(max_size=14), st.just("151086 95088"))
todays = st.one_of(st.none(), st.dates(dt.date(1990, 1, 1), dt.date(2030, 1, 1)))


@settings(max_examples=400, deadline=None)
@given(st.lists(values, min_size=1, max_size=30), st.booleans(), todays)
def test_fast_path_agrees_with_parse_national_id(
    batch: list[str], allow_synthetic: bool, today: dt.date | None
) -> None:
    fast = surely_valid(batch, allow_synthetic=allow_synthetic, today=today)
    for value, yes in zip(batch, fast.tolist(), strict=True):
        if yes:
            assert accepted(value, allow_synthetic, today), value
        elif len(value) == 11 and value.isdigit():
            # plain 11-digit strings: the fast path is exact, not merely safe
            assert not accepted(value, allow_synthetic, today), value


def test_fast_path_accepts_valid_numbers() -> None:
    ids = make_cohort(2000, seed=4).national_ids.to_pylist()
    assert surely_valid(ids, allow_synthetic=True).all()
    assert not surely_valid(ids, allow_synthetic=False).any()
    real = ["15108695088", "31129956715"]
    assert surely_valid(real, allow_synthetic=False).all()
    assert not surely_valid(["15108695077", "151086 95088", ""], allow_synthetic=True).any()
    births = np.array([(dt.date(2024, 2, 29) - dt.date(1970, 1, 1)).days], dtype=np.int32)
    numbers, _ = synthetic_national_ids(births, np.random.default_rng(3))
    leap = [f"{numbers[0]:011d}"]
    assert surely_valid(leap, allow_synthetic=True, today=dt.date(2024, 2, 29)).all()
    assert not surely_valid(leap, allow_synthetic=True, today=dt.date(2024, 2, 28)).any()
