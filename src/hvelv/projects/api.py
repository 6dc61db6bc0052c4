"""Routes: /v1/projects, members, API keys, key rotation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from hvelv.http.context import Ctx
from hvelv.http.routing import endpoint
from hvelv.projects import service
from hvelv.projects.models import ApiKey, Project
from hvelv.projects.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    KeyRotation,
    MemberAdd,
    MemberOut,
    ProjectAdmin,
    ProjectCreate,
    ProjectList,
    ProjectOut,
    ProjectUpdate,
)
from hvelv.security.actions import Action, Role
from hvelv.security.auth_cache import ProjectView

router = APIRouter(prefix="/v1/projects", tags=["projects"])

Pid = Annotated[str, Path(pattern=r"^p[0-9]{4,9}$", description="Project id, e.g. p1001")]
Username = Annotated[str, Path(pattern=r"^[a-z][a-z0-9._-]{1,62}$", max_length=63)]
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]


def project_out(project: Project | ProjectView) -> ProjectOut:
    """A project row, or the view authorization read: every field of the view (the purposes
    validated into :class:`Purpose`), and whether the project is active today."""
    view = project if isinstance(project, ProjectView) else service.view(project)
    fields = {name: getattr(view, name) for name in _VIEW_FIELDS}
    return ProjectOut(**fields, active=view.facts.active_on(datetime.now(UTC).date()))


_VIEW_FIELDS = tuple(name for name in ProjectOut.model_fields if name != "active")


def key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        key_id=key.key_id,
        name=key.name,
        actions=key.actions,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked=key.revoked_at is not None,
    )


# the most frequent request of this router first (routes are matched in order)
@endpoint(router, "GET", "/{pid}", Action.PROJECT_READ, response_model=ProjectOut)
async def read_project(pid: Pid, ctx: Ctx) -> Response:
    """A project's metadata (also while frozen, so members can see its status)."""
    view = ctx.project_view  # as authorization read it: no I/O here
    today = datetime.now(UTC).date()
    body = view.memo.get(today)
    if body is None:  # rendered once per cached view and day
        body = view.memo[today] = project_out(view).model_dump_json().encode()
    return Response(body, media_type="application/json")


@endpoint(router, "POST", "", Action.PROJECT_CREATE, status_code=201)
def create_project(body: ProjectCreate, ctx: Ctx) -> ProjectOut:
    """Create an isolated project with its own key (operators). Takes milliseconds."""
    project = service.create_project(
        ctx.session,
        ctx.trail(),
        ctx.platform.keyring,
        ctx.user_id,
        name=body.name,
        ethics_ref=body.ethics_ref,
        approval_start=body.approval_start,
        approval_end=body.approval_end,
        purposes=[p.model_dump() for p in body.purposes],
        description=body.description,
        quota_bytes=body.quota_bytes,
    )
    ctx.commit()
    return project_out(project)


