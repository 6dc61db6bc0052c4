"""Mapping between the consent engine's model and HL7 FHIR ``Consent`` (R5 and R4).

Pure functions: no database, no HTTP, no clock reads. Documents are plain ``dict`` values in
FHIR JSON form; :func:`validate_fhir` checks one with the ``fhir.resources`` models (R5 by
default, R4 with the R4B models, whose ``Consent`` has the R4 shape).

Export (:func:`to_fhir_r5`, :func:`to_fhir_r4`) writes a participant's *current* consent to one
template, derived by folding the ledger up to ``at`` exactly as :func:`~hvelv.consent.decide`
does. Import (:func:`from_fhir`) turns an R5 or R4 ``Consent`` back into a template and ledger
events. Exporting, importing and deciding at the same ``at`` gives the same permit/deny and
obligations (a property test checks this).

The shape (docs/consent-engine.md has the full table):

* base policy **deny** (R5 ``decision: deny``; R4 root provision ``type: deny``, policyRule
  ``OPTIN``); each permit item the participant said yes to is a first-level provision (an
  exception: permit); the template's deny items are nested in every permit provision (an
  exception to the exception: deny), which is the engine's "deny wins" for every use a permit
  would allow;
* purposes: DUO codings (system ``http://purl.obolibrary.org/obo/``, codes ``DUO_0000042``);
  the DS disease as an extension holding a MONDO coding; DUO modifiers (with their parameters)
  as extensions; actions and data classes as codings in Hvelv code systems (R5
  ``provision.resourceType``, R4 ``provision.class``); item ids in an extension;
* the template version and text hash, a withdrawal (scope, who, when) and the end of a proxy
  representation are extensions on the resource; the consent's start is ``period.start`` (R5)
  or the root provision's ``period.start`` (R4); a proxy grantor is a ``RelatedPerson``
  identified by the proxy's actor id.

Import is strict: anything the engine cannot represent exactly (deeper nesting, provision
elements such as ``actor`` or ``data``, purposes outside DUO, foreign action codes) is refused
with :class:`UnsupportedFhirConsent` rather than silently widened.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import pydantic
from fhir.resources.consent import Consent as ConsentR5
from fhir.resources.R4B.consent import Consent as ConsentR4

from hvelv.audit.ledger import canonical
from hvelv.consent.decision import (
    DEFAULT_AGE_OF_MAJORITY,
    EMPTY_STATE,
    ActiveConsent,
    FoldContext,
    TemplateLookup,
    Withdrawal,
    apply_event,
    is_minor,
)
from hvelv.consent.diseases import DiseaseHierarchy, default_hierarchy
from hvelv.consent.duo import DUO_TERMS, MODIFIERS, PERMISSIONS, Duo, Modifiers, Purpose
from hvelv.consent.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    Effect,
    EventKind,
    Period,
    Provision,
    Template,
    WithdrawalScope,
    require_aware,
)

__all__ = [
    "ACTION_SYSTEM",
    "ACTOR_SYSTEM",
    "DATA_CLASS_SYSTEM",
    "DUO_SYSTEM",
    "EXT",
    "MONDO_SYSTEM",
    "FhirConsentError",
    "FhirVersion",
    "ImportedConsent",
    "InvalidFhirConsent",
    "UnsupportedFhirConsent",
    "current_consent",
    "from_fhir",
    "to_fhir_r4",
    "to_fhir_r5",
    "validate_fhir",
]

FhirVersion = Literal["R5", "R4"]

DUO_SYSTEM: Final = "http://purl.obolibrary.org/obo/"
MONDO_SYSTEM: Final = "http://purl.obolibrary.org/obo/mondo.owl"
_BASE: Final = "https://hvelv.org/fhir"
ACTION_SYSTEM: Final = f"{_BASE}/CodeSystem/consent-action"
DATA_CLASS_SYSTEM: Final = f"{_BASE}/CodeSystem/data-class"
ACTOR_SYSTEM: Final = f"{_BASE}/NamingSystem/consent-actor"


class _Ext:
    """Extension URLs (StructureDefinitions are described in docs/consent-engine.md)."""

    TEMPLATE: Final = f"{_BASE}/StructureDefinition/consent-template"
    WITHDRAWAL: Final = f"{_BASE}/StructureDefinition/consent-withdrawal"
    PROXY_ENDED: Final = f"{_BASE}/StructureDefinition/proxy-representation-ended"
    ITEM: Final = f"{_BASE}/StructureDefinition/consent-item"
    DISEASE: Final = f"{_BASE}/StructureDefinition/duo-disease"
    MODIFIER: Final = f"{_BASE}/StructureDefinition/duo-modifier"
    EMPTY: Final = f"{_BASE}/StructureDefinition/matches-nothing"
    EFFECT: Final = f"{_BASE}/StructureDefinition/provision-effect"  # a modifierExtension


EXT = _Ext

_LOINC_CONSENT = {
    "coding": [
        {
            "system": "http://loinc.org",
            "code": "57016-8",
            "display": "Privacy policy acknowledgment Document",
        }
    ]
}
_RESEARCH = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "research",
            "display": "Research",
        }
    ]
}
_OPTIN = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
}
# The id part of a reference ("Patient/<id>") that is a national id, with or without the
# space people type after the birth date. A pseudonym is 32 hex characters and may hold a
# run of eleven digits by chance, so the guard looks at the whole id, not at any digit run.
_NATIONAL_ID_LIKE: Final = re.compile(r"(?:^|/)\d{6} ?\d{5}$")
_DUO_BY_ID: Final = {t.id: code for code, t in DUO_TERMS.items()}


class FhirConsentError(ValueError):
    """A FHIR Consent document cannot be imported."""


class InvalidFhirConsent(FhirConsentError):
    """The document is not a valid FHIR Consent of the version it claims to be."""


class UnsupportedFhirConsent(FhirConsentError):
    """The document is valid FHIR but says something the consent engine cannot represent."""


# --------------------------------------------------------------------------- current state


@dataclass(frozen=True, slots=True)
class CurrentConsent:
    """The part of a folded ledger that one template's FHIR Consent shows."""

    template: Template  # the version in force (or the given template when none is)
    consent: ActiveConsent | None
    started: dt.datetime | None  # when the consent in force was given
    text_hash: str | None
    proxy_actor: str | None
    representation_ended_at: dt.datetime | None
    withdrawal: Withdrawal | None
    withdrawn_at: dt.datetime | None
    withdrawn_by: str | None


