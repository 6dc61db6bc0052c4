"""Per-request context: authenticate, authorize the route's declared action, audit refusals.

``context`` is attached to every route by :func:`hvelv.http.routing.endpoint`; it reads
the action from the matched route, so a handler cannot forget to authorize.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hvelv.audit.ledger import AuditRecord, Outcome
from hvelv.audit.trail import AuditTrail
from hvelv.consent import access as participant_access
from hvelv.consent.models import ParticipantSession
from hvelv.db.engine import WRITE_OPTION
from hvelv.errors import Forbidden, HvelvError, NotFound, Unauthenticated
from hvelv.files.models import UploadLink
from hvelv.identity.models import AuthSession, User
from hvelv.platform import Platform
from hvelv.projects import service as projects
from hvelv.projects.models import ApiKey, Project
from hvelv.security.actions import ACTIONS, Action, Role, Scope
from hvelv.security.auth_cache import AuthCache, Login, ParticipantLogin, ProjectView
from hvelv.security.authorize import Principal, PrincipalKind, authorize
from hvelv.security.tokens import (
    API_KEY_PREFIX,
    UPLOAD_LINK_PREFIX,
    InvalidToken,
    digest,
    parse_api_key,
    same_digest,
)

T = TypeVar("T")

ACTION_KEY = "x-hvelv-action"
# a route may take its credential from somewhere else than the Authorization header
CREDENTIAL_KEY = "x-hvelv-credential"
PAGE_COOKIE = "portal-cookie"
_ACTION_VALUES = frozenset(a.value for a in Action)


@dataclass
class RequestContext:
    platform: Platform
    action: Action
    request_id: str
    client: str | None
    principal: Principal | None = None
    roles: frozenset[Role] = frozenset()
    loaded: list[Any] = field(default_factory=list)  # objects the handler will look up again
    _session: Session | None = field(default=None, repr=False)
    # the request's project: its row, loaded by authentication or at first use, and the
    # detached view authorization read (from the cache, when the row was not needed)
    project_pid: str | None = None
    _project: Project | None = field(default=None, repr=False)
    _view: ProjectView | None = field(default=None, repr=False)
    login: Login | None = field(default=None, repr=False)  # a user's login, as verified

    @property
    def project(self) -> Project | None:
        """The project's row in this request's session (a query at first use when
        authorization came from the cache: not on the event loop)."""
        if self._project is None and self.project_pid is not None:
            project = self.session.get(Project, self.project_pid)
            if project is None:
                raise NotFound(f"no project {self.project_pid}", code="project_not_found")
            self._project = project
        return self._project

    @project.setter
    def project(self, project: Project | None) -> None:
        self._project = project
        self._view = None
        self.project_pid = project.pid if project is not None else None

    @property
    def project_view(self) -> ProjectView:
        """The project as authorization saw it, without I/O (safe on the event loop)."""
        if self._view is None:
            if self._project is None:
                raise NotFound("no project in this request")
            self._view = projects.view(self._project)
        return self._view

    @property
    def session(self) -> Session:
        if self._session is None:
            db = self.platform.db
            self._session = db.writer() if ACTIONS[self.action].writes else db.reader()
        return self._session

    @property
    def actor(self) -> str:
        return self.principal.actor if self.principal else "anonymous"

    @property
    def user_id(self) -> int:
        if self.principal is None or self.principal.kind is not PrincipalKind.USER:
            raise Forbidden("only users can do this", code="users_only")
        return int(self.principal.id)

    @property
    def session_id(self) -> str:
        if self.principal is None or self.principal.session_id is None:
            raise Forbidden("only logged-in users can do this", code="users_only")
        return self.principal.session_id

    @property
    def pid(self) -> str:
        if self.project_pid is None:
            raise NotFound("no project in this request")
        return self.project_pid

    def trail(self) -> AuditTrail:
        return AuditTrail(
            self.session, self.platform.ledger, self.actor, self.request_id, self.client
        )

    def commit(self) -> None:
        self.session.commit()

    def write(self, work: Callable[[Session, AuditTrail], T]) -> T:
        """Run a change through the process's group-commit writer (:mod:`hvelv.db.batch`).

        ``work`` gets the batch's session and an audit trail on it, runs in its own savepoint
        on the writer thread, and this returns its result once the batch has committed (or
        raises its error; a failed commit fails it too). Everything the change reads belongs
        in ``work``; objects loaded by authentication may be passed in (read their attributes
        only). If the request's own session already holds a transaction (a write API key's
        ``apikey.use`` event), ``work`` runs in that one instead, which is then committed."""
        if self._session is not None and self._session.in_transaction():
            result = work(self._session, self.trail())
            self.commit()
            return result
        return self.platform.batch.run(self._job(work))

    async def awrite(self, work: Callable[[Session, AuditTrail], T]) -> T:
        """:meth:`write` for async handlers: waits for the batch without holding a thread.
        The handler must not do I/O on the event loop before (objects kept by authentication
        are in ``loaded``)."""
        if self._session is not None and self._session.in_transaction():
            return await run_in_threadpool(self.write, work)
        return await asyncio.wrap_future(self.platform.batch.submit(self._job(work)))

    def _job(self, work: Callable[[Session, AuditTrail], T]) -> Callable[[Session], T]:
        def job(session: Session) -> T:
            trail = AuditTrail(
                session, self.platform.ledger, self.actor, self.request_id, self.client
            )
            return work(session, trail)

        return job

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    @property
    def idle(self) -> bool:
        """Closing needs no I/O: the session holds no connection (no transaction open)."""
        return self._session is None or not self._session.in_transaction()


def _client(request: Request) -> str | None:
    if request.app.state.platform.settings.trust_proxy_headers:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64]
    return request.client.host if request.client else None


def _route_action(request: Request) -> Action:
    route = request.scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    value = extra.get(ACTION_KEY)
    if value is None:  # unreachable: routes without an action are refused at start-up
        raise Forbidden("route declares no action", code="no_action")
    return Action(value)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        route = request.scope.get("route")
        extra = getattr(route, "openapi_extra", None) or {}
        if extra.get(CREDENTIAL_KEY) == PAGE_COOKIE:
            from hvelv.portal.cookies import session_token

            return session_token(request)
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed Authorization header", code="invalid_token")
    return token.strip()


def _authenticate(ctx: RequestContext, token: str) -> Principal:
    now = datetime.now(UTC)
    session = ctx.session
    if token.startswith(UPLOAD_LINK_PREFIX):
        return _upload_link(session, token, now)
    if token.startswith(participant_access.SESSION_PREFIX):
        return participant_access.authenticate(session, token, ctx.loaded)
    if token.startswith(API_KEY_PREFIX):
        try:
            key_id, secret = parse_api_key(token)
        except InvalidToken:
            raise Unauthenticated("invalid API key", code="invalid_token") from None
        key = session.get(ApiKey, key_id)
        if (
            key is None
            or not same_digest(key.secret_digest, digest(secret))
            or key.revoked_at is not None
            or key.expires_at <= now
        ):
            raise Unauthenticated("invalid, expired or revoked API key", code="invalid_token")
        return Principal(
            kind=PrincipalKind.API_KEY,
            id=key.key_id,
            name=key.key_id,
            scope_project=key.project_id,
            api_key_actions=frozenset(Action(a) for a in key.actions if a in _ACTION_VALUES),
        )
    try:
        claims = ctx.platform.signer.verify_access(token)
    except InvalidToken:
        raise Unauthenticated("invalid or expired access token", code="invalid_token") from None
    row = session.execute(
        select(
            User.username,
            User.is_operator,
            User.status,
            AuthSession.revoked_at,
            AuthSession.expires_at,
        )
        .join(AuthSession, AuthSession.user_id == User.id)
        .where(AuthSession.id == claims.session_id, User.id == claims.user_id)
    ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthenticated("the session has ended; log in again", code="session_ended")
    if row.status != "active":
        raise Unauthenticated("the account is disabled", code="account_disabled")
    principal = Principal(
        kind=PrincipalKind.USER,
        id=claims.user_id,
        name=row.username,
        is_operator=row.is_operator,
        scope_project=claims.scope_project,
        session_id=claims.session_id,
    )
    ctx.login = Login(principal, claims.expires_at, row.expires_at.timestamp())
    return principal


def _upload_link(session: Session, token: str, now: datetime) -> Principal:
    try:
        link_id, secret = parse_api_key(token, UPLOAD_LINK_PREFIX)
    except InvalidToken:
        raise Unauthenticated("invalid upload link", code="invalid_token") from None
    link = session.get(UploadLink, link_id)
    if link is None or not same_digest(link.secret_digest, digest(secret)):
        raise Unauthenticated("invalid upload link", code="invalid_token")
    if link.revoked_at is not None or link.expires_at <= now:
        raise Unauthenticated("the upload link has expired or was revoked", code="link_expired")
    return Principal(
        kind=PrincipalKind.UPLOAD_LINK,
        id=link.id,
        name=link.id,
        scope_project=link.project_id,
    )


def _refuse(ctx: RequestContext, error: HvelvError, target: str | None) -> HvelvError:
    ctx.close()
    ctx.platform.audit_now(
        AuditRecord(
            action=ctx.action.value,
            actor=ctx.actor,
            outcome=Outcome.DENIED,
            project_id=ctx.project_pid,
            target=target,
            request_id=ctx.request_id,
            client=ctx.client,
            details={"reason": error.code},
        )
    )
    return error


async def context(request: Request) -> AsyncIterator[RequestContext]:
    """The request's context, authenticated and authorized for the route's action.

    An async dependency, so it costs one threadpool call (authentication and authorization,
    which query the database) instead of two: closing the request's session at the end is
    done on the event loop when the session holds no connection (after a commit, or when no
    query ran), which needs no I/O, and in the threadpool otherwise."""
    platform: Platform = request.app.state.platform
    action = _route_action(request)
    ctx = RequestContext(
        platform=platform,
        action=action,
        request_id=getattr(request.state, "request_id", "-"),
        client=_client(request),
    )
    info = ACTIONS[action]
    try:
        if info.scope is not Scope.PUBLIC and not _establish_cached(ctx, request):
            await run_in_threadpool(_establish, ctx, request)
        yield ctx
    finally:
        if ctx.idle:
            ctx.close()
        else:
            await run_in_threadpool(ctx.close)


def _keep_participant(ctx: RequestContext, token: str, generation: int) -> None:
    """Cache a participant session with the rows authentication read."""
    opened = [o for o in ctx.loaded if isinstance(o, ParticipantSession)]
    if len(opened) != 1 or ctx.principal is None:
        return  # not what authentication read: not kept
    login = ParticipantLogin(ctx.principal, opened[0].expires_at.timestamp(), tuple(ctx.loaded))
    ctx.platform.auth.put_participant(token, login, generation)


def _establish_cached(ctx: RequestContext, request: Request) -> bool:
    """Authorize from :mod:`hvelv.security.auth_cache`, without I/O: a user's read, or any
    request of a participant session. False when anything is missing there or the answer
    would be a refusal (the full path then decides, and audits a refusal)."""
    cache = ctx.platform.auth
    if not cache.enabled:
        return False
    header = request.headers.get("authorization")
    if header is None or header[:7].lower() != "bearer ":
        return False
    token = header[7:].strip()
    if token.startswith(participant_access.SESSION_PREFIX):
        return _participant_cached(ctx, cache, token)
    login = cache.login(token)
    if login is None or ACTIONS[ctx.action].writes:
        return False
    now = time.time()
    if login.token_expires_at <= now or login.session_expires_at <= now:
        return False
    principal = login.principal
    pid = request.path_params.get("pid")
    view: ProjectView | None = None
    roles: frozenset[Role] = frozenset()
    if pid is not None:
        view = cache.project(pid) if isinstance(pid, str) else None
        held = cache.roles(pid, int(principal.id)) if view is not None else None
        if view is None or held is None:
            return False
        roles = held
    facts = view.facts if view is not None else None
    if not authorize(principal, ctx.action, facts, roles, datetime.now(UTC).date()).allowed:
        return False
    ctx.principal = principal
    ctx.roles = roles
    ctx.project_pid = pid
    ctx._view = view
    return True


def _participant_cached(ctx: RequestContext, cache: AuthCache, token: str) -> bool:
    """A participant session from the cache (their routes have no project in the path; the
    consent routes write through the group-commit writer, which checks the state and any
    proxy again inside its transaction)."""
    login = cache.participant(token)
    if login is None or login.session_expires_at <= time.time():
        return False
    today = datetime.now(UTC).date()
    if not authorize(login.principal, ctx.action, None, frozenset(), today).allowed:
        return False
    ctx.principal = login.principal
    ctx.loaded.extend(login.kept)
    return True


def _establish(ctx: RequestContext, request: Request) -> None:
    pid = request.path_params.get("pid")
    target = f"project:{pid}" if pid else None
    writes = ACTIONS[ctx.action].writes
    cache = ctx.platform.auth
    generation = cache.generation()  # before anything is read (see auth_cache)
    if writes:
        # Authenticate in a read transaction of the request's session, ended below: the write
        # transaction (SQLite's write gate, PostgreSQL's advisory lock) then begins at the
        # handler's first query and ends at its commit, inside one call on one thread. Held
        # from here instead, it spanned the hops between threadpool calls: slower under load,
        # and with more concurrent writers than threads every thread could wait for the lock
        # while its holder waited for a thread.
        ctx.session.connection(execution_options={WRITE_OPTION: False})
    try:
        token = _bearer(request)
        if token is None:
            raise Unauthenticated()
        ctx.principal = _authenticate(ctx, token)
    except Unauthenticated as exc:
        raise _refuse(ctx, exc, target) from None
    facts = None
    if pid is not None:
        ctx.project = ctx.session.get(Project, pid) if isinstance(pid, str) else None
        if ctx.project is not None:
            facts = projects.facts(ctx.project)
            if ctx.principal.kind is PrincipalKind.USER:
                ctx.roles = projects.roles_of(ctx.session, pid, int(ctx.principal.id))
    verdict = authorize(ctx.principal, ctx.action, facts, ctx.roles, datetime.now(UTC).date())
    if (
        verdict.allowed
        and ctx.principal.kind is PrincipalKind.PARTICIPANT
        and pid is None
        and "authorization" in request.headers  # not the portal's cookie
    ):
        _keep_participant(ctx, token, generation)
    if verdict.allowed and ctx.login is not None:
        cache.put_login(token, ctx.login, generation)
        if ctx.project is not None:
            cache.put_project(ctx.project_view, generation)
            cache.put_roles(ctx.project.pid, int(ctx.principal.id), ctx.roles, generation)
    if not verdict.allowed:
        if verdict.reason == "no_such_project" and ctx.principal.is_operator:
            raise _refuse(ctx, NotFound(f"no project {pid}", code="project_not_found"), target)
        message = {
            "operator_only": "only operators may do this",
            "users_only": "only users can do this",
            "participants_only": "only a signed-in participant can do this",
            "token_scope": "the token is scoped to another project",
            "api_key_action": "the API key is not granted this action",
            "project_inactive": "the project is frozen, closed or outside its approval period",
        }.get(verdict.reason, "you are not allowed to do this in this project")
        reason = "not_a_member" if verdict.reason == "no_such_project" else verdict.reason
        raise _refuse(
            ctx, Forbidden(message, code=reason, details={"action": ctx.action.value}), target
        )
    if writes:
        ctx.session.commit()  # end the read transaction (objects stay loaded)
    if ctx.principal.kind is PrincipalKind.API_KEY:
        route = request.scope.get("route")
        record = AuditRecord(
            action="apikey.use",
            actor=ctx.actor,
            project_id=pid,
            target=getattr(route, "path", None),
            request_id=ctx.request_id,
            client=ctx.client,
            details={"action": ctx.action.value, "method": request.method},
        )
        if ACTIONS[ctx.action].writes:
            ctx.platform.ledger.record(ctx.session, record)  # same transaction as the change
        else:
            ctx.platform.audit_now(record)


Ctx = Annotated[RequestContext, Depends(context)]