@endpoint(router, "GET", "", Action.PROJECT_LIST)
def list_projects(
    ctx: Ctx,
    after: Annotated[str | None, Query(pattern=r"^p[0-9]{4,9}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ProjectList:
    """Operators see every project; others the projects they are members of."""
    assert ctx.principal is not None
    user_id = None if ctx.principal.is_operator else ctx.user_id
    projects = service.list_projects(ctx.session, user_id=user_id, after=after, limit=limit)
    if ctx.principal.scope_project is not None:
        projects = [p for p in projects if p.pid == ctx.principal.scope_project]
    items = [project_out(p) for p in projects]
    return ProjectList(items=items, next_after=items[-1].pid if len(items) == limit else None)


@endpoint(router, "PATCH", "/{pid}", Action.PROJECT_UPDATE)
def update_project(pid: Pid, body: ProjectUpdate, ctx: Ctx) -> ProjectOut:
    """Owners change the name, description and approved purposes."""
    assert ctx.project is not None
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude_none=True)
    if "purposes" in changes:
        changes["purposes"] = [p.model_dump() for p in body.purposes or []]
    project = service.update_project(ctx.session, ctx.trail(), ctx.project, changes)
    ctx.commit()
    return project_out(project)


@endpoint(router, "PATCH", "/{pid}/admin", Action.PROJECT_STATUS)
def administer_project(pid: Pid, body: ProjectAdmin, ctx: Ctx) -> ProjectOut:
    """Operators freeze, close or reactivate a project and record its approval and quota."""
    assert ctx.project is not None
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    project = service.update_project(ctx.session, ctx.trail(), ctx.project, changes)
    ctx.commit()
    return project_out(project)


@endpoint(router, "POST", "/{pid}/keys/rotate", Action.PROJECT_KEY_ROTATE)
def rotate_key(pid: Pid, ctx: Ctx) -> KeyRotation:
    """New project key version; every data key is re-wrapped (data is not re-encrypted)."""
    version, count = service.rotate_key(ctx.session, ctx.trail(), ctx.platform.keyring, ctx.pid)
    ctx.commit()
    return KeyRotation(version=version, rewrapped_data_keys=count)


@endpoint(router, "GET", "/{pid}/members", Action.MEMBER_LIST)
def list_members(pid: Pid, ctx: Ctx) -> list[MemberOut]:
    """Members and their roles."""
    return [
        MemberOut(
            username=m.username, display_name=m.display_name, roles=[Role(r) for r in m.roles]
        )
        for m in service.list_members(ctx.session, ctx.pid)
    ]


@endpoint(
    router,
    "POST",
    "/{pid}/members",
    Action.MEMBER_MANAGE,
    status_code=201,
    errors={409: "Already a member with that role"},
)
def add_member(pid: Pid, body: MemberAdd, ctx: Ctx) -> list[MemberOut]:
    """Give a user a role in the project (owner or operator)."""
    by = int(ctx.principal.id) if ctx.principal else 0
    service.add_member(ctx.session, ctx.trail(), ctx.pid, body.username, body.role, by)
    ctx.commit()
    return list_members(pid, ctx)


@endpoint(router, "DELETE", "/{pid}/members/{username}", Action.MEMBER_MANAGE, status_code=204)
def remove_member(
    pid: Pid, username: Username, ctx: Ctx, role: Annotated[Role | None, Query()] = None
) -> None:
    """Remove a role (or, without ``role``, all roles) of a user in the project."""
    service.remove_member(ctx.session, ctx.trail(), ctx.pid, username, role)
    ctx.commit()


@endpoint(router, "GET", "/{pid}/api-keys", Action.APIKEY_LIST)
def list_api_keys(pid: Pid, ctx: Ctx) -> list[ApiKeyOut]:
    """The project's API keys (never their secrets)."""
    return [key_out(k) for k in service.list_api_keys(ctx.session, ctx.pid)]


@endpoint(router, "POST", "/{pid}/api-keys", Action.APIKEY_MANAGE, status_code=201)
def create_api_key(pid: Pid, body: ApiKeyCreate, ctx: Ctx) -> ApiKeyCreated:
    """A key for an integration, limited to some of the project's actions; shown once."""
    new = service.create_api_key(
        ctx.session,
        ctx.trail(),
        ctx.pid,
        name=body.name,
        actions=body.actions,
        expires_in_days=body.expires_in_days,
        max_days=ctx.platform.settings.api_key_max_days,
        by_user=ctx.user_id,
    )
    ctx.commit()
    return ApiKeyCreated(**key_out(new.key).model_dump(), secret=new.secret)


@endpoint(router, "DELETE", "/{pid}/api-keys/{key_id}", Action.APIKEY_MANAGE, status_code=204)
def revoke_api_key(pid: Pid, key_id: KeyId, ctx: Ctx) -> None:
    """Revoke an API key at once."""
    service.revoke_api_key(ctx.session, ctx.trail(), ctx.pid, key_id)
    ctx.commit()