def current_consent(
    template: Template,
    events: Iterable[ConsentEvent],
    at: dt.datetime,
    *,
    template_lookup: TemplateLookup | None = None,
    participant_birth_date: dt.date | None = None,
    age_of_majority: int = DEFAULT_AGE_OF_MAJORITY,
) -> CurrentConsent:
    """Fold the events up to ``at`` (as ``decide`` does) and keep what concerns the consent to
    ``template.template_id`` (any version) and the withdrawal in effect, with their times."""
    require_aware(at, "at")
    lookup = template_lookup if template_lookup is not None else {template.version_id: template}.get
    ctx = FoldContext(lookup, participant_birth_date, age_of_majority)
    considered = sorted((e for e in events if e.at <= at), key=lambda e: (e.at, e.seq))
    state = EMPTY_STATE
    started: dt.datetime | None = None
    text_hash: str | None = None
    proxy_actor: str | None = None
    ended_at: dt.datetime | None = None
    withdrawn_at: dt.datetime | None = None
    withdrawn_by: str | None = None
    for event in considered:
        before = _mine(state.consents, template.template_id)
        state, note = apply_event(state, event, ctx)
        after = _mine(state.consents, template.template_id)
        kind = event.kind
        if kind is EventKind.WITHDRAWN:
            withdrawn_at, withdrawn_by = event.at, event.actor.id
        if kind in (EventKind.GIVEN, EventKind.PROXY_GIVEN) and note is None and after != before:
            version = lookup(event.template_version_id or "")
            if version is not None and version.template_id == template.template_id:
                started, text_hash, ended_at = event.at, event.text_hash, None
                proxy_actor = event.actor.id if kind is EventKind.PROXY_GIVEN else None
        if (
            kind is EventKind.PROXY_ENDED
            and after is not None
            and after.representation_ended
            and (before is None or not before.representation_ended)
        ):
            ended_at = event.at
    mine = _mine(state.consents, template.template_id)
    in_force = template
    if mine is not None:
        found = lookup(mine.version_id)
        assert found is not None  # the fold only keeps versions it could look up
        in_force = found
    return CurrentConsent(
        template=in_force,
        consent=mine,
        started=started if mine is not None else None,
        text_hash=text_hash if mine is not None else None,
        proxy_actor=proxy_actor if mine is not None and mine.by_proxy else None,
        representation_ended_at=ended_at if mine is not None else None,
        withdrawal=state.withdrawal,
        withdrawn_at=withdrawn_at if state.withdrawal is not None else None,
        withdrawn_by=withdrawn_by if state.withdrawal is not None else None,
    )


def _mine(consents: Sequence[ActiveConsent], template_id: str) -> ActiveConsent | None:
    return next((c for c in consents if c.template_id == template_id), None)


def _in_force(cur: CurrentConsent, at: dt.datetime, minor_at: bool) -> bool:
    c = cur.consent
    if c is None or cur.withdrawal is not None:
        return False
    return not c.by_proxy or (not c.representation_ended and minor_at)


# --------------------------------------------------------------------------- export helpers


