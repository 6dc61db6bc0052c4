from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from hvelv.consent.diseases import default_hierarchy
from hvelv.consent.duo import (
    DUO_TERMS,
    MODIFIERS,
    OBLIGATIONS,
    PERMISSIONS,
    Duo,
    DuoKind,
    Modifiers,
    Purpose,
    check_modifiers,
    covers,
    overlaps,
)
from hvelv.consent.model import Use

H = default_hierarchy()
UTC = dt.UTC
AT = dt.datetime(2025, 6, 1, tzinfo=UTC)

CANCER = "MONDO:0004992"
BREAST = "MONDO:0007254"
LUNG = "MONDO:0008903"
RESPIRATORY = "MONDO:0005087"
DIABETES = "MONDO:0005015"
T1D = "MONDO:0005147"
UNKNOWN = "MONDO:9999999"

NRES = Purpose(Duo.NRES)
GRU = Purpose(Duo.GRU)
HMB = Purpose(Duo.HMB)
POA = Purpose(Duo.POA)


def ds(disease: str) -> Purpose:
    return Purpose(Duo.DS, disease)


def test_duo_table_ids() -> None:
    expected = {
        "GRU": "DUO:0000042", "HMB": "DUO:0000006", "DS": "DUO:0000007", "POA": "DUO:0000011",
        "NRES": "DUO:0000004", "NPUNCU": "DUO:0000018", "NPU": "DUO:0000045",
        "NCU": "DUO:0000046", "IRB": "DUO:0000021", "PUB": "DUO:0000019", "COL": "DUO:0000020",
        "RTN": "DUO:0000029", "TS": "DUO:0000025", "GSO": "DUO:0000016", "GS": "DUO:0000022",
        "IS": "DUO:0000028", "PS": "DUO:0000027", "US": "DUO:0000026", "RS": "DUO:0000012",
        "NMDS": "DUO:0000015", "CC": "DUO:0000043",
    }  # fmt: skip
    assert {c.value: t.id for c, t in DUO_TERMS.items()} == expected
    assert set(DUO_TERMS) == set(Duo)
    assert {Duo.NRES, Duo.GRU, Duo.HMB, Duo.DS, Duo.POA} == PERMISSIONS
    assert set(Duo) - PERMISSIONS == MODIFIERS
    assert Duo.GRU.term.label == "general research use"
    assert Duo.TS.term.kind is DuoKind.MODIFIER
    assert all(t.code is c for c, t in DUO_TERMS.items())


def test_purpose_validation() -> None:
    with pytest.raises(ValueError, match="modifier"):
        Purpose(Duo.TS)
    with pytest.raises(ValueError, match="disease"):
        Purpose(Duo.DS)
    with pytest.raises(ValueError, match="disease"):
        Purpose(Duo.HMB, CANCER)
    assert str(ds(CANCER)) == f"DS:{CANCER}"
    assert str(GRU) == "GRU"


# (permission, requested purpose, covered?)
COVERS = [
    (NRES, GRU, True), (NRES, HMB, True), (NRES, ds(BREAST), True), (NRES, POA, True),
    (NRES, NRES, True),
    (GRU, GRU, True), (GRU, HMB, True), (GRU, ds(BREAST), True), (GRU, POA, True),
    (GRU, NRES, False),
    (HMB, GRU, False), (HMB, HMB, True), (HMB, ds(BREAST), True), (HMB, ds(UNKNOWN), True),
    (HMB, POA, False),
    # DS: the consented disease must be the requested one or an ancestor of it
    (ds(CANCER), ds(CANCER), True),
    (ds(CANCER), ds(BREAST), True),
    (ds(CANCER), ds(LUNG), True),
    (ds(RESPIRATORY), ds(LUNG), True),  # via the second parent
    (ds(BREAST), ds(CANCER), False),  # narrower consent never covers a broader request
    (ds(DIABETES), ds(T1D), True),
    (ds(T1D), ds(DIABETES), False),
    (ds(DIABETES), ds(BREAST), False),
    (ds(UNKNOWN), ds(UNKNOWN), True),
    (ds(CANCER), ds(UNKNOWN), False),
    (ds(CANCER), GRU, False), (ds(CANCER), HMB, False), (ds(CANCER), POA, False),
    # POA only under GRU/NRES/POA
    (POA, POA, True), (POA, GRU, False), (POA, HMB, False), (POA, ds(CANCER), False),
]  # fmt: skip


@pytest.mark.parametrize(("permission", "requested", "expected"), COVERS)
def test_covers(permission: Purpose, requested: Purpose, expected: bool) -> None:
    assert covers(permission, requested, H) is expected


OVERLAPS = [
    (GRU, POA, True), (GRU, ds(BREAST), True), (NRES, HMB, True),
    (POA, GRU, True), (POA, POA, True), (POA, HMB, False), (POA, ds(CANCER), False),
    (HMB, GRU, True), (HMB, ds(CANCER), True), (HMB, POA, False),
    (ds(BREAST), ds(CANCER), True),  # a denied narrow disease blocks the broader request
    (ds(CANCER), ds(BREAST), True),
    (ds(BREAST), ds(DIABETES), False),
    (ds(BREAST), HMB, True), (ds(BREAST), GRU, True), (ds(BREAST), POA, False),
]  # fmt: skip


@pytest.mark.parametrize(("denied", "requested", "expected"), OVERLAPS)
def test_overlaps(denied: Purpose, requested: Purpose, expected: bool) -> None:
    assert overlaps(denied, requested, H) is expected


