"""Routes for project members: /v1/projects/{pid}/consent/...

Owners and data managers manage studies, template versions and participants; every member may
ask for a decision or a snapshot (both logged); owners and auditors read the decision log; owners
and data managers see and complete deletion tasks.

FHIR export and import (``hvelv.consent.interop`` over the pure ``hvelv.consent.fhir``) and
signed receipts (``hvelv.consent.issued``: rebuilt from the ledger row on request) are here too.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from hvelv.consent import (
    access,
    decisions,
    enrolment,
    interop,
    issued,
    ledger,
    review,
    service,
)
from hvelv.consent.mapping import purpose_from_dict, use_from_dict
from hvelv.consent.model import ActorKind, EventKind, Use, WithdrawalScope
from hvelv.consent.models import (
    ConsentEventRow,
    DecisionLogEntry,
    DeletionTask,
    Participant,
    Proxy,
    ReconsentRequest,
    TemplateVersion,
)
from hvelv.consent.pseudonyms import ProjectSecrets, mask_email, mask_national_id
from hvelv.consent.schemas import (
    ActiveConsentOut,
    ConsentStateOut,
    DecisionIn,
    DecisionLogList,
    DecisionLogOut,
    DecisionOut,
    DeletionComplete,
    DeletionTaskOut,
    EnrolResult,
    EventIn,
    EventOut,
    FhirDocument,
    FhirImportOut,
    InvitationCreate,
    InvitationOut,
    ParticipantCreate,
    ParticipantImport,
    ParticipantList,
    ParticipantOut,
    ParticipantSearch,
    PeriodOut,
    ProxyCreate,
    ProxyOut,
    ReconsentCreate,
    ReconsentOut,
    ReviewOut,
    SnapshotIn,
    SnapshotOut,
    StudyCreate,
    StudyOut,
    TemplateCreate,
    TemplateOut,
    TemplatePatch,
    UseIn,
    UseOut,
    WithdrawalOut,
)
from hvelv.errors import Conflict, InvalidInput, NotFound
from hvelv.http.context import Ctx, RequestContext
from hvelv.http.routing import endpoint
from hvelv.security.actions import Action
from hvelv.text import IsoTime

router = APIRouter(prefix="/v1/projects/{pid}/consent", tags=["consent"])

Pid = Annotated[str, Path(pattern=r"^p[0-9]{4,9}$", description="Project id, e.g. p1001")]
StudyId = Annotated[int, Path(ge=1, le=2**31 - 1)]
TemplateKey = Annotated[str, Path(pattern=r"^t[0-9]{1,9}$", description="Template id, e.g. t3")]
VersionNo = Annotated[int, Path(ge=1, le=999_999)]
Pseudonym = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="Participant pseudonym")]
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
EventSeq = Annotated[int, Path(ge=1, le=2**62, description="The event's ledger position (seq)")]

_CONFLICT = {409: "Conflicts with the current state"}
_NOT_FOUND = {404: "No such object"}


def _secrets(ctx: RequestContext) -> ProjectSecrets:
    return ProjectSecrets(ctx.session, ctx.platform.keyring, ctx.pid)


def _age(ctx: RequestContext) -> int:
    return ctx.platform.settings.consent_age_of_majority


def template_out(row: TemplateVersion) -> TemplateOut:
    return TemplateOut(
        template_id=row.template_key,
        version=row.version,
        version_id=row.version_id,
        study_id=row.study_id,
        status=row.status,
        title=row.title,
        texts=row.texts,
        text_hashes=row.text_hashes,
        items=row.items,
        created_at=row.created_at,
        published_at=row.published_at,
    )


def state_out(view: service.ConsentView) -> ConsentStateOut:
    return ConsentStateOut(
        consents=[ActiveConsentOut(**c) for c in view.consents],
        withdrawal=WithdrawalOut(**view.withdrawal) if view.withdrawal else None,
        ledger_position=view.ledger_position,
    )


def participant_out(
    secrets: ProjectSecrets, p: Participant, state: service.ConsentView | None = None
) -> ParticipantOut:
    identity = enrolment.contact_of(secrets, p)
    return ParticipantOut(
        pseudonym=p.pseudonym,
        national_id=mask_national_id(identity["nid"]),
        id_kind=p.id_kind,
        birth_year=p.birth_date.year,
        language=p.language,
        email=mask_email(identity["email"]) if identity.get("email") else None,
        has_phone=bool(identity.get("phone")),
        enrolled_at=p.enrolled_at,
        state=state_out(state) if state else None,
    )


def event_out(row: ConsentEventRow, receipt: str | None = None) -> EventOut:
    return EventOut(
        seq=row.seq,
        kind=row.kind,
        at=row.at,
        actor_kind=row.actor_kind,
        actor_id=row.actor_id,
        channel=row.channel,
        assurance=row.assurance,
        template_version=row.template_version_id,
        text_hash=row.text_hash,
        language=row.language,
        choices=row.choices,
        scope=row.scope,
        hash=bytes(row.hash).hex(),
        receipt=receipt,
    )


def proxy_out(proxy: Proxy) -> ProxyOut:
    return ProxyOut(
        id=proxy.id,
        relation=proxy.relation,
        language=proxy.language,
        created_at=proxy.created_at,
        ended_at=proxy.ended_at,
    )


# -- studies and templates ------------------------------------------------------------------


@endpoint(router, "GET", "/studies", Action.CONSENT_READ)
def list_studies(pid: Pid, ctx: Ctx) -> list[StudyOut]:
    """The project's studies."""
    return [
        StudyOut(id=s.id, name=s.name, description=s.description, created_at=s.created_at)
        for s in service.list_studies(ctx.session, ctx.pid)
    ]


