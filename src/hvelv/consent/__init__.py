"""Hvelv's consent engine: pure functions, no I/O, no clock reads (time is always a parameter).

* :mod:`~hvelv.consent.national_id` — Norwegian national identity numbers;
* :mod:`~hvelv.consent.duo` and :mod:`~hvelv.consent.diseases` — DUO codes and matching;
* :mod:`~hvelv.consent.model` — templates, ledger events, approvals, uses, decisions;
* :mod:`~hvelv.consent.decision` — ``decide()``, the per-participant decision;
* :mod:`~hvelv.consent.snapshot` — bulk decisions for many participants, kept up to date;
* :mod:`~hvelv.consent.fhir` — export/import of FHIR R5/R4 ``Consent`` (imported explicitly:
  it loads ``fhir.resources``);
* :mod:`~hvelv.consent.receipts` — signed consent receipts.
"""

from hvelv.consent.decision import DEFAULT_AGE_OF_MAJORITY, TemplateLookup, decide
from hvelv.consent.diseases import (
    DiseaseHierarchy,
    DiseaseHierarchyError,
    DiseaseTerm,
    default_hierarchy,
    parse_hierarchy,
)
from hvelv.consent.duo import Duo, DuoKind, Modifiers, Purpose, check_modifiers, covers, overlaps
from hvelv.consent.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    Decision,
    Effect,
    EventKind,
    Period,
    ProjectApproval,
    Provision,
    Template,
    Use,
    WithdrawalScope,
)
from hvelv.consent.national_id import (
    InvalidNationalId,
    NationalId,
    NationalIdKind,
    age_on,
    is_valid_national_id,
    parse_national_id,
)

__all__ = [
    "DEFAULT_AGE_OF_MAJORITY",
    "Actor",
    "ActorKind",
    "ConsentEvent",
    "Decision",
    "DiseaseHierarchy",
    "DiseaseHierarchyError",
    "DiseaseTerm",
    "Duo",
    "DuoKind",
    "Effect",
    "EventKind",
    "InvalidNationalId",
    "Modifiers",
    "NationalId",
    "NationalIdKind",
    "Period",
    "ProjectApproval",
    "Provision",
    "Purpose",
    "Template",
    "TemplateLookup",
    "Use",
    "WithdrawalScope",
    "age_on",
    "check_modifiers",
    "covers",
    "decide",
    "default_hierarchy",
    "is_valid_national_id",
    "overlaps",
    "parse_hierarchy",
    "parse_national_id",
]
