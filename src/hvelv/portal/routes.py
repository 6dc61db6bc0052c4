"""The participant portal's pages: /portal/...

Every route is a :func:`hvelv.http.routing.page` with a declared action (the participant API's
own actions once signed in), so authorization is the same as for /v1/participant. Every POST
carries a CSRF token (:func:`form`). Consent changes go through ``hvelv.consent.service``
exactly as the participant API's do; nothing about consent is decided here.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from hvelv.consent import access, service
from hvelv.consent.model import ActorKind, EventKind, WithdrawalScope
from hvelv.consent.models import Participant, ReconsentRequest, TemplateVersion
from hvelv.errors import Conflict, Forbidden, HvelvError, NotFound, TooManyRequests, Unauthenticated
from hvelv.http.context import Ctx, RequestContext
from hvelv.http.routing import page
from hvelv.portal import cookies, i18n, views
from hvelv.portal.render import (
    LANGUAGE_COOKIE_SECONDS,
    PAGE_HEADERS,
    language_of,
    redirect,
    render,
)
from hvelv.projects.models import Project
from hvelv.security.actions import Action

router = APIRouter(prefix="/portal")

TemplateKey = Annotated[str, Path(pattern=r"^t[0-9]{1,9}$")]
ItemKey = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
Seq = Annotated[int, Path(ge=1, le=2**62)]
RequestId = Annotated[int, Path(ge=1, le=2**31 - 1)]

MAX_FORM = 16 * 1024
_CODE = re.compile(r"^[0-9]{6}$")


class CsrfFailed(Forbidden):
    def __init__(self) -> None:
        super().__init__("the form's CSRF token is missing or wrong", code="csrf")


async def form(request: Request, ctx: Ctx) -> dict[str, list[str]]:
    """The posted form (url-encoded), after checking its CSRF token against the browser's
    binding cookie and the session."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise CsrfFailed()
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    submitted = (fields.get("csrf") or [""])[0]
    session_id = ctx.principal.session_id if ctx.principal is not None else None
    if not cookies.csrf_valid(request, submitted, session_id):
        raise CsrfFailed()
    request.state.form = fields
    return fields


Form = Annotated[dict[str, list[str]], Depends(form)]
_CSRF = [Depends(form)]


def _one(fields: dict[str, list[str]], name: str) -> str:
    return (fields.get(name) or [""])[0]


# -- public: style sheet, language, sign-in -------------------------------------------------


@page(router, "GET", "/static/portal.css", Action.PORTAL_PUBLIC)
def style_sheet(ctx: Ctx) -> Response:
    css = resources.files("hvelv.portal").joinpath("static/portal.css").read_bytes()
    return Response(
        css,
        media_type="text/css",
        headers={"cache-control": "public, max-age=3600"},
    )


@page(router, "POST", "/language", Action.PORTAL_PUBLIC, dependencies=_CSRF)
def choose_language(request: Request, ctx: Ctx, fields: Form) -> Response:
    """Remember the language in a cookie and go back to the page the form was on."""
    language = i18n.normalise(_one(fields, "lang"))
    back = _one(fields, "next")
    if not back.startswith("/portal") or "//" in back or "\\" in back:
        back = "/portal/"
    response = redirect(back)
    cookies.set_cookie(request, response, cookies.LANGUAGE, language, LANGUAGE_COOKIE_SECONDS)
    return response


def _invalid(request: Request, *, burned: bool = False) -> Response:
    response = render(
        request,
        "message.html",
        status=401,
        heading="invalid.title",
        message="burned.text" if burned else "invalid.text",
    )
    cookies.clear_cookie(request, response, cookies.INVITATION)
    return response


def _sign_in_page(request: Request, ctx: RequestContext, token: str) -> Response:
    try:
        invitation = access.pending_invitation(ctx.session, token)
    except Unauthenticated:
        return _invalid(request)
    project = ctx.session.get(Project, invitation.project_id)
    assert project is not None
    response = render(request, "signin.html", project=project.name)
    cookies.set_cookie(
        request,
        response,
        cookies.INVITATION,
        token,
        ctx.platform.settings.participant_invitation_ttl_hours * 3600,
    )
    return response


@page(router, "GET", "/invitation", Action.PORTAL_PUBLIC)
def open_invitation(request: Request, ctx: Ctx, token: str = "") -> Response:
    """The link in the invitation e-mail: keeps the token in a cookie from here on."""
    return _sign_in_page(request, ctx, token or request.cookies.get(cookies.INVITATION, ""))


@page(router, "GET", "/sign-in", Action.PORTAL_PUBLIC)
def sign_in(request: Request, ctx: Ctx) -> Response:
    return _sign_in_page(request, ctx, request.cookies.get(cookies.INVITATION, ""))