def _ts(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _duo_coding(code: Duo) -> dict[str, str]:
    term = DUO_TERMS[code]
    return {"system": DUO_SYSTEM, "code": term.id.replace(":", "_"), "display": term.label}


def _disease_coding(disease: str, diseases: DiseaseHierarchy) -> dict[str, str]:
    coding = {"system": MONDO_SYSTEM, "code": disease}
    if disease in diseases:
        coding["display"] = diseases.term(disease).label
    return coding


def _str_ext(url: str, value: str) -> dict[str, str]:
    return {"url": url, "valueString": value}


def _codeable(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _modifier_ext(code: Duo, mods: Modifiers) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "code", "valueCoding": _duo_coding(code)}]
    if code is Duo.TS:
        assert mods.time_limit is not None
        parts.append({"url": "timeLimit", "valueDateTime": _ts(mods.time_limit)})
    values = {
        Duo.GS: mods.regions,
        Duo.IS: mods.institutions,
        Duo.PS: mods.projects,
        Duo.US: mods.users,
    }.get(code, frozenset())
    parts.extend(_str_ext("value", v) for v in sorted(values))
    return {"url": EXT.MODIFIER, "extension": parts}


def _provision(p: Provision, version: FhirVersion, diseases: DiseaseHierarchy) -> dict[str, Any]:
    ext: list[dict[str, Any]] = [_str_ext(EXT.ITEM, p.item_id)]
    if p.purpose.disease is not None:
        ext.append(
            {"url": EXT.DISEASE, "valueCoding": _disease_coding(p.purpose.disease, diseases)}
        )
    ext.extend(_modifier_ext(code, p.modifiers) for code in sorted(p.modifiers.codes))
    empty = [
        name
        for name, values in (("action", p.actions), ("data-class", p.data_classes))
        if values is not None and not values
    ]
    ext.extend({"url": EXT.EMPTY, "valueCode": name} for name in empty)
    out: dict[str, Any] = {"extension": ext}
    if version == "R4":
        out["type"] = p.effect.value
    if p.period is not None:
        out["period"] = _period(p.period.start, p.period.end)
    if p.data_period is not None:
        out["dataPeriod"] = _period(p.data_period.start, p.data_period.end)
    if p.actions:
        out["action"] = [_codeable(ACTION_SYSTEM, a) for a in sorted(p.actions)]
    out["purpose"] = [_duo_coding(p.purpose.code)]
    if p.data_classes:
        key = "resourceType" if version == "R5" else "class"
        out[key] = [{"system": DATA_CLASS_SYSTEM, "code": c} for c in sorted(p.data_classes)]
    return out


def _period(start: dt.datetime | None, end: dt.datetime | None) -> dict[str, str]:
    period = {}
    if start is not None:
        period["start"] = _ts(start)
    if end is not None:
        period["end"] = _ts(end)
    return period


def _provisions(
    cur: CurrentConsent, version: FhirVersion, diseases: DiseaseHierarchy
) -> list[dict[str, Any]]:
    if cur.consent is None:
        return []
    provisions = cur.template.provisions
    denies = [_provision(p, version, diseases) for p in provisions if p.effect is Effect.DENY]
    out = []
    for p in provisions:
        if p.effect is Effect.PERMIT and p.item_id in cur.consent.granted:
            fp = _provision(p, version, diseases)
            if denies:
                fp["provision"] = denies
            out.append(fp)
    if not out and denies:
        # No permit is granted, but the deny items still apply to every other template's permits
        # ("deny wins" across templates). R4 can say so with type: deny; R5 provisions have no
        # type, so a modifierExtension flips the first-level exception to a deny.
        if version == "R5":
            for fp in denies:
                fp["modifierExtension"] = [{"url": EXT.EFFECT, "valueCode": "deny"}]
        out = denies
    return out


def _resource_extensions(cur: CurrentConsent) -> list[dict[str, Any]]:
    t = cur.template
    text_hash = cur.text_hash if cur.text_hash is not None else min(t.text_hashes)
    ext: list[dict[str, Any]] = [
        {
            "url": EXT.TEMPLATE,
            "extension": [
                _str_ext("templateId", t.template_id),
                _str_ext("versionId", t.version_id),
                _str_ext("textHash", text_hash),
            ],
        }
    ]
    if cur.withdrawal is not None:
        assert cur.withdrawn_at is not None
        assert cur.withdrawn_by is not None
        ext.append(
            {
                "url": EXT.WITHDRAWAL,
                "extension": [
                    {"url": "scope", "valueCode": cur.withdrawal.scope.value},
                    {"url": "at", "valueDateTime": _ts(cur.withdrawn_at)},
                    {"url": "byProxy", "valueBoolean": cur.withdrawal.by_proxy},
                    _str_ext("actor", cur.withdrawn_by),
                ],
            }
        )
    if cur.representation_ended_at is not None:
        ext.append({"url": EXT.PROXY_ENDED, "valueDateTime": _ts(cur.representation_ended_at)})
    return ext


