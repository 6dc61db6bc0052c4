"""Synthetic cohorts for tests, benchmarks and demos: realistic shape, no real person in them.

Every national identity number is a *synthetic* one (month + 80, Skatteetaten's test
population convention) with valid check digits, so it passes
``parse_national_id(..., allow_synthetic=True)`` and can never be a real person's number.

:class:`Cohort` holds the participants (demographics); :meth:`Cohort.visits` streams rows of
a wide "visits" table as Arrow record batches — one visit per row, with an ICD-10 diagnosis, a
lab value and questionnaire answers — so 10,000,000 rows over 1,000,000 participants are made
with memory bounded by one batch plus the participant arrays. Everything is deterministic for a
given seed, and batch ``i`` does not depend on how many batches were read before it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = [
    "ICD10",
    "LAB_TESTS",
    "Cohort",
    "make_cohort",
    "synthetic_national_ids",
    "visits_schema",
]

_W1: Final = np.array([3, 7, 6, 1, 8, 9, 4, 5, 2], dtype=np.int64)
_W2: Final = np.array([5, 4, 3, 2, 7, 6, 5, 4, 3, 2], dtype=np.int64)
_EPOCH: Final = dt.date(1970, 1, 1)

#: (code, weight): common diagnoses in Norwegian primary and specialist care.
ICD10: Final = (
    ("I10", 12), ("E11.9", 8), ("J45.9", 6), ("F32.1", 6), ("M54.5", 9), ("J06.9", 10),
    ("E78.0", 5), ("I25.1", 4), ("C50.9", 2), ("C61", 2), ("C18.9", 1), ("K21.0", 4),
    ("N39.0", 4), ("F41.1", 5), ("G43.9", 3), ("E03.9", 3), ("M17.1", 3), ("I48.9", 3),
    ("J44.9", 3), ("E10.9", 1), ("L40.0", 2), ("K50.9", 1), ("G35", 1), ("Z00.0", 8),
)  # fmt: skip

#: (test, unit, mean, standard deviation)
LAB_TESTS: Final = (
    ("HbA1c", "mmol/mol", 40.0, 9.0),
    ("creatinine", "umol/L", 80.0, 18.0),
    ("LDL", "mmol/L", 3.1, 0.9),
    ("CRP", "mg/L", 4.0, 6.0),
    ("haemoglobin", "g/dL", 13.8, 1.4),
    ("TSH", "mU/L", 2.0, 1.0),
)

_GIVEN: Final = [
    "Nora",
    "Emma",
    "Olivia",
    "Ella",
    "Sofie",
    "Leah",
    "Frida",
    "Ingrid",
    "Sara",
    "Maja",
    "Jakob",
    "Emil",
    "Noah",
    "Oliver",
    "Filip",
    "William",
    "Lucas",
    "Henrik",
    "Magnus",
    "Aksel",
    "Kari",
    "Ola",
    "Per",
    "Anne",
    "Ingeborg",
    "Astrid",
    "Lars",
    "Knut",
]
_FAMILY: Final = [
    "Hansen",
    "Johansen",
    "Olsen",
    "Larsen",
    "Andersen",
    "Pedersen",
    "Nilsen",
    "Kristiansen",
    "Jensen",
    "Karlsen",
    "Johnsen",
    "Pettersen",
    "Eriksen",
    "Berg",
    "Haugen",
    "Hagen",
    "Johannessen",
    "Andreassen",
    "Jacobsen",
    "Dahl",
]
_SMOKING: Final = ("never", "former", "current")


def _check_digits(
    body: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Full 11-digit numbers for 9-digit bodies, and which of them are valid."""
    digits = np.stack([(body // 10 ** (8 - k)) % 10 for k in range(9)], axis=1)
    k1 = (11 - (digits @ _W1) % 11) % 11
    d10 = np.concatenate([digits, k1[:, None]], axis=1)
    k2 = (11 - (d10 @ _W2) % 11) % 11
    valid = (k1 != 10) & (k2 != 10)
    return body * 100 + k1 * 10 + k2, valid


def synthetic_national_ids(
    births: npt.NDArray[np.int32], rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Distinct synthetic numbers for birth dates (days since 1970), and their individual numbers.

    The individual number ``III`` follows the century rules: 000-499 for 1900-1999, 500-999 for
    2000-2039. Births must be between 1900 and 2039.
    """
    n = len(births)
    days = births.astype("datetime64[D]")
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    if n and (years.min() < 1900 or years.max() > 2039):
        raise ValueError("synthetic births must be between 1900 and 2039")
    months = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    mday = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    low = np.where(years >= 2000, 500, 0)
    out = np.zeros(n, dtype=np.int64)
    iii = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    taken: set[int] = set()
    while len(todo):
        cand_iii = low[todo] + rng.integers(0, 500, size=len(todo))
        body = (
            mday[todo] * 10**7
            + (months[todo] + 80) * 10**5
            + (years[todo] % 100) * 10**3
            + cand_iii
        )
        full, valid = _check_digits(body)
        retry: list[int] = []
        for pos, number, ok, ind in zip(
            todo.tolist(), full.tolist(), valid.tolist(), cand_iii.tolist(), strict=True
        ):
            if ok and number not in taken:
                taken.add(number)
                out[pos] = number
                iii[pos] = ind
            else:
                retry.append(pos)
        todo = np.asarray(retry, dtype=np.int64)
    return out, iii


def visits_schema() -> pa.Schema:
    """Columns of :meth:`Cohort.visits`."""
    return pa.schema(
        [
            ("national_id", pa.string()),
            ("name", pa.string()),
            ("birth_date", pa.date32()),
            ("sex", pa.string()),
            ("postcode", pa.string()),
            ("visit_date", pa.date32()),
            ("age", pa.int16()),
            ("icd10", pa.string()),
            ("lab_test", pa.string()),
            ("lab_value", pa.float64()),
            ("q_sleep", pa.int8()),
            ("q_smoking", pa.string()),
        ]
    )


@dataclass(frozen=True, slots=True)
class Cohort:
    """Synthetic participants: one entry per participant, in participant order."""

    seed: int
    national_ids: pa.StringArray
    names: pa.StringArray
    births: npt.NDArray[np.int32]  # days since 1970-01-01
    sex: pa.StringArray
    postcodes: pa.StringArray

    def __len__(self) -> int:
        return len(self.national_ids)

    def participants(self) -> pa.Table:
        """One row per participant (a demographics dataset)."""
        return pa.table(
            {
                "national_id": self.national_ids,
                "name": self.names,
                "birth_date": pa.array(self.births, pa.date32()),
                "sex": self.sex,
                "postcode": self.postcodes,
            }
        )

    def visits(
        self, rows: int, *, batch_rows: int = 262_144, first_date: dt.date = dt.date(2015, 1, 1)
    ) -> Iterator[pa.RecordBatch]:
        """``rows`` visit rows over random participants, in batches of ``batch_rows``."""
        n = len(self)
        if n == 0 and rows:
            raise ValueError("a cohort without participants has no visits")
        codes = np.array([c for c, _ in ICD10], dtype=object)
        weights = np.array([w for _, w in ICD10], dtype=np.float64)
        weights /= weights.sum()
        code_dict = pa.array(codes.tolist(), pa.string())
        tests = pa.array([t for t, *_ in LAB_TESTS], pa.string())
        means = np.array([m for _, _, m, _ in LAB_TESTS])
        sds = np.array([s for *_, s in LAB_TESTS])
        smoking = pa.array(list(_SMOKING), pa.string())
        start = (first_date - _EPOCH).days
        span = 10 * 365
        for b, offset in enumerate(range(0, rows, batch_rows)):
            size = min(batch_rows, rows - offset)
            rng = np.random.default_rng([self.seed, 1, b])
            who = rng.integers(0, n, size=size)
            who_arr = pa.array(who)
            births = self.births[who]
            visit = np.maximum(start + rng.integers(0, span, size=size), births).astype(np.int32)
            age = ((visit - births) // 365.25).astype(np.int16)
            code_ix = rng.choice(len(codes), size=size, p=weights)
            test_ix = rng.integers(0, len(LAB_TESTS), size=size)
            value = np.round(np.abs(rng.normal(means[test_ix], sds[test_ix])), 2)
            sleep = rng.integers(1, 6, size=size).astype(np.int8)
            sleep_null = rng.random(size) < 0.05
            smoke_ix = rng.choice(3, size=size, p=[0.55, 0.3, 0.15])
            yield pa.RecordBatch.from_arrays(
                [
                    self.national_ids.take(who_arr),
                    self.names.take(who_arr),
                    pa.array(births, pa.date32()),
                    self.sex.take(who_arr),
                    self.postcodes.take(who_arr),
                    pa.array(visit, pa.date32()),
                    pa.array(age, pa.int16()),
                    code_dict.take(pa.array(code_ix)),
                    tests.take(pa.array(test_ix)),
                    pa.array(value, pa.float64()),
                    pa.array(sleep, pa.int8(), mask=sleep_null),
                    smoking.take(pa.array(smoke_ix)),
                ],
                schema=visits_schema(),
            )


def make_cohort(participants: int, *, seed: int = 0) -> Cohort:
    """A deterministic synthetic cohort of ``participants`` people born 1930-2012."""
    rng = np.random.default_rng([seed, 0])
    lo = (dt.date(1930, 1, 1) - _EPOCH).days
    hi = (dt.date(2012, 12, 31) - _EPOCH).days
    births = rng.integers(lo, hi + 1, size=participants).astype(np.int32)
    numbers, iii = synthetic_national_ids(births, rng)
    ids = np.char.zfill(numbers.astype(str), 11)
    given = np.array(_GIVEN, dtype=object)[rng.integers(0, len(_GIVEN), size=participants)]
    family = np.array(_FAMILY, dtype=object)[rng.integers(0, len(_FAMILY), size=participants)]
    names = [f"{g} {f}" for g, f in zip(given.tolist(), family.tolist(), strict=True)]
    sex = np.where(iii % 2 == 0, "F", "M")  # the last individual digit: even = female
    postcodes = np.char.zfill(rng.integers(1, 9992, size=participants).astype(str), 4)
    return Cohort(
        seed=seed,
        national_ids=pa.array(ids.tolist(), pa.string()),
        names=pa.array(names, pa.string()),
        births=births,
        sex=pa.array(sex.tolist(), pa.string()),
        postcodes=pa.array(postcodes.tolist(), pa.string()),
    )
