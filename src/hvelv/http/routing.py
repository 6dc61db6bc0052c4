"""Routes that declare their action.

``endpoint(router, "GET", "/path", Action.X)`` registers a handler with the action in its
OpenAPI operation (``x-hvelv-action``), the authorization dependency attached, and the
error responses documented. :func:`check_routes` refuses to start an app with any route
that bypasses this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

from fastapi import APIRouter, Depends, FastAPI, params
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.routing import BaseRoute, Route

from hvelv.http.context import ACTION_KEY, CREDENTIAL_KEY, PAGE_COOKIE, context
from hvelv.security.actions import ACTIONS, Action, Scope

F = TypeVar("F", bound=Callable[..., Any])

# non-API routes that may exist without an action (served by the framework, public)
FRAMEWORK_ROUTES = {"/v1/openapi.json"}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(title="ErrorDetail")
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The one error shape of the API."""

    error: ErrorDetail


_COMMON = {
    400: "Bad request",
    413: "Request body too large",
    422: "Invalid input",
    500: "Internal error",
}
_AUTH = {401: "Not authenticated", 403: "Not allowed"}
_PROJECT = {404: "No such object"}


def _responses(action: Action, extra: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    codes = dict(_COMMON)
    info = ACTIONS[action]
    if info.scope is not Scope.PUBLIC:
        codes.update(_AUTH)
    if info.scope is Scope.PROJECT:
        codes.update(_PROJECT)
    codes.update(extra)
    return {code: {"model": ErrorResponse, "description": text} for code, text in codes.items()}


def endpoint(
    router: APIRouter,
    method: str,
    path: str,
    action: Action,
    *,
    errors: dict[int, str] | None = None,
    **kwargs: Any,
) -> Callable[[F], F]:
    extra = {**kwargs.pop("openapi_extra", {}), ACTION_KEY: action.value}

    def register(handler: F) -> F:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            # a handler taking the context gets it (authorized) before anything else it
            # depends on; the route-level dependency would only solve it a second time
            dependencies=[] if _context_only(handler) else [Depends(context)],
            openapi_extra=extra,
            responses=_responses(action, errors or {}),
            **kwargs,
        )
        return handler

    return register


def _context_only(handler: Callable[..., Any]) -> bool:
    """The handler's only dependency parameter is the request context."""
    try:
        hints = get_type_hints(handler, include_extras=True)
    except Exception:  # an annotation that does not resolve here: keep the route dependency
        return False
    calls = [
        marker.dependency
        for hint in hints.values()
        if get_origin(hint) is Annotated
        for marker in get_args(hint)[1:]
        if isinstance(marker, params.Depends)
    ]
    return calls == [context]


def page(
    router: APIRouter,
    method: str,
    path: str,
    action: Action,
    *,
    dependencies: list[Any] | None = None,
    **kwargs: Any,
) -> Callable[[F], F]:
    """A server-rendered page (the participant portal): like :func:`endpoint` (the action is
    declared and the authorization dependency attached, so :func:`check_routes` checks it), but
    left out of the OpenAPI document, and the participant session may come from the portal's
    HttpOnly cookie instead of an Authorization header. ``dependencies`` run after
    authorization (the portal's CSRF check)."""

    def register(handler: F) -> F:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            dependencies=[Depends(context), *(dependencies or [])],
            openapi_extra={ACTION_KEY: action.value, CREDENTIAL_KEY: PAGE_COOKIE},
            include_in_schema=False,
            **kwargs,
        )
        return handler

    return register


def flat_routes(app: FastAPI) -> Iterator[tuple[BaseRoute, str]]:
    """Every route of the app with its full path, included routers flattened (FastAPI
    >= 0.16x keeps an included router as one entry of ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are copied into app.routes
        for route in app.routes:
            yield route, getattr(route, "path", "")
        return
    for found in iter_route_contexts(app.routes):
        yield found.original_route, found.path or ""


def pages(app: FastAPI) -> list[tuple[str, str, Action]]:
    """The (method, path, action) of every page route (not in the OpenAPI document)."""
    found: list[tuple[str, str, Action]] = []
    for route, path in flat_routes(app):
        if isinstance(route, APIRoute) and not route.include_in_schema:
            action = Action((route.openapi_extra or {})[ACTION_KEY])
            found.extend((method, path, action) for method in sorted(route.methods or ()))
    return found


class UnprotectedRoute(RuntimeError):
    """A route would be reachable without the authorization dependency."""


def check_routes(app: FastAPI) -> None:
    """Fail start-up if any route lacks a declared action or the authorization dependency."""
    for route, path in flat_routes(app):
        if isinstance(route, APIRoute):
            extra = route.openapi_extra or {}
            if ACTION_KEY not in extra or extra[ACTION_KEY] not in {a.value for a in Action}:
                raise UnprotectedRoute(f"route {path} declares no known action")
            if not any(dep.call is context for dep in route.dependant.dependencies):
                raise UnprotectedRoute(f"route {path} lacks the authorization dependency")
        elif isinstance(route, Route) and path not in FRAMEWORK_ROUTES:
            raise UnprotectedRoute(f"route {path} is not an action-declaring API route")
        elif not isinstance(route, Route):
            raise UnprotectedRoute(f"route {path or route!r} is not a plain route (a mount?)")