def use(**kw: object) -> Use:
    base = Use(
        project_id="p-1",
        purpose=HMB,
        action="analyse",
        data_class="questionnaire",
        requester_id="u-1",
        requester_institution="UiO",
        geography="NO",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


LIMIT = dt.datetime(2025, 6, 1, tzinfo=UTC)

# (modifiers, use changes, time, expected failures)
MODIFIER_CASES = [
    (Modifiers(), {}, AT, ()),
    # TS: before the limit only
    (Modifiers(frozenset({Duo.TS}), time_limit=LIMIT), {}, LIMIT - dt.timedelta(seconds=1), ()),
    (Modifiers(frozenset({Duo.TS}), time_limit=LIMIT), {}, LIMIT, ("modifier.TS",)),
    # GS
    (Modifiers(frozenset({Duo.GS}), regions=frozenset({"NO", "SE"})), {}, AT, ()),
    (Modifiers(frozenset({Duo.GS}), regions=frozenset({"NO"})), {"geography": "US"}, AT,
     ("modifier.GS",)),
    (Modifiers(frozenset({Duo.GS}), regions=frozenset({"NO"})), {"geography": None}, AT,
     ("modifier.GS",)),
    # IS
    (Modifiers(frozenset({Duo.IS}), institutions=frozenset({"UiO"})), {}, AT, ()),
    (Modifiers(frozenset({Duo.IS}), institutions=frozenset({"NTNU"})), {}, AT, ("modifier.IS",)),
    # PS
    (Modifiers(frozenset({Duo.PS}), projects=frozenset({"p-1"})), {}, AT, ()),
    (Modifiers(frozenset({Duo.PS}), projects=frozenset({"p-2"})), {}, AT, ("modifier.PS",)),
    # US
    (Modifiers(frozenset({Duo.US}), users=frozenset({"u-1"})), {}, AT, ()),
    (Modifiers(frozenset({Duo.US}), users=frozenset({"u-2"})), {}, AT, ("modifier.US",)),
    # not-for-profit family vs commercial
    (Modifiers(frozenset({Duo.NCU})), {}, AT, ()),
    (Modifiers(frozenset({Duo.NCU})), {"commercial": True}, AT, ("modifier.NCU",)),
    (Modifiers(frozenset({Duo.NCU})), {"requester_for_profit": True}, AT, ()),
    (Modifiers(frozenset({Duo.NPU})), {}, AT, ()),
    (Modifiers(frozenset({Duo.NPU})), {"requester_for_profit": True}, AT, ("modifier.NPU",)),
    (Modifiers(frozenset({Duo.NPU})), {"commercial": True}, AT, ()),
    (Modifiers(frozenset({Duo.NPUNCU})), {}, AT, ()),
    (Modifiers(frozenset({Duo.NPUNCU})), {"commercial": True}, AT, ("modifier.NPUNCU",)),
    (Modifiers(frozenset({Duo.NPUNCU})), {"requester_for_profit": True}, AT,
     ("modifier.NPUNCU",)),
    # GSO
    (Modifiers(frozenset({Duo.GSO})), {"genetic_study": True}, AT, ()),
    (Modifiers(frozenset({Duo.GSO})), {}, AT, ("modifier.GSO",)),
    # NMDS
    (Modifiers(frozenset({Duo.NMDS})), {}, AT, ()),
    (Modifiers(frozenset({Duo.NMDS})), {"methods_development": True}, AT, ("modifier.NMDS",)),
    (Modifiers(), {"methods_development": True}, AT, ()),
    # CC extends to clinical care
    (Modifiers(frozenset({Duo.CC})), {"clinical_care": True}, AT, ()),
    (Modifiers(frozenset({Duo.CC})), {}, AT, ()),
    (Modifiers(), {"clinical_care": True}, AT, ("modifier.CC",)),
    # committee / human judgement: always denied
    (Modifiers(frozenset({Duo.IRB})), {}, AT, ("modifier.IRB",)),
    (Modifiers(frozenset({Duo.RS})), {}, AT, ("modifier.RS",)),
    # obligations never fail
    (Modifiers(frozenset({Duo.PUB, Duo.COL, Duo.RTN})), {}, AT, ()),
    # several at once, in a stable order
    (Modifiers(frozenset({Duo.RS, Duo.IRB, Duo.NCU, Duo.IS}), institutions=frozenset({"x"})),
     {"commercial": True}, AT, ("modifier.IS", "modifier.NCU", "modifier.IRB", "modifier.RS")),
]  # fmt: skip


@pytest.mark.parametrize(("mods", "changes", "at", "expected"), MODIFIER_CASES)
def test_check_modifiers(
    mods: Modifiers, changes: dict[str, object], at: dt.datetime, expected: tuple[str, ...]
) -> None:
    assert check_modifiers(mods, use(**changes), at) == expected


def test_obligations() -> None:
    mods = Modifiers(frozenset({Duo.PUB, Duo.COL, Duo.RTN, Duo.NCU}))
    assert mods.obligations == OBLIGATIONS
    assert Modifiers().obligations == frozenset()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codes": frozenset({Duo.GRU})}, "not modifiers"),
        ({"codes": frozenset({Duo.TS})}, "time_limit"),
        ({"time_limit": LIMIT}, "time_limit"),
        ({"codes": frozenset({Duo.TS}), "time_limit": dt.datetime(2025, 1, 1)}, "aware"),
        ({"codes": frozenset({Duo.GS})}, "regions"),
        ({"regions": frozenset({"NO"})}, "regions"),
        ({"codes": frozenset({Duo.IS})}, "institutions"),
        ({"projects": frozenset({"p"})}, "projects"),
        ({"codes": frozenset({Duo.US})}, "users"),
    ],
)
def test_modifiers_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Modifiers(**kwargs)  # type: ignore[arg-type]


def test_use_rejects_nres_request() -> None:
    with pytest.raises(ValueError, match="request"):
        use(purpose=NRES)
