"""GA4GH Data Use Ontology (DUO) codes and the matching rules Hvelv applies.

Two roles meet here:

* a **permission** is what a participant consented to (a template item): one primary code
  (NRES, GRU, HMB, DS + disease, POA) plus modifiers (:class:`Modifiers`);
* a **requested purpose** is what a use asks for: GRU, HMB, DS + disease or POA.

Subsumption — :func:`covers` — answers "does this permission allow that requested purpose?":

=============  ==================================================================
permission     covers the requested purpose
=============  ==================================================================
NRES           everything (no restriction)
GRU            GRU, HMB, DS-any, POA — general research use includes ancestry
HMB            HMB and DS-any; *not* GRU (broader) and *not* POA (DUO excludes it)
DS-X           DS-Y only when **X is Y or an ancestor of Y** (consent to "cancer"
               research covers "breast cancer" research, never the reverse)
POA            POA only
=============  ==================================================================

The DS direction: the issue text says "DS-X matches DS-Y when Y is X or an ancestor"; read with
X as the *requested* disease and Y as the *consented* one, that is the same rule as above: the
consented disease must be the requested disease or one of its ancestors. A participant who
agreed to research on a broad disease group has agreed to research on each disease in it; one
who agreed to research on one disease has not agreed to research on the whole group. Unknown
disease ids only match themselves.

Deny provisions use :func:`overlaps` instead: a deny matches when the denied scope and the
requested purpose can share any use (one covers the other), so that "deny wins" also for a
broader request (a GRU request overlaps a denied POA: it could include ancestry research).

Modifiers — :func:`check_modifiers` — each either holds for the use, fails with a reason code, or
adds an obligation:

======  ============================================================================
TS      use only before ``Modifiers.time_limit`` (``at < time_limit``)
GS      the use's ``geography`` must be one of ``Modifiers.regions``
IS      the requester's institution must be one of ``Modifiers.institutions``
PS      the use's project must be one of ``Modifiers.projects``
US      the requester must be one of ``Modifiers.users``
NCU     no commercial purpose (``use.commercial``)
NPU     the requester must not be a for-profit organisation (``requester_for_profit``)
NPUNCU  both of the above
GSO     the use must be a genetic study (``use.genetic_study``)
NMDS    no methods-development research (``use.methods_development``)
CC      extends a permission to clinical care: a use with ``clinical_care`` needs a permit
        carrying CC; without ``clinical_care`` CC changes nothing
IRB     always fails: documentation of ethics approval is for a committee to judge
RS      always fails: "research-specific restrictions" need a human reading
PUB     obligation ``PUB`` (publish results) — never a failure
COL     obligation ``COL`` (collaborate with the primary investigators)
RTN     obligation ``RTN`` (return derived data to the resource)
======  ============================================================================
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from hvelv.consent.diseases import DiseaseHierarchy

__all__ = [
    "DUO_TERMS",
    "HUMAN_JUDGEMENT",
    "MODIFIERS",
    "OBLIGATIONS",
    "PERMISSIONS",
    "REQUEST_CODES",
    "Duo",
    "DuoKind",
    "DuoRequest",
    "DuoTerm",
    "Modifiers",
    "Purpose",
    "check_modifiers",
    "covers",
    "overlaps",
]


class DuoKind(StrEnum):
    """DUO's two branches."""

    PERMISSION = "permission"
    MODIFIER = "modifier"


class Duo(StrEnum):
    """The DUO codes Hvelv understands (shorthand; the DUO id is in :data:`DUO_TERMS`)."""

    NRES = "NRES"
    GRU = "GRU"
    HMB = "HMB"
    DS = "DS"
    POA = "POA"
    NPUNCU = "NPUNCU"
    NPU = "NPU"
    NCU = "NCU"
    IRB = "IRB"
    PUB = "PUB"
    COL = "COL"
    RTN = "RTN"
    TS = "TS"
    GSO = "GSO"
    GS = "GS"
    IS = "IS"
    PS = "PS"
    US = "US"
    RS = "RS"
    NMDS = "NMDS"
    CC = "CC"

    @property
    def term(self) -> DuoTerm:
        """Id, label and kind of this code."""
        return DUO_TERMS[self]