def _grantor(participant_ref: str, cur: CurrentConsent) -> dict[str, Any]:
    if cur.proxy_actor is not None:
        return {
            "type": "RelatedPerson",
            "identifier": {"system": ACTOR_SYSTEM, "value": cur.proxy_actor},
        }
    return {"reference": participant_ref}


def _controller(ref: str | None, name: str | None) -> list[dict[str, str]]:
    if ref is None and name is None:
        return []
    out: dict[str, str] = {"type": "Organization"}
    if ref is not None:
        out["reference"] = ref
    if name is not None:
        out["display"] = name
    return [out]


# --------------------------------------------------------------------------- export


def _check_ref(participant_ref: str) -> None:
    if not participant_ref or _NATIONAL_ID_LIKE.search(participant_ref):
        raise ValueError("participant_ref must reference a pseudonym, never a national id")


def to_fhir_r5(
    participant_ref: str,
    template: Template,
    events: Sequence[ConsentEvent],
    at: dt.datetime,
    *,
    template_lookup: TemplateLookup | None = None,
    participant_birth_date: dt.date | None = None,
    age_of_majority: int = DEFAULT_AGE_OF_MAJORITY,
    controller_ref: str | None = None,
    controller_name: str | None = None,
    resource_id: str | None = None,
    diseases: DiseaseHierarchy | None = None,
) -> dict[str, Any]:
    """The participant's consent to ``template.template_id`` in force at ``at`` as an R5 Consent.

    ``participant_ref`` is a FHIR reference (``Patient/<pseudonym>``; never a national id).
    ``template_lookup`` must know every template version the ledger names (defaults to only
    ``template``): the consent in force may be to another version of the same template.
    ``status`` is ``active`` when the consent would be used at ``at`` (own consent, or a proxy's
    while the participant is a minor and the representation lasts, with no withdrawal in
    effect), otherwise ``inactive``.
    """
    _check_ref(participant_ref)
    cur = current_consent(
        template,
        events,
        at,
        template_lookup=template_lookup,
        participant_birth_date=participant_birth_date,
        age_of_majority=age_of_majority,
    )
    minor = is_minor(participant_birth_date, at.date(), age_of_majority)
    diseases = diseases if diseases is not None else default_hierarchy()
    doc: dict[str, Any] = {"resourceType": "Consent"}
    if resource_id is not None:
        doc["id"] = resource_id
    doc["extension"] = _resource_extensions(cur)
    doc["status"] = "active" if _in_force(cur, at, minor) else "inactive"
    doc["category"] = [_RESEARCH, _LOINC_CONSENT]
    doc["subject"] = {"reference": participant_ref}
    doc["date"] = (cur.started or at).astimezone(dt.UTC).date().isoformat()
    if cur.started is not None:
        doc["period"] = _period(cur.started, None)
    if cur.consent is not None:
        doc["grantor"] = [_grantor(participant_ref, cur)]
    if controller := _controller(controller_ref, controller_name):
        doc["controller"] = controller
    doc["decision"] = "deny"
    if provisions := _provisions(cur, "R5", diseases):
        doc["provision"] = provisions
    return doc


def to_fhir_r4(
    participant_ref: str,
    template: Template,
    events: Sequence[ConsentEvent],
    at: dt.datetime,
    *,
    template_lookup: TemplateLookup | None = None,
    participant_birth_date: dt.date | None = None,
    age_of_majority: int = DEFAULT_AGE_OF_MAJORITY,
    controller_ref: str | None = None,
    controller_name: str | None = None,
    resource_id: str | None = None,
    diseases: DiseaseHierarchy | None = None,
) -> dict[str, Any]:
    """As :func:`to_fhir_r5`, in the R4 shape: ``scope`` research, ``policyRule`` OPTIN, one root
    provision of ``type: deny`` holding the permit provisions. ``status`` is ``rejected`` while a
    withdrawal is in effect, otherwise ``active`` or ``inactive`` as in R5."""
    _check_ref(participant_ref)
    cur = current_consent(
        template,
        events,
        at,
        template_lookup=template_lookup,
        participant_birth_date=participant_birth_date,
        age_of_majority=age_of_majority,
    )
    minor = is_minor(participant_birth_date, at.date(), age_of_majority)
    diseases = diseases if diseases is not None else default_hierarchy()
    doc: dict[str, Any] = {"resourceType": "Consent"}
    if resource_id is not None:
        doc["id"] = resource_id
    doc["extension"] = _resource_extensions(cur)
    if cur.withdrawal is not None:
        doc["status"] = "rejected"
    else:
        doc["status"] = "active" if _in_force(cur, at, minor) else "inactive"
    doc["scope"] = _RESEARCH
    doc["category"] = [_LOINC_CONSENT]
    doc["patient"] = {"reference": participant_ref}
    doc["dateTime"] = _ts(cur.started or at)
    if cur.consent is not None:
        doc["performer"] = [_grantor(participant_ref, cur)]
    if controller := _controller(controller_ref, controller_name):
        doc["organization"] = controller
    doc["policyRule"] = _OPTIN
    root: dict[str, Any] = {"type": "deny"}
    if cur.started is not None:
        root["period"] = _period(cur.started, None)
    if provisions := _provisions(cur, "R4", diseases):
        root["provision"] = provisions
    doc["provision"] = root
    return doc


