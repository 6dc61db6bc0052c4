from __future__ import annotations

import datetime as dt

import pytest

from hvelv.consent.national_id import (
    REASON_CHECKSUM,
    REASON_FUTURE,
    REASON_IMPOSSIBLE_DATE,
    REASON_LENGTH,
    REASON_NOT_DIGITS,
    REASON_SYNTHETIC_NOT_ALLOWED,
    InvalidNationalId,
    NationalIdKind,
    age_on,
    is_valid_national_id,
    parse_national_id,
)


def with_check_digits(first9: str) -> str:
    """Independent implementation of the mod-11 rules in DESIGN.md (tries serials until valid)."""
    w1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
    w2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
    for bump in range(1000):
        serial = f"{(int(first9[6:9]) + bump) % 1000:03d}"
        n9 = first9[:6] + serial
        k1 = (11 - sum(a * int(b) for a, b in zip(w1, n9, strict=True)) % 11) % 11
        if k1 == 10:
            continue
        n10 = n9 + str(k1)
        k2 = (11 - sum(a * int(b) for a, b in zip(w2, n10, strict=True)) % 11) % 11
        if k2 == 10:
            continue
        return n10 + str(k2)
    raise AssertionError("no valid serial")  # pragma: no cover


@pytest.mark.parametrize(
    ("raw", "kind", "birth"),
    [
        ("15108695088", NationalIdKind.FNR, dt.date(1986, 10, 15)),
        ("31129956715", NationalIdKind.FNR, dt.date(1899, 12, 31)),  # 567 with 99: 1800s
        ("151086 95088", NationalIdKind.FNR, dt.date(1986, 10, 15)),
        ("151086-95088", NationalIdKind.FNR, dt.date(1986, 10, 15)),
        (with_check_digits("551086950"), NationalIdKind.DNR, dt.date(1986, 10, 15)),
        (with_check_digits("155086950"), NationalIdKind.HNR, dt.date(1986, 10, 15)),
        (with_check_digits("010110500"), NationalIdKind.FNR, dt.date(2010, 1, 1)),
        (with_check_digits("010160600"), NationalIdKind.FNR, dt.date(1860, 1, 1)),
        (with_check_digits("010150900"), NationalIdKind.FNR, dt.date(1950, 1, 1)),
        (with_check_digits("290204400"), NationalIdKind.FNR, dt.date(1904, 2, 29)),
    ],
)
def test_valid_numbers(raw: str, kind: NationalIdKind, birth: dt.date) -> None:
    nid = parse_national_id(raw)
    assert nid.kind is kind
    assert nid.birth_date == birth
    assert nid.normalized == raw.replace(" ", "").replace("-", "")
    assert is_valid_national_id(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("15108695077", REASON_CHECKSUM),
        ("15108695089", REASON_CHECKSUM),
        ("1510869508", REASON_LENGTH),
        ("151086950888", REASON_LENGTH),
        ("", REASON_LENGTH),
        ("1510869508x", REASON_NOT_DIGITS),
        ("1510869508\u0663", REASON_NOT_DIGITS),  # an Arabic-Indic digit is not an ASCII digit
        (with_check_digits("300286950"), REASON_IMPOSSIBLE_DATE),  # 30 February
        (with_check_digits("320186950"), REASON_IMPOSSIBLE_DATE),  # day 32
        (with_check_digits("151386950"), REASON_IMPOSSIBLE_DATE),  # month 13
        (with_check_digits("155386950"), REASON_IMPOSSIBLE_DATE),  # H-number month 13
        (with_check_digits("158086950"), REASON_IMPOSSIBLE_DATE),  # month 80: neither
        (with_check_digits("290201400"), REASON_IMPOSSIBLE_DATE),  # 29 Feb 1901
        (with_check_digits("010150600"), REASON_IMPOSSIBLE_DATE),  # no century for 50 + 6xx
        (with_check_digits("555086950"), REASON_IMPOSSIBLE_DATE),  # both D and H markers
        (with_check_digits("810186950"), REASON_IMPOSSIBLE_DATE),  # FH-number
        (with_check_digits("158186950"), REASON_SYNTHETIC_NOT_ALLOWED),
    ],
)
def test_invalid_numbers(raw: str, reason: str) -> None:
    with pytest.raises(InvalidNationalId) as info:
        parse_national_id(raw)
    assert info.value.reason_code == reason
    assert info.value.message
    assert str(info.value).startswith(reason + ": ")
    assert not is_valid_national_id(raw)


def test_full_width_digits_are_normalized() -> None:
    assert parse_national_id("\uff11\uff15108695088").normalized == "15108695088"


def test_synthetic_numbers_only_in_test_mode() -> None:
    raw = with_check_digits("158186950")  # 15 January 1986, month + 80
    nid = parse_national_id(raw, allow_synthetic=True)
    assert nid.kind is NationalIdKind.SYNTHETIC
    assert nid.birth_date == dt.date(1986, 1, 15)
    assert is_valid_national_id(raw, allow_synthetic=True)
    assert not is_valid_national_id(raw)


def test_synthetic_d_number() -> None:
    nid = parse_national_id(with_check_digits("558186950"), allow_synthetic=True)
    assert nid.kind is NationalIdKind.SYNTHETIC
    assert nid.birth_date == dt.date(1986, 1, 15)


def test_synthetic_with_impossible_date() -> None:
    with pytest.raises(InvalidNationalId) as info:
        parse_national_id(with_check_digits("159386950"), allow_synthetic=True)
    assert info.value.reason_code == REASON_IMPOSSIBLE_DATE


def test_checksum_is_checked_before_synthetic_and_date() -> None:
    raw = with_check_digits("158186950")
    broken = raw[:10] + str((int(raw[10]) + 1) % 10)
    with pytest.raises(InvalidNationalId) as info:
        parse_national_id(broken)
    assert info.value.reason_code == REASON_CHECKSUM


def test_future_birth_date_only_with_today() -> None:
    raw = with_check_digits("010130500")  # 1 January 2030
    assert parse_national_id(raw).birth_date == dt.date(2030, 1, 1)
    with pytest.raises(InvalidNationalId) as info:
        parse_national_id(raw, today=dt.date(2029, 12, 31))
    assert info.value.reason_code == REASON_FUTURE
    assert parse_national_id(raw, today=dt.date(2030, 1, 1)).birth_date == dt.date(2030, 1, 1)


def test_repr_does_not_show_the_number() -> None:
    nid = parse_national_id("15108695088")
    assert "151086" not in repr(nid)
    assert "1986" not in repr(nid)


@pytest.mark.parametrize(
    ("birth", "day", "age"),
    [
        (dt.date(2000, 5, 10), dt.date(2016, 5, 9), 15),
        (dt.date(2000, 5, 10), dt.date(2016, 5, 10), 16),
        (dt.date(2000, 5, 10), dt.date(2016, 12, 31), 16),
        (dt.date(2004, 2, 29), dt.date(2020, 2, 28), 15),
        (dt.date(2004, 2, 29), dt.date(2020, 2, 29), 16),
        (dt.date(2004, 2, 29), dt.date(2021, 2, 28), 16),
        (dt.date(2004, 2, 29), dt.date(2022, 2, 28), 17),
        (dt.date(2004, 2, 29), dt.date(2023, 3, 1), 19),
        (dt.date(2004, 2, 29), dt.date(2023, 2, 28), 18),
        (dt.date(2000, 1, 1), dt.date(1999, 12, 31), -1),
    ],
)
def test_age_on(birth: dt.date, day: dt.date, age: int) -> None:
    assert age_on(birth, day) == age