@dataclass(frozen=True, slots=True)
class DuoTerm:
    """One row of the DUO table."""

    code: Duo
    id: str
    label: str
    kind: DuoKind


_P = DuoKind.PERMISSION
_M = DuoKind.MODIFIER
DUO_TERMS: Final[dict[Duo, DuoTerm]] = {
    t.code: t
    for t in (
        DuoTerm(Duo.NRES, "DUO:0000004", "no restriction", _P),
        DuoTerm(Duo.GRU, "DUO:0000042", "general research use", _P),
        DuoTerm(Duo.HMB, "DUO:0000006", "health or medical or biomedical research", _P),
        DuoTerm(Duo.DS, "DUO:0000007", "disease specific research", _P),
        DuoTerm(Duo.POA, "DUO:0000011", "population origins or ancestry research only", _P),
        DuoTerm(Duo.NPUNCU, "DUO:0000018", "not for profit, non commercial use only", _M),
        DuoTerm(Duo.NPU, "DUO:0000045", "not for profit organisation use only", _M),
        DuoTerm(Duo.NCU, "DUO:0000046", "non-commercial use only", _M),
        DuoTerm(Duo.IRB, "DUO:0000021", "ethics approval required", _M),
        DuoTerm(Duo.PUB, "DUO:0000019", "publication required", _M),
        DuoTerm(Duo.COL, "DUO:0000020", "collaboration required", _M),
        DuoTerm(Duo.RTN, "DUO:0000029", "return to database or resource", _M),
        DuoTerm(Duo.TS, "DUO:0000025", "time limit on use", _M),
        DuoTerm(Duo.GSO, "DUO:0000016", "genetic studies only", _M),
        DuoTerm(Duo.GS, "DUO:0000022", "geographical restriction", _M),
        DuoTerm(Duo.IS, "DUO:0000028", "institution specific restriction", _M),
        DuoTerm(Duo.PS, "DUO:0000027", "project specific restriction", _M),
        DuoTerm(Duo.US, "DUO:0000026", "user specific restriction", _M),
        DuoTerm(Duo.RS, "DUO:0000012", "research specific restrictions", _M),
        DuoTerm(Duo.NMDS, "DUO:0000015", "no general methods research", _M),
        DuoTerm(Duo.CC, "DUO:0000043", "clinical care use", _M),
    )
}

PERMISSIONS: Final = frozenset(c for c, t in DUO_TERMS.items() if t.kind is DuoKind.PERMISSION)
MODIFIERS: Final = frozenset(c for c, t in DUO_TERMS.items() if t.kind is DuoKind.MODIFIER)
REQUEST_CODES: Final = frozenset({Duo.GRU, Duo.HMB, Duo.DS, Duo.POA})
OBLIGATIONS: Final = frozenset({Duo.PUB, Duo.COL, Duo.RTN})
HUMAN_JUDGEMENT: Final = frozenset({Duo.IRB, Duo.RS})


@dataclass(frozen=True, slots=True)
class Purpose:
    """A primary DUO code, with the disease term when (and only when) the code is DS."""

    code: Duo
    disease: str | None = None

    def __post_init__(self) -> None:
        if self.code not in PERMISSIONS:
            raise ValueError(f"{self.code} is a modifier, not a purpose")
        if (self.code is Duo.DS) != (self.disease is not None):
            raise ValueError("a disease is given with DS and only with DS")

    def __str__(self) -> str:
        return f"DS:{self.disease}" if self.disease is not None else self.code.value


def covers(permission: Purpose, request: Purpose, diseases: DiseaseHierarchy) -> bool:
    """True when the consented ``permission`` allows the ``request`` (table in module doc)."""
    p, r = permission.code, request.code
    if r is Duo.NRES:
        return p is Duo.NRES  # only "no restriction" covers a request for anything at all
    if p in (Duo.NRES, Duo.GRU):
        return True
    if p is Duo.HMB:
        return r in (Duo.HMB, Duo.DS)
    if p is Duo.DS:
        return (
            r is Duo.DS
            and permission.disease is not None
            and request.disease is not None
            and diseases.is_same_or_ancestor(permission.disease, request.disease)
        )
    return r is Duo.POA  # p is POA