# --------------------------------------------------------------------------- validation


def _detect(resource: Mapping[str, Any]) -> FhirVersion:
    r4_only = ("scope", "patient", "dateTime", "policyRule", "performer", "organization")
    if any(k in resource for k in r4_only) or isinstance(resource.get("provision"), dict):
        return "R4"
    return "R5"


def validate_fhir(resource: Mapping[str, Any], version: FhirVersion | None = None) -> FhirVersion:
    """Validate ``resource`` as a FHIR Consent with ``fhir.resources`` (R5 models, or R4B models
    for R4). Returns the version; raises :class:`InvalidFhirConsent` naming the first problems.
    ``version=None`` guesses it from R4-only elements."""
    if not isinstance(resource, Mapping):
        raise InvalidFhirConsent("a FHIR Consent must be a JSON object")
    if resource.get("resourceType") != "Consent":
        raise InvalidFhirConsent(
            f"resourceType must be 'Consent', not {resource.get('resourceType')!r}"
        )
    version = version or _detect(resource)
    model = ConsentR5 if version == "R5" else ConsentR4
    try:
        model.model_validate(dict(resource))
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(resource)'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise InvalidFhirConsent(f"not a valid FHIR {version} Consent: {problems}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidFhirConsent(f"not a valid FHIR {version} Consent: {exc}") from None
    return version


# --------------------------------------------------------------------------- import


@dataclass(frozen=True, slots=True)
class ImportedConsent:
    """What a FHIR Consent says, in engine terms.

    ``template`` holds the provisions the document states (only those in force when it was an
    export); when the document names a template version Hvelv knows, a caller may use its own
    published template instead (item ids match). ``events`` are numbered from ``first_seq`` in
    ledger order.
    """

    version: FhirVersion
    participant_ref: str
    template: Template
    events: tuple[ConsentEvent, ...]


_R5_STATUSES = frozenset({"active", "inactive"})
_R4_STATUSES = frozenset({"active", "inactive", "rejected"})
_R5_PROVISION_KEYS = frozenset(
    {
        "extension",
        "modifierExtension",
        "purpose",
        "action",
        "resourceType",
        "period",
        "dataPeriod",
        "provision",
        "id",
    }
)
_R4_PROVISION_KEYS = frozenset(
    {"extension", "purpose", "action", "class", "period", "dataPeriod", "provision", "id", "type"}
)


def _get_ext(element: Mapping[str, Any], url: str) -> list[Mapping[str, Any]]:
    return [e for e in element.get("extension", []) if e.get("url") == url]


def _one_ext(element: Mapping[str, Any], url: str, where: str) -> Mapping[str, Any] | None:
    found = _get_ext(element, url)
    if len(found) > 1:
        raise UnsupportedFhirConsent(f"{where}: extension {url} is given more than once")
    return found[0] if found else None


def _sub(ext: Mapping[str, Any], name: str, value_key: str, where: str) -> Any:
    values = [e.get(value_key) for e in ext.get("extension", []) if e.get("url") == name]
    if len(values) != 1 or values[0] is None:
        raise UnsupportedFhirConsent(f"{where}: needs exactly one {name} ({value_key})")
    return values[0]


def _parse_time(text: str, where: str) -> dt.datetime:
    try:
        if len(text) == 10:  # a date: midnight UTC
            return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UnsupportedFhirConsent(f"{where}: {text!r} is not a date-time") from None
    if moment.utcoffset() is None:
        raise UnsupportedFhirConsent(f"{where}: {text!r} has no time zone")
    return moment


def _parse_period(raw: Mapping[str, Any] | None, where: str) -> Period | None:
    if not raw:
        return None
    if "start" not in raw:
        raise UnsupportedFhirConsent(f"{where}: a period needs a start")
    start = _parse_time(raw["start"], f"{where}.start")
    end = _parse_time(raw["end"], f"{where}.end") if "end" in raw else None
    try:
        return Period(start, end)
    except ValueError as exc:
        raise UnsupportedFhirConsent(f"{where}: {exc}") from None


def _codes(codeables: Sequence[Mapping[str, Any]], system: str, where: str) -> frozenset[str]:
    out: set[str] = set()
    for cc in codeables:
        for coding in cc.get("coding", []):
            if coding.get("system") != system or not coding.get("code"):
                raise UnsupportedFhirConsent(
                    f"{where}: coding {coding.get('system')}|{coding.get('code')} is not in "
                    f"{system}"
                )
            out.add(coding["code"])
        if not cc.get("coding"):
            raise UnsupportedFhirConsent(f"{where}: a concept without a coding")
    return frozenset(out)


