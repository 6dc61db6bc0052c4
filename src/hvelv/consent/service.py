"""Consent services: studies, template versions, recording consent events, proxies, deletion
tasks and re-consent requests. No HTTP here; every change writes its audit event in the caller's
transaction, never with a national id in its details.

Hooks for the parallel work: ``RECEIPT_HOOKS`` are called with every new ledger row (signed
receipts, ``hvelv.consent.receipts``); FHIR import can call :func:`record_event` with the time and
channel of the imported document.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.consent import ledger
from hvelv.consent.decision import (
    DEFAULT_AGE_OF_MAJORITY,
    ConsentState,
    FoldContext,
    apply_event,
    fold,
)
from hvelv.consent.mapping import (
    CONSENT_ACTIONS,
    DATA_CLASSES,
    event_from_row,
    provision_from_dict,
    provision_to_dict,
    template_from_row,
    text_hash,
)
from hvelv.consent.model import (
    Actor,
    ActorKind,
    ConsentEvent,
    EventKind,
    Template,
    WithdrawalScope,
)
from hvelv.consent.models import (
    ConsentEventRow,
    DeletionTask,
    Participant,
    Proxy,
    ReconsentRequest,
    Study,
    TemplateVersion,
)
from hvelv.errors import Conflict, InvalidInput, NotFound

LANGUAGES = ("nb", "nn", "en")
DELETION_DAYS = 30  # Health Research Act §16: without undue delay; we give 30 days
RECEIPT_HOOKS: list[Callable[[Session, ConsentEventRow], None]] = []


# -- studies and templates -------------------------------------------------------------------


def create_study(
    session: Session, trail: AuditTrail, pid: str, *, name: str, description: str
) -> Study:
    study = Study(project_id=pid, name=name, description=description, created_by=trail.actor)
    session.add(study)
    session.flush()
    trail.record(
        "consent.study_create", target=f"study:{study.id}", project_id=pid, details={"name": name}
    )
    return study


def list_studies(session: Session, pid: str) -> list[Study]:
    return list(
        session.execute(select(Study).where(Study.project_id == pid).order_by(Study.id)).scalars()
    )


def get_study(session: Session, pid: str, study_id: int) -> Study:
    study = session.get(Study, study_id)
    if study is None or study.project_id != pid:
        raise NotFound(f"no study {study_id}", code="study_not_found")
    return study


def _check_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate items through the engine's types; returns the normalised stored form."""
    normalised: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for n, item in enumerate(items):
        try:
            provision = provision_from_dict(item)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append({"item": n, "reason": str(exc)})
            continue
        unknown_actions = sorted((provision.actions or frozenset()) - CONSENT_ACTIONS)
        unknown_classes = sorted((provision.data_classes or frozenset()) - DATA_CLASSES)
        if unknown_actions or unknown_classes:
            problems.append(
                {
                    "item": n,
                    "reason": "unknown actions or data classes",
                    "actions": unknown_actions,
                    "data_classes": unknown_classes,
                }
            )
            continue
        normalised.append(provision_to_dict(provision, item.get("titles")))
    ids = [i["item_id"] for i in normalised]
    if len(ids) != len(set(ids)):
        problems.append({"reason": "item ids must be unique"})
    if problems:
        raise InvalidInput(
            "the template items are not valid", code="invalid_template", details=problems
        )
    return normalised


def _check_texts(texts: Mapping[str, str]) -> dict[str, str]:
    bad = sorted(set(texts) - set(LANGUAGES))
    if bad or not texts:
        raise InvalidInput(
            f"texts need at least one of the languages {', '.join(LANGUAGES)}",
            code="invalid_template",
            details={"languages": bad},
        )
    return {lang: text_hash(text) for lang, text in texts.items()}


def _new_version(
    session: Session,
    trail: AuditTrail,
    pid: str,
    study_id: int,
    key: str | None,
    version: int,
    *,
    title: str,
    texts: dict[str, str],
    items: list[dict[str, Any]],
) -> TemplateVersion:
    row = TemplateVersion(
        project_id=pid,
        study_id=study_id,
        template_key=key or f"new-{pid}-{version}",
        version=version,
        status="draft",
        title=title,
        texts=dict(texts),
        text_hashes=_check_texts(texts),
        items=_check_items(items),
        created_by=trail.actor,
    )
    session.add(row)
    session.flush()
    if key is None:
        row.template_key = f"t{row.id}"
        session.flush()
    trail.record(
        "consent.template_create",
        target=f"template:{row.version_id}",
        project_id=pid,
        details={"study": study_id, "items": len(row.items), "languages": sorted(texts)},
    )
    return row


