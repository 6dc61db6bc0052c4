"""Routes: /v1/auth (login, refresh, logout, TOTP enrolment), /v1/users, /v1/me."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from hvelv.errors import NotFound
from hvelv.http.context import Ctx, RequestContext
from hvelv.http.routing import endpoint
from hvelv.identity import service
from hvelv.identity.models import User
from hvelv.identity.schemas import (
    EnrolRequest,
    EnrolResponse,
    Me,
    PasswordChange,
    RefreshRequest,
    TokenRequest,
    TokenResponse,
    UserCreate,
    UserCreated,
    UserList,
    UserOut,
    UserUpdate,
    UserUpdated,
)
from hvelv.projects.models import Membership
from hvelv.security.actions import Action
from hvelv.text import LINE_PATTERN

router = APIRouter(prefix="/v1")

Username = Annotated[str, Path(pattern=r"^[a-z][a-z0-9._-]{1,62}$", max_length=63)]


def user_out(user: User) -> UserOut:
    return UserOut(
        username=user.username,
        display_name=user.display_name,
        operator=user.is_operator,
        status=user.status,
        totp_enrolled=user.totp_secret is not None,
        password_must_change=user.password_must_change,
        created_at=user.created_at,
    )


@contextmanager
def refusals_committed(ctx: RequestContext) -> Iterator[None]:
    """A refused login still commits its audit event and failure count, then answers."""
    try:
        yield
    except service.LoginFailed as failed:
        ctx.commit()
        raise failed.error from None


def _tokens(pair: service.TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        expires_at=pair.expires_at,
        refresh_token=pair.refresh_token,
        scope_project=pair.scope_project,
    )


@endpoint(
    router,
    "POST",
    "/auth/token",
    Action.AUTH_LOGIN,
    tags=["auth"],
    errors={401: "Wrong credentials", 403: "Password change required", 429: "Account locked"},
)
def issue_token(body: TokenRequest, ctx: Ctx) -> TokenResponse:
    """Log in with username, password and a TOTP code; returns access and refresh tokens.

    A first login with a one-time password must include ``new_password``. A user whose
    TOTP is not yet enrolled first calls ``/v1/auth/totp/enrol``; the first accepted code
    here confirms the enrolment.
    """
    platform = ctx.platform
    trail = ctx.trail()
    trail.actor = f"user:{body.username}"
    with refusals_committed(ctx):
        pair = service.login(
            ctx.session,
            trail,
            platform.settings,
            platform.keyring,
            platform.signer,
            username=body.username,
            password=body.password,
            totp_code=body.totp_code,
            new_password=body.new_password,
            scope_project=body.project,
        )
    ctx.commit()
    return _tokens(pair)


@endpoint(
    router,
    "POST",
    "/auth/totp/enrol",
    Action.AUTH_ENROL,
    tags=["auth"],
    errors={401: "Wrong credentials", 409: "Already enrolled", 429: "Account locked"},
)
def enrol_totp(body: EnrolRequest, ctx: Ctx) -> EnrolResponse:
    """Start TOTP enrolment: returns a secret and otpauth:// URI for an authenticator app."""
    trail = ctx.trail()
    trail.actor = f"user:{body.username}"
    with refusals_committed(ctx):
        secret, uri = service.begin_enrolment(
            ctx.session,
            trail,
            ctx.platform.settings,
            ctx.platform.keyring,
            body.username,
            body.password,
        )
    ctx.commit()
    return EnrolResponse(otpauth_uri=uri, secret=secret)


@endpoint(
    router,
    "POST",
    "/auth/refresh",
    Action.AUTH_REFRESH,
    tags=["auth"],
    errors={401: "Invalid refresh token"},
)
def refresh_token(body: RefreshRequest, ctx: Ctx) -> TokenResponse:
    """Exchange a refresh token for new tokens (the old refresh token stops working)."""
    trail = ctx.trail()
    with refusals_committed(ctx):
        pair = service.refresh(
            ctx.session, trail, ctx.platform.settings, ctx.platform.signer, body.refresh_token
        )
    ctx.commit()
    return _tokens(pair)


@endpoint(router, "POST", "/auth/logout", Action.AUTH_LOGOUT, tags=["auth"], status_code=204)
def logout(ctx: Ctx) -> None:
    """End this login session: its refresh and access tokens stop working at once."""
    service.logout(ctx.session, ctx.trail(), ctx.session_id)
    ctx.commit()


@endpoint(router, "GET", "/me", Action.SELF_READ, tags=["auth"])
def me(ctx: Ctx) -> Me:
    """Who am I: user, operator flag, token scope and project roles."""
    assert ctx.principal is not None
    user = ctx.session.get(User, ctx.user_id)
    if user is None:
        raise NotFound("no such user")
    roles: dict[str, list[str]] = {}
    for pid, role in ctx.session.execute(
        select(Membership.project_id, Membership.role).where(Membership.user_id == user.id)
    ):
        roles.setdefault(pid, []).append(role)
    return Me(
        username=user.username,
        display_name=user.display_name,
        operator=user.is_operator,
        session_scope=ctx.principal.scope_project,
        projects=roles,
    )


@endpoint(
    router,
    "POST",
    "/me/password",
    Action.SELF_PASSWORD,
    tags=["auth"],
    status_code=204,
)
def change_password(body: PasswordChange, ctx: Ctx) -> None:
    """Change your password; your other sessions are ended."""
    with refusals_committed(ctx):
        service.change_password(
            ctx.session,
            ctx.trail(),
            ctx.user_id,
            body.current_password,
            body.new_password,
            ctx.session_id,
        )
    ctx.commit()


@endpoint(
    router,
    "POST",
    "/users",
    Action.USER_CREATE,
    tags=["users"],
    status_code=201,
    errors={409: "Username taken"},
)
def create_user(body: UserCreate, ctx: Ctx) -> UserCreated:
    """Create a user with a one-time password (shown once). TOTP is enrolled at first login."""
    new = service.create_user(
        ctx.session,
        ctx.trail(),
        ctx.platform.keyring,
        body.username,
        display_name=body.display_name,
        is_operator=body.operator,
    )
    ctx.commit()
    return UserCreated(**user_out(new.user).model_dump(), one_time_password=new.password)


@endpoint(router, "GET", "/users", Action.USER_LIST, tags=["users"])
def list_users(
    ctx: Ctx,
    after: Annotated[
        str | None,
        Query(max_length=64, pattern=LINE_PATTERN, description="Page after this username"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> UserList:
    """All users, by username, paginated."""
    users = service.list_users(ctx.session, after=after, limit=limit)
    items = [user_out(u) for u in users]
    return UserList(items=items, next_after=items[-1].username if len(items) == limit else None)


@endpoint(router, "GET", "/users/{username}", Action.USER_READ, tags=["users"])
def read_user(ctx: Ctx, username: Username) -> UserOut:
    """One user."""
    return user_out(service.get_user(ctx.session, username))


@endpoint(router, "PATCH", "/users/{username}", Action.USER_UPDATE, tags=["users"])
def update_user(body: UserUpdate, ctx: Ctx, username: Username) -> UserUpdated:
    """Disable or enable a user, change the operator flag, or reset credentials."""
    user, password = service.update_user(
        ctx.session,
        ctx.trail(),
        ctx.platform.keyring,
        username,
        status=body.status,
        is_operator=body.operator,
        display_name=body.display_name,
        reset_credentials=body.reset_credentials,
    )
    ctx.commit()
    return UserUpdated(**user_out(user).model_dump(), one_time_password=password)