def _duo_code(coding: Mapping[str, Any], where: str) -> Duo:
    if coding.get("system") != DUO_SYSTEM:
        raise UnsupportedFhirConsent(
            f"{where}: purpose {coding.get('system')}|{coding.get('code')} is not a DUO code"
        )
    code = _DUO_BY_ID.get(str(coding.get("code", "")).replace("_", ":", 1))
    if code is None:
        raise UnsupportedFhirConsent(f"{where}: unknown DUO code {coding.get('code')!r}")
    return code


def _modifiers(element: Mapping[str, Any], where: str) -> Modifiers:
    codes: set[Duo] = set()
    time_limit: dt.datetime | None = None
    params: dict[str, frozenset[str]] = {}
    names = {Duo.GS: "regions", Duo.IS: "institutions", Duo.PS: "projects", Duo.US: "users"}
    for ext in _get_ext(element, EXT.MODIFIER):
        code = _duo_code(_sub(ext, "code", "valueCoding", where), where)
        if code not in MODIFIERS:
            raise UnsupportedFhirConsent(f"{where}: {code} is not a DUO modifier")
        codes.add(code)
        if code is Duo.TS:
            time_limit = _parse_time(_sub(ext, "timeLimit", "valueDateTime", where), where)
        if code in names:
            values = [
                e.get("valueString") for e in ext.get("extension", []) if e.get("url") == "value"
            ]
            if not all(isinstance(v, str) and v for v in values):
                raise UnsupportedFhirConsent(f"{where}: {code} values must be strings")
            params[names[code]] = frozenset(str(v) for v in values)
    try:
        return Modifiers(frozenset(codes), time_limit, **params)
    except ValueError as exc:
        raise UnsupportedFhirConsent(f"{where}: {exc}") from None


def _to_provision(
    fp: Mapping[str, Any], effect: Effect, version: FhirVersion, where: str
) -> Provision:
    allowed = _R5_PROVISION_KEYS if version == "R5" else _R4_PROVISION_KEYS
    extra = sorted(set(fp) - allowed)
    if extra:
        raise UnsupportedFhirConsent(f"{where}: provision elements {extra} are not supported")
    known_ext = {EXT.ITEM, EXT.DISEASE, EXT.MODIFIER, EXT.EMPTY}
    foreign = sorted({e["url"] for e in fp.get("extension", [])} - known_ext)
    if foreign:
        raise UnsupportedFhirConsent(f"{where}: unknown extensions {foreign}")
    item = _one_ext(fp, EXT.ITEM, where)
    item_id = item["valueString"] if item is not None else where
    purposes = [_duo_code(c, where) for c in fp.get("purpose", [])]
    if len(purposes) > 1:
        raise UnsupportedFhirConsent(f"{where}: more than one purpose in one provision")
    code = purposes[0] if purposes else Duo.NRES  # no purpose: any purpose
    if code not in PERMISSIONS:
        raise UnsupportedFhirConsent(f"{where}: {code} is a modifier, not a purpose")
    disease_ext = _one_ext(fp, EXT.DISEASE, where)
    disease = None
    if disease_ext is not None:
        coding = disease_ext.get("valueCoding") or {}
        if coding.get("system") != MONDO_SYSTEM or not coding.get("code"):
            raise UnsupportedFhirConsent(f"{where}: the disease must be a MONDO coding")
        disease = coding["code"]
    empty = {e.get("valueCode") for e in _get_ext(fp, EXT.EMPTY)}
    actions = _codes(fp.get("action", []), ACTION_SYSTEM, where) if "action" in fp else None
    classes_key = "resourceType" if version == "R5" else "class"
    data_classes = None
    if classes_key in fp:
        data_classes = _codes([{"coding": fp[classes_key]}], DATA_CLASS_SYSTEM, where)
    try:
        return Provision(
            item_id=item_id,
            effect=effect,
            purpose=Purpose(code, disease),
            actions=frozenset() if "action" in empty else actions,
            data_classes=frozenset() if "data-class" in empty else data_classes,
            period=_parse_period(fp.get("period"), f"{where}.period"),
            modifiers=_modifiers(fp, where),
            data_period=_parse_period(fp.get("dataPeriod"), f"{where}.dataPeriod"),
        )
    except ValueError as exc:
        raise UnsupportedFhirConsent(f"{where}: {exc}") from None


def _effect_of(fp: Mapping[str, Any], default: Effect, version: FhirVersion, where: str) -> Effect:
    if version == "R4":
        try:
            return Effect(fp.get("type", default.value))
        except ValueError:
            raise UnsupportedFhirConsent(f"{where}: type must be permit or deny") from None
    mods = fp.get("modifierExtension", [])
    if not mods:
        return default
    if len(mods) != 1 or mods[0].get("url") != EXT.EFFECT or mods[0].get("valueCode") != "deny":
        raise UnsupportedFhirConsent(f"{where}: unknown modifierExtension {mods}")
    return Effect.DENY