def create_template(
    session: Session,
    trail: AuditTrail,
    pid: str,
    study_id: int,
    *,
    title: str,
    texts: dict[str, str],
    items: list[dict[str, Any]],
) -> TemplateVersion:
    get_study(session, pid, study_id)
    return _new_version(
        session, trail, pid, study_id, None, 1, title=title, texts=texts, items=items
    )


def versions_of(session: Session, pid: str, key: str) -> list[TemplateVersion]:
    return list(
        session.execute(
            select(TemplateVersion)
            .where(TemplateVersion.project_id == pid, TemplateVersion.template_key == key)
            .order_by(TemplateVersion.version)
        ).scalars()
    )


def new_template_version(
    session: Session,
    trail: AuditTrail,
    pid: str,
    key: str,
    *,
    title: str,
    texts: dict[str, str],
    items: list[dict[str, Any]],
) -> TemplateVersion:
    versions = versions_of(session, pid, key)
    if not versions:
        raise NotFound(f"no template {key}", code="template_not_found")
    if any(v.status == "draft" for v in versions):
        raise Conflict("the template already has a draft version", code="draft_exists")
    last = versions[-1]
    return _new_version(
        session,
        trail,
        pid,
        last.study_id,
        key,
        last.version + 1,
        title=title,
        texts=texts,
        items=items,
    )


def list_templates(
    session: Session, pid: str, study_id: int | None = None
) -> list[TemplateVersion]:
    query = select(TemplateVersion).where(TemplateVersion.project_id == pid)
    if study_id is not None:
        query = query.where(TemplateVersion.study_id == study_id)
    return list(session.execute(query.order_by(TemplateVersion.id)).scalars())