def overlaps(denied: Purpose, request: Purpose, diseases: DiseaseHierarchy) -> bool:
    """True when a use for ``request`` could fall inside the ``denied`` scope (either covers)."""
    return covers(denied, request, diseases) or covers(request, denied, diseases)


class DuoRequest(Protocol):
    """What the modifier checks read from a use (``hvelv.consent.model.Use`` fits)."""

    @property
    def project_id(self) -> str: ...
    @property
    def requester_id(self) -> str: ...
    @property
    def requester_institution(self) -> str: ...
    @property
    def geography(self) -> str | None: ...
    @property
    def commercial(self) -> bool: ...
    @property
    def requester_for_profit(self) -> bool: ...
    @property
    def genetic_study(self) -> bool: ...
    @property
    def methods_development(self) -> bool: ...
    @property
    def clinical_care(self) -> bool: ...


_PARAMETERISED: Final = {
    Duo.GS: "regions",
    Duo.IS: "institutions",
    Duo.PS: "projects",
    Duo.US: "users",
}


@dataclass(frozen=True, slots=True)
class Modifiers:
    """DUO modifiers of a permission with their parameters.

    A parameter is given exactly when its code is present: ``time_limit`` with TS, ``regions``
    with GS, ``institutions`` with IS, ``projects`` with PS, ``users`` with US.
    """

    codes: frozenset[Duo] = frozenset()
    time_limit: dt.datetime | None = None
    regions: frozenset[str] = frozenset()
    institutions: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        bad = self.codes - MODIFIERS
        if bad:
            raise ValueError(f"not modifiers: {sorted(bad)}")
        if (Duo.TS in self.codes) != (self.time_limit is not None):
            raise ValueError("time_limit is given with TS and only with TS")
        if self.time_limit is not None and self.time_limit.utcoffset() is None:
            raise ValueError("time_limit must be timezone-aware")
        for code, name in _PARAMETERISED.items():
            values: frozenset[str] = getattr(self, name)
            if (code in self.codes) != bool(values):
                raise ValueError(f"{name} are given with {code} and only with {code}")

    @property
    def obligations(self) -> frozenset[Duo]:
        """The obligation codes (PUB, COL, RTN) among the modifiers."""
        return self.codes & OBLIGATIONS


def check_modifiers(mods: Modifiers, use: DuoRequest, at: dt.datetime) -> tuple[str, ...]:
    """Reason codes (``modifier.<CODE>``) for every modifier that does not hold; empty if all do.

    Rules are in the module docstring. Obligations never fail here; read them from
    :attr:`Modifiers.obligations`.
    """
    failed: list[Duo] = []
    codes = mods.codes
    if mods.time_limit is not None and not at < mods.time_limit:
        failed.append(Duo.TS)
    if Duo.GS in codes and use.geography not in mods.regions:
        failed.append(Duo.GS)
    if Duo.IS in codes and use.requester_institution not in mods.institutions:
        failed.append(Duo.IS)
    if Duo.PS in codes and use.project_id not in mods.projects:
        failed.append(Duo.PS)
    if Duo.US in codes and use.requester_id not in mods.users:
        failed.append(Duo.US)
    if Duo.NCU in codes and use.commercial:
        failed.append(Duo.NCU)
    if Duo.NPU in codes and use.requester_for_profit:
        failed.append(Duo.NPU)
    if Duo.NPUNCU in codes and (use.commercial or use.requester_for_profit):
        failed.append(Duo.NPUNCU)
    if Duo.GSO in codes and not use.genetic_study:
        failed.append(Duo.GSO)
    if Duo.NMDS in codes and use.methods_development:
        failed.append(Duo.NMDS)
    if use.clinical_care and Duo.CC not in codes:
        failed.append(Duo.CC)
    failed.extend(sorted(codes & HUMAN_JUDGEMENT))
    return tuple(f"modifier.{code.value}" for code in failed)