@endpoint(router, "POST", "/studies", Action.CONSENT_MANAGE, status_code=201)
def create_study(pid: Pid, body: StudyCreate, ctx: Ctx) -> StudyOut:
    """A study groups consent templates."""
    s = service.create_study(
        ctx.session, ctx.trail(), ctx.pid, name=body.name, description=body.description
    )
    ctx.commit()
    return StudyOut(id=s.id, name=s.name, description=s.description, created_at=s.created_at)


@endpoint(router, "GET", "/templates", Action.CONSENT_READ)
def list_templates(
    pid: Pid,
    ctx: Ctx,
    study_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[TemplateOut]:
    """Every template version (drafts and published) of the project or of one study."""
    return [template_out(t) for t in service.list_templates(ctx.session, ctx.pid, study_id)]


@endpoint(router, "POST", "/studies/{study_id}/templates", Action.CONSENT_MANAGE, status_code=201)
def create_template(pid: Pid, study_id: StudyId, body: TemplateCreate, ctx: Ctx) -> TemplateOut:
    """A new template: version 1, a draft until published."""
    row = service.create_template(
        ctx.session,
        ctx.trail(),
        ctx.pid,
        study_id,
        title=body.title,
        texts={str(k): v for k, v in body.texts.items()},
        items=[i.model_dump(mode="json") for i in body.items],
    )
    ctx.commit()
    return template_out(row)


@endpoint(
    router,
    "POST",
    "/templates/{template_id}/versions",
    Action.CONSENT_MANAGE,
    status_code=201,
    errors=_CONFLICT,
)
def new_version(pid: Pid, template_id: TemplateKey, body: TemplateCreate, ctx: Ctx) -> TemplateOut:
    """The next version of a template, as a draft (one draft at a time)."""
    row = service.new_template_version(
        ctx.session,
        ctx.trail(),
        ctx.pid,
        template_id,
        title=body.title,
        texts={str(k): v for k, v in body.texts.items()},
        items=[i.model_dump(mode="json") for i in body.items],
    )
    ctx.commit()
    return template_out(row)


@endpoint(router, "GET", "/templates/{template_id}/versions/{version}", Action.CONSENT_READ)
def read_version(pid: Pid, template_id: TemplateKey, version: VersionNo, ctx: Ctx) -> TemplateOut:
    """One template version with its texts, their SHA-256 hashes and its items."""
    return template_out(service.get_version(ctx.session, ctx.pid, template_id, version))


@endpoint(
    router,
    "PATCH",
    "/templates/{template_id}/versions/{version}",
    Action.CONSENT_MANAGE,
    errors=_CONFLICT,
)
def update_version(
    pid: Pid, template_id: TemplateKey, version: VersionNo, body: TemplatePatch, ctx: Ctx
) -> TemplateOut:
    """Change a draft; a published version is immutable (409)."""
    row = service.get_version(ctx.session, ctx.pid, template_id, version)
    changes = body.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    row = service.update_draft(ctx.session, ctx.trail(), row, changes)
    ctx.commit()
    return template_out(row)


@endpoint(
    router,
    "POST",
    "/templates/{template_id}/versions/{version}/publish",
    Action.CONSENT_MANAGE,
    errors=_CONFLICT,
)
def publish_version(
    pid: Pid, template_id: TemplateKey, version: VersionNo, ctx: Ctx
) -> TemplateOut:
    """Publish a draft: from now on it is immutable and participants can consent to it."""
    row = service.get_version(ctx.session, ctx.pid, template_id, version)
    row = service.publish(ctx.session, ctx.trail(), row)
    ctx.commit()
    return template_out(row)


# -- participants ---------------------------------------------------------------------------


def _enrol(ctx: RequestContext, rows: list[enrolment.EnrolRow]) -> EnrolResult:
    secrets = _secrets(ctx)
    made = enrolment.enrol(
        ctx.session,
        ctx.trail(),
        secrets,
        rows,
        allow_synthetic=ctx.platform.settings.consent_allow_synthetic_ids,
    )
    ctx.commit()
    shown = made[:1000]
    return EnrolResult(
        enrolled=len(made), participants=[participant_out(secrets, p) for p in shown]
    )


@endpoint(router, "POST", "/participants", Action.CONSENT_PARTICIPANT_MANAGE, status_code=201)
def enrol_participant(pid: Pid, body: ParticipantCreate, ctx: Ctx) -> ParticipantOut:
    """Enrol one participant (national id validated; stored encrypted)."""
    row = enrolment.EnrolRow(1, body.national_id, body.email, body.phone, body.language)
    result = _enrol(ctx, [row])
    return result.participants[0]


@endpoint(
    router, "POST", "/participants/import", Action.CONSENT_PARTICIPANT_MANAGE, status_code=201
)
def import_participants(pid: Pid, body: ParticipantImport, ctx: Ctx) -> EnrolResult:
    """Enrol from CSV, all or nothing; a rejection lists each bad line and why (422)."""
    return _enrol(ctx, enrolment.parse_csv(body.csv))


@endpoint(router, "GET", "/participants", Action.CONSENT_PARTICIPANT_READ)
def list_participants(
    pid: Pid,
    ctx: Ctx,
    after: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    with_state: bool = False,
) -> ParticipantList:
    """Participants in enrolment order, optionally with their current consent state."""
    query = select(Participant).where(Participant.project_id == ctx.pid)
    if after is not None:
        query = query.where(Participant.id > after)
    rows = list(ctx.session.execute(query.order_by(Participant.id).limit(limit)).scalars())
    secrets = _secrets(ctx)
    templates = service.published_templates(ctx.session, ctx.pid) if with_state else None
    items = [
        participant_out(
            secrets,
            p,
            service.current_state(ctx.session, p, age_of_majority=_age(ctx), templates=templates)
            if with_state
            else None,
        )
        for p in rows
    ]
    return ParticipantList(items=items, next_after=rows[-1].id if len(rows) == limit else None)


@endpoint(
    router, "POST", "/participants/search", Action.CONSENT_PARTICIPANT_READ, errors=_NOT_FOUND
)
def search_participant(pid: Pid, body: ParticipantSearch, ctx: Ctx) -> ParticipantOut:
    """Find a participant by national id (sent in the body, never in the URL)."""
    secrets = _secrets(ctx)
    found = enrolment.find_by_national_id(ctx.session, secrets, body.national_id)
    if found is None:
        raise NotFound("no participant with that national id", code="participant_not_found")
    state = service.current_state(ctx.session, found, age_of_majority=_age(ctx))
    return participant_out(secrets, found, state)


@endpoint(router, "GET", "/participants/{pseudonym}", Action.CONSENT_PARTICIPANT_READ)
def read_participant(pid: Pid, pseudonym: Pseudonym, ctx: Ctx) -> ParticipantOut:
    """A participant and their current consent state."""
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    state = service.current_state(ctx.session, p, age_of_majority=_age(ctx))
    return participant_out(_secrets(ctx), p, state)


@endpoint(router, "GET", "/participants/{pseudonym}/events", Action.CONSENT_PARTICIPANT_READ)
def participant_events(pid: Pid, pseudonym: Pseudonym, ctx: Ctx) -> list[EventOut]:
    """The participant's consent ledger, oldest first."""
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    link = f"/v1/projects/{ctx.pid}/consent/participants/{pseudonym}/receipts"
    return [event_out(r, f"{link}/{r.seq}") for r in service.event_rows_of(ctx.session, p)]


@endpoint(
    router,
    "GET",
    "/participants/{pseudonym}/receipts/{event_id}",
    Action.CONSENT_PARTICIPANT_READ,
)
def participant_receipt(
    pid: Pid, pseudonym: Pseudonym, event_id: EventSeq, ctx: Ctx
) -> dict[str, Any]:
    """The signed receipt of one of the participant's consent events (rebuilt from the
    ledger row: the same bytes on every call; verify with ``hvelv consent verify-receipt``)."""
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    row = issued.receipt_row(ctx.session, p, event_id)
    return issued.issue_receipt(ctx.session, ctx.platform.settings, ctx.platform.keyring, p, row)


@endpoint(
    router,
    "POST",
    "/participants/{pseudonym}/events",
    Action.CONSENT_PARTICIPANT_MANAGE,
    status_code=201,
    errors=_CONFLICT,
)
def record_event(pid: Pid, pseudonym: Pseudonym, body: EventIn, ctx: Ctx) -> EventOut:
    """Record a consent event received outside the app (paper form, phone)."""
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    template = (
        service.get_version_by_id(ctx.session, ctx.pid, body.template_version)
        if body.template_version
        else None
    )
    proxy = service.get_proxy(ctx.session, p, body.proxy_id) if body.proxy_id else None
    kind = EventKind(body.kind)
    if (kind is EventKind.PROXY_GIVEN) != (proxy is not None):
        raise InvalidInput(
            "proxy_id is given with proxy_given events and only with them", code="proxy_mismatch"
        )
    row = service.record_event(
        ctx.session,
        ctx.trail(),
        p,
        kind=kind,
        acting=service.Acting(ActorKind.PROXY, proxy) if proxy else service.PARTICIPANT,
        channel=body.channel,
        assurance=body.assurance,
        template=template,
        language=body.language,
        choices=body.choices,
        scope=WithdrawalScope(body.scope) if body.scope else None,
        age_of_majority=_age(ctx),
    )
    ctx.commit()
    return event_out(
        row, f"/v1/projects/{ctx.pid}/consent/participants/{pseudonym}/receipts/{row.seq}"
    )


@endpoint(router, "GET", "/participants/{pseudonym}/proxies", Action.CONSENT_PARTICIPANT_READ)
def list_proxies(pid: Pid, pseudonym: Pseudonym, ctx: Ctx) -> list[ProxyOut]:
    """The participant's representatives (guardians)."""
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    return [proxy_out(x) for x in service.list_proxies(ctx.session, p)]


@endpoint(
    router,
    "POST",
    "/participants/{pseudonym}/proxies",
    Action.CONSENT_PARTICIPANT_MANAGE,
    status_code=201,
)
def add_proxy(pid: Pid, pseudonym: Pseudonym, body: ProxyCreate, ctx: Ctx) -> ProxyOut:
    """Register a guardian who consents while the participant is under age."""
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    proxy = enrolment.add_proxy(
        ctx.session,
        ctx.trail(),
        _secrets(ctx),
        p,
        relation=body.relation,
        name=body.name,
        email=body.email,
        phone=body.phone,
        language=body.language,
    )
    ctx.commit()
    return proxy_out(proxy)


@endpoint(
    router,
    "POST",
    "/participants/{pseudonym}/proxies/{proxy_id}/end",
    Action.CONSENT_PARTICIPANT_MANAGE,
    errors=_CONFLICT,
)
def end_proxy(pid: Pid, pseudonym: Pseudonym, proxy_id: RowId, ctx: Ctx) -> ProxyOut:
    """End a representation (the ledger records ``proxy_ended`` when none is left)."""
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    proxy = service.get_proxy(ctx.session, p, proxy_id)
    service.end_proxy(ctx.session, ctx.trail(), p, proxy, reason="ended_by_staff")
    ctx.commit()
    return proxy_out(proxy)


@endpoint(
    router,
    "POST",
    "/participants/{pseudonym}/invitations",
    Action.CONSENT_PARTICIPANT_MANAGE,
    status_code=201,
    errors=_CONFLICT,
)
def invite(pid: Pid, pseudonym: Pseudonym, body: InvitationCreate, ctx: Ctx) -> InvitationOut:
    """A single-use sign-in link for the participant (or a proxy); e-mailed when possible."""
    assert ctx.project is not None
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    proxy = service.get_proxy(ctx.session, p, body.proxy_id) if body.proxy_id else None
    if proxy is not None and proxy.ended_at is not None:
        raise Conflict("this representation has ended", code="proxy_ended")
    new = access.invite(
        ctx.session,
        ctx.trail(),
        ctx.platform.settings,
        ctx.platform.keyring,
        _secrets(ctx),
        ctx.project,
        p,
        proxy,
    )
    ctx.commit()
    return InvitationOut(
        invitation_id=new.invitation.id,
        link=new.link,
        token=new.token,
        expires_at=new.invitation.expires_at,
        emailed=new.emailed,
    )


@endpoint(router, "GET", "/participants/{pseudonym}/uses", Action.CONSENT_LOG_READ)
def participant_uses(pid: Pid, pseudonym: Pseudonym, ctx: Ctx) -> list[UseOut]:
    """Which logged decisions and snapshots relied on this participant's consent."""
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    return uses_out(decisions.relied_on(ctx.session, p, age_of_majority=_age(ctx)))


def uses_out(entries: list[DecisionLogEntry]) -> list[UseOut]:
    out = []
    for e in entries:
        use = use_from_dict(e.use)
        out.append(
            UseOut(
                kind=e.kind,
                at=e.at,
                purpose=str(use.purpose),
                action=use.action,
                data_class=use.data_class,
                requester=e.requester,
                requester_institution=use.requester_institution,
                ledger_position=e.ledger_position,
            )
        )
    return out


@endpoint(
    router,
    "POST",
    "/reconsent",
    Action.CONSENT_PARTICIPANT_MANAGE,
    status_code=201,
    errors=_CONFLICT,
)
def request_reconsent(pid: Pid, body: ReconsentCreate, ctx: Ctx) -> ReconsentOut:
    """Ask participants (all, or the listed ones) to consent to a published version."""
    assert ctx.project is not None
    template = service.get_version_by_id(ctx.session, ctx.pid, body.template_version)
    query = select(Participant).where(Participant.project_id == ctx.pid)
    if body.participants is not None:
        query = query.where(Participant.pseudonym.in_(body.participants))
    people = list(ctx.session.execute(query).scalars())
    if body.participants is not None and len(people) != len(set(body.participants)):
        raise NotFound("some participants are not in this project", code="participant_not_found")
    made = service.request_reconsent(
        ctx.session, ctx.trail(), ctx.pid, template, people, reason=body.reason
    )
    notify_reconsent(ctx, template, made, people)
    ctx.commit()
    return ReconsentOut(requests=len(made))


def notify_reconsent(
    ctx: RequestContext,
    template: TemplateVersion,
    made: list[ReconsentRequest],
    people: list[Participant],
) -> None:
    assert ctx.project is not None
    review.notify_reconsent(ctx.session, ctx.platform.keyring, ctx.project, template, made, people)


@endpoint(router, "POST", "/proxies/review", Action.CONSENT_PARTICIPANT_MANAGE)
def review_proxies(pid: Pid, ctx: Ctx) -> ReviewOut:
    """End the representations of participants who have come of age, and ask each of them to
    consent themselves (re-consent requests, e-mailed when possible). The server also runs this
    review on a schedule (job ``consent.proxy_review``)."""
    assert ctx.project is not None
    reviewed = review.review_project(
        ctx.session,
        ctx.trail(),
        ctx.platform.keyring,
        ctx.project,
        today=dt.datetime.now(dt.UTC).date(),
        age_of_majority=_age(ctx),
    )
    ctx.commit()
    return ReviewOut(
        ended=[item.participant.pseudonym for item in reviewed],
        requests=sum(len(item.requests) for item in reviewed),
    )


# -- decisions ------------------------------------------------------------------------------


def make_use(ctx: RequestContext, body: UseIn) -> Use:
    try:
        return Use(
            project_id=ctx.pid,
            purpose=purpose_from_dict(body.purpose.model_dump()),
            action=body.action,
            data_class=body.data_class,
            requester_id=ctx.actor,
            requester_institution=body.requester_institution,
            commercial=body.commercial,
            requester_for_profit=body.requester_for_profit,
            geography=body.geography,
            genetic_study=body.genetic_study,
            methods_development=body.methods_development,
            clinical_care=body.clinical_care,
        )
    except ValueError as exc:
        raise InvalidInput(str(exc), code="invalid_use") from None


def _when(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    if at.utcoffset() is None:
        raise InvalidInput("at needs a time zone", code="invalid_time")
    return at


@endpoint(router, "POST", "/decisions", Action.CONSENT_DECIDE, errors=_NOT_FOUND)
def decide(pid: Pid, body: DecisionIn, ctx: Ctx) -> DecisionOut:
    """May this use touch this participant's data now (or at ``at``)? Logged."""
    assert ctx.project is not None
    p = service.get_participant(ctx.session, ctx.pid, body.participant)
    at = _when(body.at)
    decision, entry = decisions.decide_one(
        ctx.session,
        ctx.trail(),
        ctx.platform.consent_cache,
        ctx.project,
        p,
        make_use(ctx, body.use),
        at,
        age_of_majority=_age(ctx),
    )
    ctx.commit()
    return DecisionOut(
        permit=decision.permit,
        reasons=list(decision.reasons),
        obligations=list(decision.obligations),
        data_periods=None
        if decision.data_periods is None
        else [PeriodOut(start=p.start, end=p.end) for p in decision.data_periods],
        ledger_position=decision.ledger_position,
        at=at,
        log_id=entry.id,
    )


@endpoint(router, "POST", "/snapshots", Action.CONSENT_DECIDE)
def snapshot(pid: Pid, body: SnapshotIn, ctx: Ctx) -> SnapshotOut:
    """Every participant this use may touch now (or at ``at``), with the ledger position. Logged."""
    assert ctx.project is not None
    at = _when(body.at)
    result, entry = decisions.snapshot(
        ctx.session,
        ctx.trail(),
        ctx.platform.consent_cache,
        ctx.project,
        make_use(ctx, body.use),
        at,
        age_of_majority=_age(ctx),
    )
    ctx.commit()
    return SnapshotOut(
        at=at,
        ledger_position=result.ledger_position,
        count=len(result.pseudonyms),
        pseudonyms=sorted(result.pseudonyms),
        log_id=entry.id,
    )


@endpoint(router, "GET", "/decision-log", Action.CONSENT_LOG_READ)
def decision_log(
    pid: Pid,
    ctx: Ctx,
    after: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DecisionLogList:
    """Every logged decision and snapshot: use, time, ledger position, requester."""
    entries = decisions.decision_log(ctx.session, ctx.pid, after=after, limit=limit)
    names = _pseudonyms(ctx, [e.participant_id for e in entries if e.participant_id])
    items = [
        DecisionLogOut(
            id=e.id,
            kind=e.kind,
            participant=names.get(e.participant_id) if e.participant_id else None,
            use=e.use,
            at=e.at,
            ledger_position=e.ledger_position,
            permitted=e.permitted,
            requester=e.requester,
            created_at=e.created_at,
        )
        for e in entries
    ]
    return DecisionLogList(items=items, next_after=items[-1].id if len(items) == limit else None)


@endpoint(router, "GET", "/ledger/verify", Action.CONSENT_LOG_READ, errors=_CONFLICT)
def verify_ledger(pid: Pid, ctx: Ctx) -> dict[str, int]:
    """Recompute the project's consent hash chain; 409 names the first bad event."""
    try:
        return {"events": ledger.verify(ctx.session, ctx.pid)}
    except ledger.ChainBroken as exc:
        raise Conflict(str(exc), code="consent_ledger_broken") from None


# -- deletion tasks -------------------------------------------------------------------------


def task_out(task: DeletionTask, pseudonym: str) -> DeletionTaskOut:
    now = dt.datetime.now(dt.UTC)
    return DeletionTaskOut(
        id=task.id,
        participant=pseudonym,
        scope=task.scope,
        event_seq=task.event_seq,
        created_at=task.created_at,
        due_at=task.due_at,
        completed_at=task.completed_at,
        completed_by=task.completed_by,
        overdue=task.completed_at is None and task.due_at < now,
    )


def _pseudonyms(ctx: RequestContext, ids: list[int]) -> dict[int, str]:
    rows = ctx.session.execute(
        select(Participant.id, Participant.pseudonym).where(Participant.id.in_(ids))
    )
    return {row.id: row.pseudonym for row in rows}


@endpoint(router, "GET", "/deletion-tasks", Action.CONSENT_DELETION_READ)
def deletion_tasks(pid: Pid, ctx: Ctx, open_only: bool = True) -> list[DeletionTaskOut]:
    """Deletions owed after withdrawals, earliest deadline first (30 days after the event)."""
    tasks = service.list_deletion_tasks(ctx.session, ctx.pid, open_only=open_only)
    names = _pseudonyms(ctx, [t.participant_id for t in tasks])
    return [task_out(t, names[t.participant_id]) for t in tasks]


@endpoint(
    router,
    "POST",
    "/deletion-tasks/{task_id}/complete",
    Action.CONSENT_DELETION_COMPLETE,
    errors=_CONFLICT,
)
def complete_task(pid: Pid, task_id: RowId, body: DeletionComplete, ctx: Ctx) -> DeletionTaskOut:
    """Mark a deletion done (what was deleted goes in the note)."""
    task = service.complete_deletion_task(ctx.session, ctx.trail(), ctx.pid, task_id, body.note)
    names = _pseudonyms(ctx, [task.participant_id])
    ctx.commit()
    return task_out(task, names[task.participant_id])


# -- FHIR Consent ---------------------------------------------------------------------------

FhirVersionQuery = Annotated[
    Literal["R5", "R4"], Query(description="FHIR version of the exported Consent resources")
]


def _export_time(at: dt.datetime | None) -> dt.datetime:
    return _when(at)


@endpoint(router, "GET", "/participants/{pseudonym}/fhir", Action.CONSENT_PARTICIPANT_READ)
def participant_fhir(
    pid: Pid,
    pseudonym: Pseudonym,
    ctx: Ctx,
    version: FhirVersionQuery = "R5",
    at: Annotated[IsoTime | None, Query(description="State at this time (ISO 8601)")] = None,
) -> JSONResponse:
    """The participant's consent as FHIR: a ``Bundle`` (collection) of one validated
    ``Consent`` per template their ledger names, as in force now (or at ``at``)."""
    assert ctx.project is not None
    p = service.get_participant(ctx.session, ctx.pid, pseudonym)
    when = _export_time(at)
    docs = interop.export_participant(
        ctx.project,
        p,
        service.event_rows_of(ctx.session, p),
        service.published_templates(ctx.session, ctx.pid),
        when,
        version,
        age_of_majority=_age(ctx),
    )
    return JSONResponse(interop.bundle(docs, when), media_type="application/fhir+json")


@endpoint(
    router,
    "GET",
    "/fhir",
    Action.CONSENT_PARTICIPANT_READ,
    response_class=Response,
)
def project_fhir(
    pid: Pid,
    ctx: Ctx,
    version: FhirVersionQuery = "R5",
    at: Annotated[IsoTime | None, Query(description="State at this time (ISO 8601)")] = None,
) -> Response:
    """Every participant's consents as FHIR NDJSON (one validated ``Consent`` per line, per
    participant and template), as in force now (or at ``at``)."""
    assert ctx.project is not None
    when = _export_time(at)
    templates = service.published_templates(ctx.session, ctx.pid)
    people = {
        p.id: p
        for p in ctx.session.execute(
            select(Participant).where(Participant.project_id == ctx.pid).order_by(Participant.id)
        ).scalars()
    }
    by_person: dict[int, list[ConsentEventRow]] = {}
    for row in ctx.session.execute(
        select(ConsentEventRow)
        .where(ConsentEventRow.project_id == ctx.pid)
        .order_by(ConsentEventRow.seq)
    ).scalars():
        by_person.setdefault(row.participant_id, []).append(row)
    lines = []
    for person_id, p in people.items():
        for doc in interop.export_participant(
            ctx.project,
            p,
            by_person.get(person_id, []),
            templates,
            when,
            version,
            age_of_majority=_age(ctx),
        ):
            lines.append(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))
    body = "".join(line + "\n" for line in lines)
    return Response(body, media_type="application/fhir+ndjson")


@endpoint(
    router,
    "POST",
    "/fhir",
    Action.CONSENT_PARTICIPANT_MANAGE,
    status_code=201,
    errors=_CONFLICT | _NOT_FOUND,
)
def import_fhir(
    pid: Pid,
    body: Annotated[FhirDocument, Body(description="A FHIR R5/R4 Consent, or a Bundle of them")],
    ctx: Ctx,
    participant: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9a-f]{32}$",
            description="Import for this participant (default: the documents' Patient/<pseudonym>)",
        ),
    ] = None,
) -> FhirImportOut:
    """Import FHIR Consent documents into the ledger (``channel: import``), all or nothing:
    422 ``fhir_invalid`` / ``fhir_unsupported`` / ``fhir_template_unknown`` name the element or
    template, 404 ``participant_not_found`` an unknown participant, 409 ``consent_*`` what the
    engine refuses."""
    done = interop.import_documents(
        ctx.session,
        ctx.trail(),
        ctx.pid,
        body.model_dump(mode="json"),
        participant=participant,
        age_of_majority=_age(ctx),
    )
    ctx.commit()
    return FhirImportOut(
        documents=len(done),
        events=[
            event_out(
                row,
                f"/v1/projects/{ctx.pid}/consent/participants/"
                f"{item.participant.pseudonym}/receipts/{row.seq}",
            )
            for item in done
            for row in item.rows
        ],
        participants=sorted({item.participant.pseudonym for item in done}),
    )