def get_version(session: Session, pid: str, key: str, version: int) -> TemplateVersion:
    row = session.execute(
        select(TemplateVersion).where(
            TemplateVersion.project_id == pid,
            TemplateVersion.template_key == key,
            TemplateVersion.version == version,
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no template version {key}.{version}", code="template_not_found")
    return row


def get_version_by_id(session: Session, pid: str, version_id: str) -> TemplateVersion:
    key, _, number = version_id.rpartition(".")
    if not key or not number.isdigit():
        raise NotFound(f"no template version {version_id}", code="template_not_found")
    return get_version(session, pid, key, int(number))


def update_draft(
    session: Session, trail: AuditTrail, row: TemplateVersion, changes: dict[str, Any]
) -> TemplateVersion:
    if row.status != "draft":
        raise Conflict("a published template version is immutable", code="template_published")
    if "title" in changes:
        row.title = changes["title"]
    if "texts" in changes:
        row.text_hashes = _check_texts(changes["texts"])
        row.texts = dict(changes["texts"])
    if "items" in changes:
        row.items = _check_items(changes["items"])
    session.flush()
    trail.record(
        "consent.template_update",
        target=f"template:{row.version_id}",
        project_id=row.project_id,
        details={"fields": sorted(changes)},
    )
    return row


def publish(session: Session, trail: AuditTrail, row: TemplateVersion) -> TemplateVersion:
    if row.status != "draft":
        raise Conflict("this template version is already published", code="template_published")
    if not row.items:
        raise InvalidInput("a template needs at least one item", code="invalid_template")
    template_from_row(row)  # the engine accepts it
    row.status = "published"
    row.published_at = dt.datetime.now(dt.UTC)
    session.flush()
    trail.record(
        "consent.template_publish",
        target=f"template:{row.version_id}",
        project_id=row.project_id,
        details={"text_hashes": row.text_hashes},
    )
    return row


def published_templates(session: Session, pid: str) -> dict[str, Template]:
    rows = session.execute(
        select(TemplateVersion).where(
            TemplateVersion.project_id == pid, TemplateVersion.status == "published"
        )
    ).scalars()
    return {row.version_id: template_from_row(row) for row in rows}


# -- participants: lookup and state ---------------------------------------------------------


def get_participant(session: Session, pid: str, pseudonym: str) -> Participant:
    row = session.execute(
        select(Participant).where(Participant.project_id == pid, Participant.pseudonym == pseudonym)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("no such participant in this project", code="participant_not_found")
    return row


def events_of(session: Session, participant: Participant) -> list[ConsentEvent]:
    rows = session.execute(
        select(ConsentEventRow)
        .where(
            ConsentEventRow.project_id == participant.project_id,
            ConsentEventRow.participant_id == participant.id,
        )
        .order_by(ConsentEventRow.seq)
    ).scalars()
    return [event_from_row(row, participant.pseudonym) for row in rows]


def event_rows_of(session: Session, participant: Participant) -> list[ConsentEventRow]:
    return list(
        session.execute(
            select(ConsentEventRow)
            .where(
                ConsentEventRow.project_id == participant.project_id,
                ConsentEventRow.participant_id == participant.id,
            )
            .order_by(ConsentEventRow.seq)
        ).scalars()
    )


@dataclass(frozen=True)
class Loaded:
    """A participant's ledger and the project's published templates, read once per request."""

    templates: dict[str, Template]
    history: list[ConsentEvent]


@dataclass(frozen=True)
class Cached:
    """A participant's folded state at the event's time and the published templates, from
    the process's consent cache (:meth:`hvelv.consent.decisions.ConsentCache.state_of`), read
    inside the same write transaction as the append."""

    state: ConsentState
    position: int
    templates: dict[str, Template]


def load(session: Session, participant: Participant) -> Loaded:
    return Loaded(
        published_templates(session, participant.project_id), events_of(session, participant)
    )


@dataclass(frozen=True)
class ConsentView:
    """A participant's current state, from the engine's fold."""

    consents: list[dict[str, Any]]
    withdrawal: dict[str, Any] | None
    ledger_position: int


def current_state(
    session: Session,
    participant: Participant,
    *,
    at: dt.datetime | None = None,
    age_of_majority: int = DEFAULT_AGE_OF_MAJORITY,
    templates: dict[str, Template] | None = None,
    loaded: Loaded | None = None,
) -> ConsentView:
    if loaded is not None:
        lookup, history = loaded.templates, loaded.history
    else:
        lookup = (
            templates
            if templates is not None
            else published_templates(session, participant.project_id)
        )
        history = events_of(session, participant)
    ctx = FoldContext(lookup.get, participant.birth_date, age_of_majority)
    folded = fold(history, at, ctx)
    consents = [
        {
            "template_id": c.template_id,
            "version_id": c.version_id,
            "by_proxy": c.by_proxy,
            "representation_ended": c.representation_ended,
            "granted": sorted(c.granted),
        }
        for c in folded.state.consents
    ]
    w = folded.state.withdrawal
    withdrawal = None if w is None else {"scope": w.scope.value, "by_proxy": w.by_proxy}
    return ConsentView(consents, withdrawal, folded.ledger_position)


@dataclass(frozen=True)
class TemplateChoice:
    """One published template as a participant sees it: the version consented to, or else
    the latest published version (not consented)."""

    row: TemplateVersion
    consented: bool
    granted: frozenset[str]
    by_proxy: bool


def participant_templates(
    session: Session, participant: Participant, *, age_of_majority: int
) -> tuple[list[TemplateChoice], ConsentView]:
    """Every published template of the participant's project, by template key, with the
    participant's current state (the portal's overview and ``GET /v1/participant/consents``)."""
    view = current_state(session, participant, age_of_majority=age_of_majority)
    by_key = {c["template_id"]: c for c in view.consents}
    rows = {
        r.version_id: r
        for r in list_templates(session, participant.project_id)
        if r.status == "published"
    }
    latest: dict[str, TemplateVersion] = {}
    for row in rows.values():
        if row.template_key not in latest or row.version > latest[row.template_key].version:
            latest[row.template_key] = row
    choices = []
    for key in sorted(latest):
        current = by_key.get(key)
        if current is None:
            choices.append(TemplateChoice(latest[key], False, frozenset(), False))
        else:
            choices.append(
                TemplateChoice(
                    rows[current["version_id"]],
                    True,
                    frozenset(current["granted"]),
                    bool(current["by_proxy"]),
                )
            )
    return choices, view


# -- recording consent events ---------------------------------------------------------------


@dataclass(frozen=True)
class Acting:
    """Who acts on the ledger: the participant, or one of their proxies."""

    kind: ActorKind
    proxy: Proxy | None = None

    def actor_id(self, participant: Participant) -> str:
        if self.proxy is not None:
            return f"proxy-{self.proxy.id}"
        return participant.pseudonym


PARTICIPANT = Acting(ActorKind.PARTICIPANT)

_REFUSALS = {
    "participant_under_age": "the participant is under the age of majority; a proxy consents",
    "proxy_not_representing": "the proxy does not represent the participant at this time",
    "no_consent_to_change": "there is no consent to this template to change",
    "grant_refused": "this consent cannot be extended by this actor now",
    "unknown_template": "the template version is not published",
    "text_hash": "the text does not belong to the template version",
}


def record_event(
    session: Session,
    trail: AuditTrail,
    participant: Participant,
    *,
    kind: EventKind,
    acting: Acting,
    channel: str,
    assurance: str,
    template: TemplateVersion | None = None,
    language: str | None = None,
    choices: Mapping[str, bool] | None = None,
    scope: WithdrawalScope | None = None,
    at: dt.datetime | None = None,
    age_of_majority: int = DEFAULT_AGE_OF_MAJORITY,
    loaded: Loaded | None = None,
    cached: Cached | None = None,
) -> ConsentEventRow:
    """Check the event against the participant's current state with the engine, then append it.

    Refuses (409, ``consent_<why>``) what the engine would ignore, so the ledger only holds
    events that mean something; a "no" is never refused. The state comes from ``cached``
    (folded at ``at``, which must then be given), else from ``loaded``, else from the ledger.
    """
    if cached is not None and at is None:
        raise ValueError("a cached state is folded at a given time: pass at")
    pid = participant.project_id
    when = at or dt.datetime.now(dt.UTC)
    picks = dict(choices or {})
    hash_: str | None = None
    version_id: str | None = None
    if template is not None:
        if template.project_id != pid or template.status != "published":
            raise Conflict("the template version is not published", code="consent_unknown_template")
        lang = language or participant.language
        if lang not in template.text_hashes:
            raise InvalidInput(
                f"the template has no text in language {lang!r}", code="unknown_language"
            )
        language = lang
        hash_ = template.text_hashes[lang]
        version_id = template.version_id
        known = {item["item_id"] for item in template.items}
        unknown = sorted(set(picks) - known)
        if unknown:
            raise InvalidInput(
                "unknown items for this template", code="unknown_item", details={"items": unknown}
            )
    if acting.proxy is not None and (
        acting.proxy.participant_id != participant.id or acting.proxy.ended_at is not None
    ):
        raise Conflict("the proxy does not represent this participant", code="consent_proxy_ended")
    if cached is not None:
        templates, position = cached.templates, cached.position
    else:
        loaded = loaded or load(session, participant)
        templates, history = loaded.templates, loaded.history
        position = history[-1].seq if history else 0
    try:
        probe = ConsentEvent(
            seq=position + 1,
            participant=participant.pseudonym,
            kind=kind,
            at=when,
            actor=Actor(acting.kind, acting.actor_id(participant)),
            template_version_id=version_id,
            text_hash=hash_,
            choices=tuple(picks.items()),
            scope=scope,
        )
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_consent_event") from None
    ctx = FoldContext(templates.get, participant.birth_date, age_of_majority)
    state = cached.state if cached is not None else fold(history, when, ctx).state
    _, note = apply_event(state, probe, ctx)
    if note is not None:
        raise Conflict(_REFUSALS.get(note, note), code=f"consent_{note}")

    (row,) = ledger.append(
        session,
        pid,
        [
            ledger.NewEvent(
                participant_id=participant.id,
                pseudonym=participant.pseudonym,
                kind=kind.value,
                at=when,
                actor_kind=acting.kind.value,
                actor_id=acting.actor_id(participant),
                channel=channel,
                assurance=assurance,
                recorded_by=trail.actor,
                template_version_id=version_id,
                text_hash=hash_,
                language=language if template is not None else None,
                choices=tuple(sorted(picks.items())),
                scope=scope.value if scope else None,
            )
        ],
    )
    details: dict[str, Any] = {"seq": row.seq, "channel": channel, "actor": acting.kind.value}
    if version_id:
        details.update(template=version_id, text_hash=hash_, choices=dict(sorted(picks.items())))
    if scope is not None:
        details["scope"] = scope.value
        if scope is not WithdrawalScope.STOP_USE:
            task = DeletionTask(
                project_id=pid,
                participant_id=participant.id,
                event_seq=row.seq,
                scope=scope.value,
                due_at=when + dt.timedelta(days=DELETION_DAYS),
            )
            session.add(task)
            session.flush()
            details["deletion_task"] = task.id
    trail.record(
        f"consent.{kind.value}",
        target=f"participant:{participant.pseudonym}",
        project_id=pid,
        details=details,
    )
    if template is not None and kind in (EventKind.GIVEN, EventKind.PROXY_GIVEN):
        _answer_requests(session, participant, template, row.seq, "given")
    for hook in RECEIPT_HOOKS:
        hook(session, row)
    return row


def _answer_requests(
    session: Session,
    participant: Participant,
    template: TemplateVersion,
    seq: int | None,
    answer: str,
) -> None:
    now = dt.datetime.now(dt.UTC)
    for request in session.execute(
        select(ReconsentRequest).where(
            ReconsentRequest.participant_id == participant.id,
            ReconsentRequest.template_id == template.id,
            ReconsentRequest.answered_at.is_(None),
        )
    ).scalars():
        request.answered_at = now
        request.answer = answer
        request.event_seq = seq


# -- proxies --------------------------------------------------------------------------------


def get_proxy(session: Session, participant: Participant, proxy_id: int) -> Proxy:
    proxy = session.get(Proxy, proxy_id)
    if proxy is None or proxy.participant_id != participant.id:
        raise NotFound(f"no proxy {proxy_id} for this participant", code="proxy_not_found")
    return proxy


def list_proxies(session: Session, participant: Participant) -> list[Proxy]:
    return list(
        session.execute(
            select(Proxy).where(Proxy.participant_id == participant.id).order_by(Proxy.id)
        ).scalars()
    )


def end_proxy(
    session: Session,
    trail: AuditTrail,
    participant: Participant,
    proxy: Proxy,
    *,
    reason: str,
) -> ConsentEventRow | None:
    """End a representation; the ledger gets ``proxy_ended`` when no proxy is left."""
    if proxy.ended_at is not None:
        raise Conflict("this representation has already ended", code="proxy_ended")
    proxy.ended_at = dt.datetime.now(dt.UTC)
    session.flush()
    trail.record(
        "consent.proxy_end",
        target=f"participant:{participant.pseudonym}",
        project_id=participant.project_id,
        details={"proxy": proxy.id, "reason": reason},
    )
    if any(p.ended_at is None for p in list_proxies(session, participant)):
        return None
    return _system_proxy_ended(session, trail, participant, proxy)


def _system_proxy_ended(
    session: Session, trail: AuditTrail, participant: Participant, proxy: Proxy
) -> ConsentEventRow:
    (row,) = ledger.append(
        session,
        participant.project_id,
        [
            ledger.NewEvent(
                participant_id=participant.id,
                pseudonym=participant.pseudonym,
                kind=EventKind.PROXY_ENDED.value,
                at=dt.datetime.now(dt.UTC),
                actor_kind=ActorKind.PROXY.value,
                actor_id=f"proxy-{proxy.id}",
                channel="system",
                assurance="none",
                recorded_by=trail.actor,
            )
        ],
    )
    trail.record(
        "consent.proxy_ended",
        target=f"participant:{participant.pseudonym}",
        project_id=participant.project_id,
        details={"seq": row.seq},
    )
    for hook in RECEIPT_HOOKS:
        hook(session, row)
    return row


# -- deletion tasks -------------------------------------------------------------------------


def list_deletion_tasks(session: Session, pid: str, *, open_only: bool) -> list[DeletionTask]:
    query = select(DeletionTask).where(DeletionTask.project_id == pid)
    if open_only:
        query = query.where(DeletionTask.completed_at.is_(None))
    return list(session.execute(query.order_by(DeletionTask.due_at, DeletionTask.id)).scalars())


def complete_deletion_task(
    session: Session, trail: AuditTrail, pid: str, task_id: int, note: str
) -> DeletionTask:
    task = session.get(DeletionTask, task_id)
    if task is None or task.project_id != pid:
        raise NotFound(f"no deletion task {task_id}", code="deletion_task_not_found")
    if task.completed_at is not None:
        raise Conflict("the task is already completed", code="deletion_task_completed")
    task.completed_at = dt.datetime.now(dt.UTC)
    task.completed_by = trail.actor
    task.note = note
    session.flush()
    trail.record(
        "consent.deletion_complete",
        target=f"deletion_task:{task.id}",
        project_id=pid,
        details={"scope": task.scope, "event_seq": task.event_seq},
    )
    return task


# -- re-consent requests --------------------------------------------------------------------


def request_reconsent(
    session: Session,
    trail: AuditTrail,
    pid: str,
    template: TemplateVersion,
    participants: Iterable[Participant],
    *,
    reason: str,
) -> list[ReconsentRequest]:
    if template.status != "published":
        raise Conflict("only published versions can be asked for", code="template_not_published")
    open_for = set(
        session.execute(
            select(ReconsentRequest.participant_id).where(
                ReconsentRequest.template_id == template.id,
                ReconsentRequest.answered_at.is_(None),
            )
        ).scalars()
    )
    made: list[ReconsentRequest] = []
    for participant in participants:
        if participant.id in open_for:
            continue
        made.append(
            ReconsentRequest(
                project_id=pid,
                participant_id=participant.id,
                template_id=template.id,
                reason=reason,
            )
        )
    session.add_all(made)
    session.flush()
    trail.record(
        "consent.reconsent_request",
        target=f"template:{template.version_id}",
        project_id=pid,
        details={"requests": len(made), "reason": reason},
    )
    return made


def open_requests(session: Session, participant: Participant) -> list[ReconsentRequest]:
    return list(
        session.execute(
            select(ReconsentRequest)
            .where(ReconsentRequest.participant_id == participant.id)
            .order_by(ReconsentRequest.id)
        ).scalars()
    )


def decline_request(
    session: Session, trail: AuditTrail, participant: Participant, request_id: int
) -> ReconsentRequest:
    request = session.get(ReconsentRequest, request_id)
    if request is None or request.participant_id != participant.id:
        raise NotFound(f"no request {request_id}", code="request_not_found")
    if request.answered_at is not None:
        raise Conflict("the request is already answered", code="request_answered")
    request.answered_at = dt.datetime.now(dt.UTC)
    request.answer = "declined"
    session.flush()
    trail.record(
        "consent.reconsent_decline",
        target=f"participant:{participant.pseudonym}",
        project_id=participant.project_id,
        details={"request": request.id},
    )
    return request


def count_participants(session: Session, pid: str) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(Participant).where(Participant.project_id == pid)
        ).scalar_one()
    )


# -- coming of age --------------------------------------------------------------------------


@dataclass(frozen=True)
class ComingOfAge:
    participant: Participant
    requests: list[ReconsentRequest]


def _of_age_cutoff(today: dt.date, age_of_majority: int) -> dt.date:
    """Whoever was born on or before this date is of age on ``today``."""
    year = today.year - age_of_majority
    try:
        return today.replace(year=year)
    except ValueError:  # 29 February in a common year
        return dt.date(year, 2, 28)


def review_representations(
    session: Session,
    trail: AuditTrail,
    pid: str,
    *,
    today: dt.date,
    age_of_majority: int = DEFAULT_AGE_OF_MAJORITY,
) -> list[ComingOfAge]:
    """End the representation of every participant who has reached the age of majority and ask
    them to consent themselves to each template a proxy consented to (no answer is no; the
    engine already stops counting the proxy's consent on their birthday)."""
    cutoff = _of_age_cutoff(today, age_of_majority)
    rows = session.execute(
        select(Participant)
        .where(
            Participant.project_id == pid,
            Participant.birth_date <= cutoff,
            Participant.id.in_(select(Proxy.participant_id).where(Proxy.ended_at.is_(None))),
        )
        .order_by(Participant.id)
    ).scalars()
    done: list[ComingOfAge] = []
    for participant in list(rows):
        proxied = [
            c["version_id"]
            for c in current_state(session, participant, age_of_majority=age_of_majority).consents
            if c["by_proxy"]
        ]
        for proxy in list_proxies(session, participant):
            if proxy.ended_at is None:
                end_proxy(session, trail, participant, proxy, reason="coming_of_age")
        made: list[ReconsentRequest] = []
        for version_id in proxied:
            template = get_version_by_id(session, pid, version_id)
            made.extend(
                request_reconsent(
                    session, trail, pid, template, [participant], reason="coming_of_age"
                )
            )
        done.append(ComingOfAge(participant, made))
    return done