def _provisions_from(
    firsts: Sequence[Mapping[str, Any]], base: Effect, version: FhirVersion, where: str
) -> list[Provision]:
    """First-level provisions are exceptions to ``base``; their children the opposite again."""
    first_effect = Effect.PERMIT if base is Effect.DENY else Effect.DENY
    out: dict[str, Provision] = {}

    def add(p: Provision) -> None:
        if p.item_id in out and out[p.item_id] != p:
            raise UnsupportedFhirConsent(f"item {p.item_id!r} is given twice, differently")
        out[p.item_id] = p

    for i, fp in enumerate(firsts):
        here = f"{where}[{i}]"
        effect = _effect_of(fp, first_effect, version, here)
        if effect is not first_effect:  # a deny item stated beside the permits (R4 type, R5 ext)
            if base is not Effect.DENY or fp.get("provision"):
                raise UnsupportedFhirConsent(f"{here}: type must be {first_effect.value}")
            add(_to_provision(fp, effect, version, here))
            continue
        add(_to_provision(fp, first_effect, version, here))
        for j, child in enumerate(fp.get("provision", [])):
            there = f"{here}.provision[{j}]"
            if child.get("modifierExtension"):
                raise UnsupportedFhirConsent(f"{there}: modifierExtension is not supported here")
            if version == "R4" and child.get("type", base.value) != base.value:
                raise UnsupportedFhirConsent(f"{there}: type must be {base.value}")
            if child.get("provision"):
                raise UnsupportedFhirConsent(f"{there}: provisions nested three deep")
            if base is Effect.PERMIT:
                raise UnsupportedFhirConsent(f"{there}: a permit inside a deny exception")
            add(_to_provision(child, base, version, there))
    if base is Effect.PERMIT:  # "permit everything except ...": an unrestricted permit item
        out["base-permit"] = Provision("base-permit", Effect.PERMIT, Purpose(Duo.NRES))
    return list(out.values())


def _reference(element: Mapping[str, Any] | None, where: str) -> str:
    if not element or not element.get("reference"):
        raise UnsupportedFhirConsent(f"{where}: a reference to the participant is required")
    return str(element["reference"])


def _grantor_actor(grantors: Sequence[Mapping[str, Any]], participant: str) -> Actor:
    if len(grantors) > 1:
        raise UnsupportedFhirConsent("more than one grantor/performer is not supported")
    if not grantors:
        return Actor(ActorKind.PARTICIPANT, participant)
    g = grantors[0]
    ident = g.get("identifier") or {}
    if g.get("type") == "RelatedPerson" or str(g.get("reference", "")).startswith("RelatedPerson/"):
        proxy_id = ident.get("value") or g.get("reference")
        if not proxy_id:
            raise UnsupportedFhirConsent("a RelatedPerson grantor needs an identifier")
        return Actor(ActorKind.PROXY, str(proxy_id))
    return Actor(ActorKind.PARTICIPANT, participant)