def _verify_page(
    request: Request,
    ctx: RequestContext,
    *,
    error: str | None = None,
    status: int = 200,
    left: int | None = None,
    seconds: str | None = None,
) -> Response:
    return render(
        request,
        "verify.html",
        status=status,
        error=error,
        seconds=seconds,
        minutes=ctx.platform.settings.participant_code_ttl_seconds // 60,
        left=left,
    )


@page(router, "POST", "/sign-in/code", Action.PARTICIPANT_LOGIN, dependencies=_CSRF)
def send_code(request: Request, ctx: Ctx) -> Response:
    token = request.cookies.get(cookies.INVITATION, "")
    try:
        access.send_code(
            ctx.session, ctx.trail(), ctx.platform.settings, ctx.platform.keyring, token
        )
    except Unauthenticated:
        return _invalid(request)
    except TooManyRequests as exc:
        seconds = (exc.headers or {}).get("Retry-After", "30")
        return _verify_page(request, ctx, error="error.code_recently_sent", seconds=seconds)
    except Conflict:
        return render(
            request,
            "message.html",
            status=409,
            heading="error.title",
            message="error.no_contact_channel",
        )
    ctx.commit()
    return redirect("/portal/sign-in/verify")


@page(router, "GET", "/sign-in/verify", Action.PORTAL_PUBLIC)
def verify_form(request: Request, ctx: Ctx) -> Response:
    return _verify_page(request, ctx)


@page(router, "POST", "/sign-in/verify", Action.PARTICIPANT_LOGIN, dependencies=_CSRF)
def verify(request: Request, ctx: Ctx, fields: Form) -> Response:
    token = request.cookies.get(cookies.INVITATION, "")
    code = _one(fields, "code").strip().replace(" ", "")
    if not _CODE.match(code):
        return _verify_page(request, ctx, error="error.code_format", status=400)
    try:
        opened = access.verify_code(ctx.session, ctx.trail(), ctx.platform.settings, token, code)
    except access.CodeRejected:
        ctx.commit()  # count the attempt
        try:
            invitation = access.pending_invitation(ctx.session, token)
        except Unauthenticated:
            return _invalid(request, burned=True)
        left = access.MAX_CODE_ATTEMPTS - invitation.code_attempts
        return _verify_page(request, ctx, error="error.wrong_code", status=400, left=left)
    except Unauthenticated as exc:
        if exc.code == "code_expired":
            return _verify_page(request, ctx, error="error.code_expired", status=400)
        return _invalid(request)
    except HvelvError as exc:
        if exc.code == "code_not_requested":
            return _verify_page(request, ctx, error="error.code_not_requested", status=400)
        raise
    ctx.commit()
    response = redirect("/portal/")
    cookies.renew_session(request, response, opened.token)
    cookies.clear_cookie(request, response, cookies.INVITATION)
    return response


# -- signed in ------------------------------------------------------------------------------


def _me(ctx: RequestContext) -> Participant:
    if ctx.principal is None:  # unreachable: the route requires a participant session
        raise Forbidden("participants only", code="participants_only")
    participant = ctx.session.get(Participant, int(ctx.principal.id))
    if participant is None:
        raise NotFound("the participant is gone", code="participant_not_found")
    return participant


def _proxy(ctx: RequestContext) -> bool:
    return ctx.principal is not None and ctx.principal.acting_for is not None


def _acting(ctx: RequestContext, participant: Participant) -> service.Acting:
    assert ctx.principal is not None
    if ctx.principal.acting_for is None:
        return service.PARTICIPANT
    return service.Acting(
        ActorKind.PROXY, service.get_proxy(ctx.session, participant, ctx.principal.acting_for)
    )


def _lang(request: Request) -> str:
    return language_of(request)


def _age(ctx: RequestContext) -> int:
    return ctx.platform.settings.consent_age_of_majority


def _token(request: Request) -> str | None:
    return cookies.session_token(request)


def _page(request: Request, ctx: RequestContext, name: str, **context: Any) -> Response:
    """A signed-in page: renews the idle timeout, binds the forms to the session."""
    return render(
        request,
        name,
        session_id=ctx.principal.session_id if ctx.principal else None,
        token=_token(request),
        signed_in=True,
        proxy=_proxy(ctx),
        **context,
    )


