"""Norwegian national identity numbers (fødselsnummer, D-number, H-number, synthetic).

Layout: ``DDMMYY III K1 K2``. The ordinary rules (the two mod-11 check digits, the D-number
day + 40 and H-number month + 40 markers, the birth century from the individual number ``III``)
come from :mod:`stdnum.no.fodselsnummer`. We do not call its ``validate()`` because it compares
the birth date with ``date.today()`` and this module must stay free of clock reads; pass
``today=`` to reject birth dates in the future.

Synthetic test numbers (Skatteetaten's test population) add 80 to the month. python-stdnum
rejects them, so they are handled here, and only accepted when ``allow_synthetic=True`` (never in
production).

Every rejection raises :class:`InvalidNationalId` with a stable ``reason_code``:

=========================  =========================================================
``length``                 not 11 digits after removing spaces, ``-`` and ``:``
``not_digits``             11 characters, but not all of them digits
``checksum``               K1 or K2 does not match (including the "remainder 10" case)
``synthetic_not_allowed``  month + 80 (synthetic) number while synthetic numbers are off
``impossible_date``        no such calendar date, century cannot be determined,
                           an FH-number (no birth date by design), or both D and H markers
``future_birth_date``      the birth date is after ``today`` (only checked when given)
=========================  =========================================================

The :class:`NationalId` value never shows the full number in its ``repr`` so that it cannot
leak into logs by accident.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from stdnum.exceptions import ValidationError
from stdnum.no import fodselsnummer as _fnr

__all__ = [
    "REASON_CHECKSUM",
    "REASON_FUTURE",
    "REASON_IMPOSSIBLE_DATE",
    "REASON_LENGTH",
    "REASON_NOT_DIGITS",
    "REASON_SYNTHETIC_NOT_ALLOWED",
    "InvalidNationalId",
    "NationalId",
    "NationalIdKind",
    "age_on",
    "is_valid_national_id",
    "parse_national_id",
]

REASON_LENGTH: Final = "length"
REASON_NOT_DIGITS: Final = "not_digits"
REASON_CHECKSUM: Final = "checksum"
REASON_SYNTHETIC_NOT_ALLOWED: Final = "synthetic_not_allowed"
REASON_IMPOSSIBLE_DATE: Final = "impossible_date"
REASON_FUTURE: Final = "future_birth_date"

_D_OFFSET: Final = 40
_H_OFFSET: Final = 40
_SYNTHETIC_OFFSET: Final = 80


class NationalIdKind(StrEnum):
    """Which kind of identity number it is."""

    FNR = "fnr"  # fødselsnummer
    DNR = "dnr"  # D-number: day + 40 (temporary residents)
    HNR = "hnr"  # H-number: month + 40 (health-service help number)
    SYNTHETIC = "synthetic"  # test population: month + 80 (optionally also day + 40)


class InvalidNationalId(ValueError):
    """A national identity number was rejected; ``reason_code`` says why (see module doc)."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason_code}: {self.message}"


@dataclass(frozen=True, slots=True)
class NationalId:
    """A validated national identity number."""

    kind: NationalIdKind
    birth_date: dt.date
    normalized: str = field(repr=False)

    def __repr__(self) -> str:
        return f"NationalId(kind={self.kind.value!r}, normalized='*********{self.normalized[-2:]}')"


def _compact(raw: str) -> str:
    return str(_fnr.compact(raw))


def parse_national_id(
    raw: str, *, allow_synthetic: bool = False, today: dt.date | None = None
) -> NationalId:
    """Validate ``raw`` and return its kind, birth date and the normalized 11-digit string.

    Checks run in this order, and the first failure is reported: length, digits, check digits,
    synthetic allowed, birth date, not born after ``today``.
    """
    number = _compact(raw)
    if len(number) != 11:
        raise InvalidNationalId(
            REASON_LENGTH, f"a national identity number has 11 digits, got {len(number)}"
        )
    if not (number.isascii() and number.isdigit()):
        raise InvalidNationalId(REASON_NOT_DIGITS, "a national identity number has only digits")
    if number[9] != _fnr.calc_check_digit1(number) or number[10] != _fnr.calc_check_digit2(number):
        raise InvalidNationalId(REASON_CHECKSUM, "the check digits do not match")

    day = int(number[0:2])
    month = int(number[2:4])
    synthetic = month > _SYNTHETIC_OFFSET
    if synthetic and not allow_synthetic:
        raise InvalidNationalId(
            REASON_SYNTHETIC_NOT_ALLOWED,
            "synthetic test numbers (month + 80) are only accepted in test mode",
        )
    if synthetic:
        month -= _SYNTHETIC_OFFSET
    is_d = _D_OFFSET < day < _D_OFFSET + 32
    is_h = _H_OFFSET < month < _H_OFFSET + 13
    if is_h and is_d:
        raise InvalidNationalId(
            REASON_IMPOSSIBLE_DATE, "a number cannot carry both the D-number and H-number marker"
        )
    if day >= 80:
        raise InvalidNationalId(
            REASON_IMPOSSIBLE_DATE, "FH-numbers carry no birth date and are not accepted"
        )
    # Let python-stdnum apply the D/H offsets and the century rules to the (de-synthesized) number.
    plain = number[0:2] + f"{month:02d}" + number[4:]
    try:
        birth = _fnr.get_birth_date(plain)
    except ValidationError as exc:
        raise InvalidNationalId(
            REASON_IMPOSSIBLE_DATE, "the number does not hold a possible birth date"
        ) from exc
    if today is not None and birth > today:
        raise InvalidNationalId(REASON_FUTURE, "the birth date is in the future")

    if synthetic:
        kind = NationalIdKind.SYNTHETIC
    elif is_d:
        kind = NationalIdKind.DNR
    elif is_h:
        kind = NationalIdKind.HNR
    else:
        kind = NationalIdKind.FNR
    return NationalId(kind=kind, birth_date=birth, normalized=number)


def is_valid_national_id(
    raw: str, *, allow_synthetic: bool = False, today: dt.date | None = None
) -> bool:
    """True when :func:`parse_national_id` would accept ``raw``."""
    try:
        parse_national_id(raw, allow_synthetic=allow_synthetic, today=today)
    except InvalidNationalId:
        return False
    return True


def age_on(birth_date: dt.date, day: dt.date) -> int:
    """Completed years of age on ``day``.

    A person born on 29 February turns a year older on 1 March in common years. Negative when
    ``day`` is before the birth date.
    """
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years