def from_fhir(
    resource: Mapping[str, Any],
    *,
    version: FhirVersion | None = None,
    participant: str | None = None,
    first_seq: int = 1,
) -> ImportedConsent:
    """Import an R5 or R4 FHIR ``Consent`` (version guessed when not given).

    Validates with ``fhir.resources`` first (:class:`InvalidFhirConsent`), then maps
    (:class:`UnsupportedFhirConsent` for what the engine cannot represent). Events:

    * a consent (``period.start`` or, for documents from elsewhere, status ``active``) becomes
      ``given`` (``proxy_given`` for a ``RelatedPerson`` grantor) answering yes to every permit
      provision, at the consent's start (``period.start``, else ``date``/``dateTime``);
    * the Hvelv withdrawal extension, or R4 status ``rejected``, becomes ``withdrawn``;
    * the proxy-ended extension becomes ``proxy_ended``;
    * status ``inactive`` with none of these becomes ``expired`` for the template version.

    ``participant`` names the ledger's participant (default: the subject reference).
    """
    version = validate_fhir(resource, version)
    r5 = version == "R5"
    if resource.get("modifierExtension"):
        raise UnsupportedFhirConsent("Consent.modifierExtension is not supported")
    status = resource.get("status")
    if status not in (_R5_STATUSES if r5 else _R4_STATUSES):
        allowed = sorted(_R5_STATUSES if r5 else _R4_STATUSES)
        raise UnsupportedFhirConsent(f"status {status!r} cannot be imported (one of {allowed})")
    subject = _reference(resource.get("subject" if r5 else "patient"), "subject")
    who = participant if participant is not None else subject

    if r5:
        if resource.get("decision") not in ("deny", "permit"):
            raise UnsupportedFhirConsent("decision must be 'deny' or 'permit'")
        base = Effect(resource["decision"])
        firsts: list[Mapping[str, Any]] = resource.get("provision", [])
        period_raw = resource.get("period")
        stamp = resource.get("date")
    else:
        root = resource.get("provision") or {"type": "deny"}
        extra = sorted(set(root) - {"type", "period", "provision", "extension", "id"})
        if extra:
            raise UnsupportedFhirConsent(f"provision: root elements {extra} are not supported")
        if root.get("type") not in ("deny", "permit"):
            raise UnsupportedFhirConsent("provision.type must be 'deny' or 'permit'")
        base = Effect(root["type"])
        firsts = root.get("provision", [])
        period_raw = root.get("period")
        stamp = resource.get("dateTime")
    provisions = _provisions_from(firsts, base, version, "provision")
    period = _parse_period(period_raw, "period")
    stamp_at = _parse_time(stamp, "date") if stamp else None

    tmpl_ext = _one_ext(resource, EXT.TEMPLATE, "Consent")
    if tmpl_ext is not None:
        template_id = _sub(tmpl_ext, "templateId", "valueString", "template")
        version_id = _sub(tmpl_ext, "versionId", "valueString", "template")
        text_hash = _sub(tmpl_ext, "textHash", "valueString", "template")
    else:
        digest = hashlib.sha256(canonical(dict(resource))).hexdigest()
        template_id = "fhir-import"
        version_id = f"fhir-import@{digest[:16]}"
        text_hash = f"sha256:{digest}"
    try:
        template = Template(version_id, template_id, tuple(provisions), frozenset({text_hash}))
    except ValueError as exc:
        raise UnsupportedFhirConsent(str(exc)) from None

    withdrawal_ext = _one_ext(resource, EXT.WITHDRAWAL, "Consent")
    ended_ext = _one_ext(resource, EXT.PROXY_ENDED, "Consent")
    has_consent = (period is not None and tmpl_ext is not None) or (
        tmpl_ext is None and status == "active"
    )
    bodies: list[dict[str, Any]] = []
    consent_at = period.start if period is not None else stamp_at
    if withdrawal_ext is not None:
        scope_raw = _sub(withdrawal_ext, "scope", "valueCode", "withdrawal")
        try:
            scope = WithdrawalScope(scope_raw)
        except ValueError:
            raise UnsupportedFhirConsent(f"withdrawal: unknown scope {scope_raw!r}") from None
        w_at = _parse_time(_sub(withdrawal_ext, "at", "valueDateTime", "withdrawal"), "withdrawal")
        by_proxy = bool(_sub(withdrawal_ext, "byProxy", "valueBoolean", "withdrawal"))
        actor_id = _sub(withdrawal_ext, "actor", "valueString", "withdrawal")
        w_actor = Actor(ActorKind.PROXY if by_proxy else ActorKind.PARTICIPANT, actor_id)
        bodies.append({"kind": EventKind.WITHDRAWN, "at": w_at, "actor": w_actor, "scope": scope})
    elif status == "rejected":
        if stamp_at is None:
            raise UnsupportedFhirConsent("a rejected consent needs dateTime")
        bodies.append(
            {
                "kind": EventKind.WITHDRAWN,
                "at": stamp_at,
                "actor": Actor(ActorKind.PARTICIPANT, who),
                "scope": WithdrawalScope.STOP_USE,
            }
        )
        has_consent = False
    if has_consent:
        if consent_at is None:
            raise UnsupportedFhirConsent("the consent needs period.start or a date")
        grantors = resource.get("grantor" if r5 else "performer", [])
        actor = _grantor_actor(grantors, who)
        kind = EventKind.PROXY_GIVEN if actor.kind is ActorKind.PROXY else EventKind.GIVEN
        choices = tuple((p.item_id, True) for p in provisions if p.effect is Effect.PERMIT)
        bodies.append(
            {
                "kind": kind,
                "at": consent_at,
                "actor": actor,
                "template_version_id": version_id,
                "text_hash": text_hash,
                "choices": choices,
            }
        )
        if ended_ext is not None:
            e_at = _parse_time(ended_ext.get("valueDateTime", ""), "proxy representation end")
            bodies.append({"kind": EventKind.PROXY_ENDED, "at": e_at, "actor": actor})
    elif status == "inactive" and withdrawal_ext is None:
        when = stamp_at if stamp_at is not None else consent_at
        if when is None:
            raise UnsupportedFhirConsent("an inactive consent needs a date")
        bodies.append(
            {
                "kind": EventKind.EXPIRED,
                "at": when,
                "actor": Actor(ActorKind.PARTICIPANT, who),
                "template_version_id": version_id,
            }
        )
    try:
        events = tuple(
            ConsentEvent(seq=first_seq + i, participant=who, **body)
            for i, body in enumerate(bodies)
        )
    except ValueError as exc:
        raise UnsupportedFhirConsent(str(exc)) from None
    return ImportedConsent(version, subject, template, events)