@page(router, "GET", "/", Action.PARTICIPANT_READ)
def overview(request: Request, ctx: Ctx) -> Response:
    participant = _me(ctx)
    templates, withdrawal = views.consents(ctx.session, participant, _lang(request), _age(ctx))
    open_requests = []
    for req in service.open_requests(ctx.session, participant):
        if req.answered_at is None:
            row = ctx.session.get(TemplateVersion, req.template_id)
            assert row is not None
            open_requests.append({"id": req.id, "title": row.title, "reason": req.reason})
    age = _age(ctx)
    handed_over = not _proxy(ctx) and any(r["reason"] == "coming_of_age" for r in open_requests)
    return _page(
        request,
        ctx,
        "overview.html",
        templates=templates,
        withdrawal=withdrawal,
        requests=open_requests,
        handed_over=handed_over,
        age=age,
        birth_year=participant.birth_date.year,
        majority=views.majority_date(participant, age).isoformat(),
    )


@page(router, "GET", "/studies/{key}", Action.PARTICIPANT_READ)
def study(key: TemplateKey, request: Request, ctx: Ctx) -> Response:
    participant = _me(ctx)
    templates, withdrawal = views.consents(ctx.session, participant, _lang(request), _age(ctx))
    found = next((t for t in templates if t.key == key), None)
    if found is None:
        raise NotFound("no such study", code="template_not_found")
    return _page(request, ctx, "study.html", template=found, withdrawal=withdrawal)


def _record(
    ctx: RequestContext,
    participant: Participant,
    kind: EventKind,
    *,
    template: TemplateVersion | None = None,
    language: str | None = None,
    choices: dict[str, bool] | None = None,
    scope: WithdrawalScope | None = None,
) -> int:
    acting = _acting(ctx, participant)
    if kind is EventKind.GIVEN and acting.proxy is not None:
        kind = EventKind.PROXY_GIVEN
    assert ctx.principal is not None
    assert ctx.principal.session_id is not None
    row = service.record_event(
        ctx.session,
        ctx.trail(),
        participant,
        kind=kind,
        acting=acting,
        channel="web",
        assurance=access.session_assurance(ctx.session, ctx.principal.session_id),
        template=template,
        language=language,
        choices=choices,
        scope=scope,
        age_of_majority=_age(ctx),
    )
    ctx.commit()
    return row.seq


def _text_language(row: TemplateVersion, language: str) -> str:
    if language in row.texts:
        return language
    return "nb" if "nb" in row.texts else sorted(row.texts)[0]


def _choices(row: TemplateVersion, fields: dict[str, list[str]]) -> dict[str, bool]:
    ticked = set(fields.get("item") or [])
    return {i["item_id"]: i["item_id"] in ticked for i in row.items if i["effect"] == "permit"}


def _latest(ctx: RequestContext, participant: Participant, key: str) -> TemplateVersion:
    rows = [
        r
        for r in service.versions_of(ctx.session, participant.project_id, key)
        if r.status == "published"
    ]
    if not rows:
        raise NotFound("no such study", code="template_not_found")
    return rows[-1]


@page(router, "POST", "/studies/{key}/give", Action.PARTICIPANT_CONSENT, dependencies=_CSRF)
def give(key: TemplateKey, request: Request, ctx: Ctx, fields: Form) -> Response:
    participant = _me(ctx)
    row = _latest(ctx, participant, key)
    seq = _record(
        ctx,
        participant,
        EventKind.GIVEN,
        template=row,
        language=_text_language(row, _lang(request)),
        choices=_choices(row, fields),
    )
    return redirect(f"/portal/done/{seq}")


@page(
    router,
    "POST",
    "/studies/{key}/items/{item}",
    Action.PARTICIPANT_CONSENT,
    dependencies=_CSRF,
)
def choose_item(
    key: TemplateKey, item: ItemKey, request: Request, ctx: Ctx, fields: Form
) -> Response:
    """Grant or withdraw one item: one button either way."""
    participant = _me(ctx)
    view = service.current_state(ctx.session, participant, age_of_majority=_age(ctx))
    current = next((c for c in view.consents if c["template_id"] == key), None)
    if current is None:
        raise Conflict("there is no consent to change", code="consent_no_consent_to_change")
    row = service.get_version_by_id(ctx.session, participant.project_id, current["version_id"])
    seq = _record(
        ctx,
        participant,
        EventKind.CHANGED,
        template=row,
        choices={item: _one(fields, "granted") == "yes"},
    )
    return redirect(f"/portal/done/{seq}")


@page(router, "GET", "/withdraw", Action.PARTICIPANT_READ)
def withdraw_form(request: Request, ctx: Ctx) -> Response:
    _me(ctx)
    return _page(
        request, ctx, "withdraw.html", scopes=[s.value for s in WithdrawalScope], error=None
    )


