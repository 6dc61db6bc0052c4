"""Routes for participants: /v1/participant/...

Sign in from an invitation (link token, then a one-time code from the outbox), then see current
and past consents, grant or withdraw each item (one call either way, GDPR Art. 7(3)), withdraw
entirely, answer re-consent requests and see which uses relied on the consent. A guardian signed
in through a proxy invitation acts as the proxy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hvelv.audit.trail import AuditTrail
from hvelv.consent import access, decisions, issued, service
from hvelv.consent.api import event_out, uses_out
from hvelv.consent.model import ActorKind, EventKind, WithdrawalScope
from hvelv.consent.models import (
    Participant,
    ParticipantSession,
    ReconsentRequest,
    TemplateVersion,
)
from hvelv.consent.schemas import (
    AnswerIn,
    CodeSentOut,
    EventOut,
    GiveIn,
    ItemChoice,
    LoginStart,
    LoginVerify,
    MeOut,
    MyConsent,
    MyConsents,
    MyItem,
    ParticipantTokenOut,
    RequestOut,
    UseOut,
    WithdrawalOut,
    WithdrawIn,
)
from hvelv.errors import Conflict, Forbidden, NotFound
from hvelv.http.context import Ctx, RequestContext
from hvelv.http.routing import endpoint
from hvelv.projects.models import Project
from hvelv.security.actions import Action

router = APIRouter(prefix="/v1/participant", tags=["participant"])

TemplateKey = Annotated[str, Path(pattern=r"^t[0-9]{1,9}$")]
ItemKey = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
RequestId = Annotated[int, Path(ge=1, le=2**31 - 1)]
EventSeq = Annotated[int, Path(ge=1, le=2**62, description="The event's ledger position (seq)")]

_LOGIN_ERRORS = {401: "Unknown, used or expired invitation, or a wrong code"}
_CONFLICT = {409: "Conflicts with the current consent", 404: "No such object"}
_NOT_FOUND = {404: "No such event"}


def _me(ctx: RequestContext) -> Participant:
    if ctx.principal is None:  # unreachable: the route requires a participant session
        raise Forbidden("participants only", code="participants_only")
    participant = ctx.session.get(Participant, int(ctx.principal.id))
    if participant is None:
        raise NotFound("the participant is gone", code="participant_not_found")
    return participant


def _assurance(ctx: RequestContext) -> str:
    return access.session_assurance(ctx.session, ctx.session_id)


def _age(ctx: RequestContext) -> int:
    return ctx.platform.settings.consent_age_of_majority


@endpoint(
    router,
    "POST",
    "/login",
    Action.PARTICIPANT_LOGIN,
    status_code=202,
    errors=_LOGIN_ERRORS | {409: "No e-mail address is known"},
)
def start_login(body: LoginStart, ctx: Ctx) -> CodeSentOut:
    """Step 1: present the invitation token; a one-time code is sent by e-mail."""
    sent = access.send_code(
        ctx.session, ctx.trail(), ctx.platform.settings, ctx.platform.keyring, body.invitation
    )
    ctx.commit()
    return CodeSentOut(sent_to=sent.sent_to, expires_at=sent.expires_at)


@endpoint(router, "POST", "/login/verify", Action.PARTICIPANT_LOGIN, errors=_LOGIN_ERRORS)
def verify_login(body: LoginVerify, ctx: Ctx) -> ParticipantTokenOut:
    """Step 2: the invitation token and the code give a participant session (single use)."""
    try:
        opened = access.verify_code(
            ctx.session, ctx.trail(), ctx.platform.settings, body.invitation, body.code
        )
    except access.CodeRejected as rejected:
        ctx.commit()  # count the attempt
        raise rejected.error from None
    ctx.commit()
    return ParticipantTokenOut(access_token=opened.token, expires_at=opened.expires_at)


@endpoint(router, "POST", "/logout", Action.PARTICIPANT_LOGOUT, status_code=204)
def logout(ctx: Ctx) -> None:
    """End the participant session at once."""
    access.end_session(ctx.session, ctx.session_id)
    ctx.trail().record("participant.logout", target=f"participant:{_me(ctx).pseudonym}")
    ctx.commit()


@endpoint(router, "GET", "/me", Action.PARTICIPANT_READ)
def me(ctx: Ctx) -> MeOut:
    """Who is signed in, for which project, in which language."""
    participant = _me(ctx)
    project = ctx.session.get(Project, participant.project_id)
    assert project is not None
    assert ctx.principal is not None
    return MeOut(
        project=project.pid,
        project_name=project.name,
        language=participant.language,
        acting_as="proxy" if ctx.principal.acting_for else "participant",
        birth_year=participant.birth_date.year,
    )


def _text(row: TemplateVersion, language: str) -> tuple[str, str]:
    lang = language if language in row.texts else sorted(row.texts)[0]
    return lang, row.texts[lang]


def _consent_view(
    row: TemplateVersion, language: str, granted: set[str], consented: bool, by_proxy: bool
) -> MyConsent:
    lang, text = _text(row, language)
    return MyConsent(
        template_id=row.template_key,
        version_id=row.version_id,
        title=row.title,
        language=lang,
        text=text,
        text_hash=row.text_hashes[lang],
        consented=consented,
        by_proxy=by_proxy,
        items=[
            MyItem(
                item_id=item["item_id"],
                effect=item["effect"],
                title=(item.get("titles") or {}).get(lang),
                purpose=item["purpose"],
                actions=item["actions"],
                data_classes=item["data_classes"],
                period=item.get("period"),
                data_period=item.get("data_period"),
                granted=item["item_id"] in granted,
            )
            for item in row.items
        ],
    )


@endpoint(router, "GET", "/consents", Action.PARTICIPANT_READ)
def my_consents(ctx: Ctx) -> MyConsents:
    """Current consents (and the latest version of every template not consented to)."""
    participant = _me(ctx)
    choices, view = service.participant_templates(
        ctx.session, participant, age_of_majority=_age(ctx)
    )
    consents = [
        _consent_view(c.row, participant.language, set(c.granted), c.consented, c.by_proxy)
        for c in choices
    ]
    withdrawal = WithdrawalOut(**view.withdrawal) if view.withdrawal else None
    return MyConsents(
        consents=consents, withdrawal=withdrawal, ledger_position=view.ledger_position
    )


@endpoint(router, "GET", "/history", Action.PARTICIPANT_READ)
def history(ctx: Ctx) -> list[EventOut]:
    """Every consent event, oldest first (past consents included)."""
    return [
        event_out(r, f"/v1/participant/receipts/{r.seq}")
        for r in service.event_rows_of(ctx.session, _me(ctx))
    ]


@endpoint(router, "GET", "/receipts/{event_id}", Action.PARTICIPANT_READ, errors=_NOT_FOUND)
def receipt(event_id: EventSeq, ctx: Ctx) -> dict[str, Any]:
    """The signed receipt of one of my consent events (JSON, Ed25519; check it offline with
    ``hvelv consent verify-receipt`` and the key from ``hvelv keys public``)."""
    participant = _me(ctx)
    row = issued.receipt_row(ctx.session, participant, event_id)
    return issued.issue_receipt(
        ctx.session, ctx.platform.settings, ctx.platform.keyring, participant, row
    )


async def _signed_in(ctx: RequestContext) -> tuple[Participant, str]:
    """The participant and the session's identity assurance, from the objects authentication
    kept (no I/O on the event loop), else looked up in the threadpool."""
    assert ctx.principal is not None
    participant = next(
        (o for o in ctx.loaded if isinstance(o, Participant) and o.id == int(ctx.principal.id)),
        None,
    )
    opened = next(
        (
            o
            for o in ctx.loaded
            if isinstance(o, ParticipantSession) and o.id == ctx.principal.session_id
        ),
        None,
    )
    if participant is None or opened is None:
        return await run_in_threadpool(lambda: (_me(ctx), _assurance(ctx)))
    return participant, opened.assurance


def _change(
    ctx: RequestContext,
    participant: Participant,
    assurance: str,
    kind: EventKind,
    *,
    version_id: str | None = None,
    template_key: str | None = None,
    language: str | None = None,
    choices: dict[str, bool] | None = None,
    scope: WithdrawalScope | None = None,
) -> Callable[[Session, AuditTrail], EventOut]:
    """The write job of one consent event, for :meth:`RequestContext.write` (group commit); the
    template is ``version_id``, or with ``template_key`` the version currently consented to.

    The participant's state comes from the consent cache, refreshed inside the batch's write
    transaction: it holds every committed row and those of the batch's earlier jobs, so no
    other writer can append between the check and the append."""
    assert ctx.principal is not None
    acting_for = ctx.principal.acting_for
    age = _age(ctx)
    cache = ctx.platform.consent_cache
    pid = participant.project_id

    def work(session: Session, trail: AuditTrail) -> EventOut:
        at = dt.datetime.now(dt.UTC)
        state, position, templates = cache.state_of(session, pid, age, participant.pseudonym, at)
        wanted = version_id
        if template_key is not None:
            current = next((c for c in state.consents if c.template_id == template_key), None)
            if current is None:
                raise Conflict(
                    "there is no consent to this template to change",
                    code="consent_no_consent_to_change",
                )
            wanted = current.version_id
        template = None
        if wanted is not None:
            template = cache.published_row(pid, wanted) or service.get_version_by_id(
                session, pid, wanted
            )
        acting = service.PARTICIPANT
        if acting_for is not None:
            acting = service.Acting(
                ActorKind.PROXY, service.get_proxy(session, participant, acting_for)
            )
        event_kind = kind
        if kind is EventKind.GIVEN and acting.proxy is not None:
            event_kind = EventKind.PROXY_GIVEN
        row = service.record_event(
            session,
            trail,
            participant,
            kind=event_kind,
            acting=acting,
            channel="web",
            assurance=assurance,
            template=template,
            language=language,
            choices=choices,
            scope=scope,
            age_of_majority=age,
            at=at,
            cached=service.Cached(state, position, templates),
        )
        cache.appended(session, pid, [row])
        return event_out(row, f"/v1/participant/receipts/{row.seq}")

    return work


@endpoint(
    router, "POST", "/consents", Action.PARTICIPANT_CONSENT, status_code=201, errors=_CONFLICT
)
async def give(body: GiveIn, ctx: Ctx) -> EventOut:
    """Consent to a template version, with a yes/no per item (unanswered items are no)."""
    participant, assurance = await _signed_in(ctx)
    return await ctx.awrite(
        _change(
            ctx,
            participant,
            assurance,
            EventKind.GIVEN,
            version_id=body.template_version,
            language=body.language,
            choices=body.choices,
        )
    )


@endpoint(
    router,
    "POST",
    "/consents/{template_id}/items/{item_id}",
    Action.PARTICIPANT_CONSENT,
    errors=_CONFLICT,
)
async def choose_item(
    template_id: TemplateKey, item_id: ItemKey, body: ItemChoice, ctx: Ctx
) -> EventOut:
    """Grant (``true``) or withdraw (``false``) one item: the same single step either way."""
    participant, assurance = await _signed_in(ctx)
    return await ctx.awrite(
        _change(
            ctx,
            participant,
            assurance,
            EventKind.CHANGED,
            template_key=template_id,
            choices={item_id: body.granted},
        )
    )


@endpoint(router, "POST", "/withdraw", Action.PARTICIPANT_CONSENT, status_code=201)
async def withdraw(body: WithdrawIn, ctx: Ctx) -> EventOut:
    """Withdraw all consent: stop use, or also delete data / destroy samples (30-day tasks)."""
    participant, assurance = await _signed_in(ctx)
    return await ctx.awrite(
        _change(ctx, participant, assurance, EventKind.WITHDRAWN, scope=WithdrawalScope(body.scope))
    )


def _request_out(request: ReconsentRequest, row: TemplateVersion) -> RequestOut:
    return RequestOut(
        id=request.id,
        template_version=row.version_id,
        title=row.title,
        reason=request.reason,
        created_at=request.created_at,
        answered_at=request.answered_at,
        answer=request.answer,
    )


@endpoint(router, "GET", "/requests", Action.PARTICIPANT_READ)
def requests(ctx: Ctx) -> list[RequestOut]:
    """Re-consent requests, open and answered (no answer counts as no)."""
    out = []
    for request in service.open_requests(ctx.session, _me(ctx)):
        row = ctx.session.get(TemplateVersion, request.template_id)
        assert row is not None
        out.append(_request_out(request, row))
    return out


@endpoint(router, "POST", "/requests/{request_id}", Action.PARTICIPANT_CONSENT, errors=_CONFLICT)
def answer(request_id: RequestId, body: AnswerIn, ctx: Ctx) -> RequestOut:
    """Answer a re-consent request: give consent (with item choices) or decline."""
    participant = _me(ctx)
    request = ctx.session.get(ReconsentRequest, request_id)
    if request is None or request.participant_id != participant.id:
        raise NotFound(f"no request {request_id}", code="request_not_found")
    row = ctx.session.get(TemplateVersion, request.template_id)
    assert row is not None
    if request.answered_at is not None:
        raise Conflict("the request is already answered", code="request_answered")
    if body.answer == "declined":
        service.decline_request(ctx.session, ctx.trail(), participant, request_id)
        ctx.commit()
    else:
        ctx.write(
            _change(
                ctx,
                participant,
                _assurance(ctx),
                EventKind.GIVEN,
                version_id=row.version_id,
                language=body.language,
                choices=body.choices,
            )
        )
    ctx.session.refresh(request)
    return _request_out(request, row)


@endpoint(router, "GET", "/uses", Action.PARTICIPANT_READ)
def uses(ctx: Ctx) -> list[UseOut]:
    """Which uses (decisions and snapshots that released data) relied on this consent."""
    participant = _me(ctx)
    return uses_out(decisions.relied_on(ctx.session, participant, age_of_majority=_age(ctx)))