@page(router, "POST", "/withdraw", Action.PARTICIPANT_CONSENT, dependencies=_CSRF)
def withdraw(request: Request, ctx: Ctx, fields: Form) -> Response:
    participant = _me(ctx)
    scope = _one(fields, "scope")
    if scope not in {s.value for s in WithdrawalScope}:
        response = _page(
            request,
            ctx,
            "withdraw.html",
            scopes=[s.value for s in WithdrawalScope],
            error="withdraw.choose",
        )
        response.status_code = 400
        return response
    seq = _record(ctx, participant, EventKind.WITHDRAWN, scope=WithdrawalScope(scope))
    return redirect(f"/portal/done/{seq}")


@page(router, "GET", "/done/{seq}", Action.PARTICIPANT_READ)
def done(seq: Seq, request: Request, ctx: Ctx) -> Response:
    participant = _me(ctx)
    row = views.event_row(ctx.session, participant, seq)
    if row is None:
        raise NotFound("no such change", code="event_not_found")
    title = None
    if row.template_version_id:
        title = service.get_version_by_id(
            ctx.session, participant.project_id, row.template_version_id
        ).title
    return _page(request, ctx, "done.html", event=row, title=title)


@page(router, "GET", "/receipts/{seq}", Action.PARTICIPANT_READ)
def receipt(seq: Seq, request: Request, ctx: Ctx) -> Response:
    """The signed receipt of one change, as a file to keep."""
    participant = _me(ctx)
    row = views.event_row(ctx.session, participant, seq)
    if row is None:
        raise NotFound("no such change", code="event_not_found")
    document = views.receipt(ctx.session, ctx.platform, participant, row, _lang(request))
    return Response(
        json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True),
        media_type="application/json",
        headers={
            **PAGE_HEADERS,
            "content-disposition": f'attachment; filename="consent-receipt-{seq}.json"',
        },
    )


@page(router, "GET", "/history", Action.PARTICIPANT_READ)
def history(request: Request, ctx: Ctx) -> Response:
    participant = _me(ctx)
    events = views.timeline(ctx.session, participant, _lang(request))
    return _page(request, ctx, "history.html", events=events)


@page(router, "GET", "/uses", Action.PARTICIPANT_READ)
def uses(request: Request, ctx: Ctx) -> Response:
    participant = _me(ctx)
    found = views.uses(ctx.session, participant, _lang(request), _age(ctx))
    return _page(request, ctx, "uses.html", uses=found)


def _request(ctx: RequestContext, participant: Participant, request_id: int) -> ReconsentRequest:
    found = ctx.session.get(ReconsentRequest, request_id)
    if found is None or found.participant_id != participant.id:
        raise NotFound("no such request", code="request_not_found")
    return found


@page(router, "GET", "/requests/{request_id}", Action.PARTICIPANT_READ)
def request_page(request_id: RequestId, request: Request, ctx: Ctx) -> Response:
    participant = _me(ctx)
    found = _request(ctx, participant, request_id)
    row = ctx.session.get(TemplateVersion, found.template_id)
    assert row is not None
    template = views.template_view(
        ctx.session, row, _lang(request), granted=set(), consented=False, by_proxy=False
    )
    return _page(request, ctx, "request.html", req=found, template=template)


@page(router, "POST", "/requests/{request_id}", Action.PARTICIPANT_CONSENT, dependencies=_CSRF)
def answer(request_id: RequestId, request: Request, ctx: Ctx, fields: Form) -> Response:
    participant = _me(ctx)
    found = _request(ctx, participant, request_id)
    if found.answered_at is not None:
        raise Conflict("the request is already answered", code="request_answered")
    row = ctx.session.get(TemplateVersion, found.template_id)
    assert row is not None
    if _one(fields, "answer") == "decline":
        service.decline_request(ctx.session, ctx.trail(), participant, request_id)
        ctx.commit()
        return _page(request, ctx, "message.html", heading="done.title", message="done.declined")
    seq = _record(
        ctx,
        participant,
        EventKind.GIVEN,
        template=row,
        language=_text_language(row, _lang(request)),
        choices=_choices(row, fields),
    )
    return redirect(f"/portal/done/{seq}")


@page(router, "POST", "/sign-out", Action.PARTICIPANT_LOGOUT, dependencies=_CSRF)
def sign_out(request: Request, ctx: Ctx) -> Response:
    participant = _me(ctx)
    access.end_session(ctx.session, ctx.session_id)
    ctx.trail().record("participant.logout", target=f"participant:{participant.pseudonym}")
    ctx.commit()
    response = render(request, "message.html", heading="ended.title", message="ended.signed_out")
    cookies.clear_cookie(request, response, cookies.SESSION)
    return response
