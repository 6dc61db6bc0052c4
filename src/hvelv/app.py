"""The ASGI application: routers, error shape, edge middleware, OpenAPI 3.1 at /v1/openapi.json."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from hvelv import __version__, portal
from hvelv.audit import api as audit_api
from hvelv.consent import api as consent_api
from hvelv.consent import participant_api
from hvelv.datasets import api as datasets_api
from hvelv.files import api as files_api
from hvelv.files.tus import TUS_RESPONSE_HEADERS
from hvelv.health import router as health_router
from hvelv.http import errors
from hvelv.http.context import ACTION_KEY
from hvelv.http.middleware import EdgeMiddleware
from hvelv.http.routing import check_routes
from hvelv.identity import api as identity_api
from hvelv.jobs import Scheduler
from hvelv.platform import Platform
from hvelv.projects import api as projects_api
from hvelv.security.actions import ACTIONS, Action, Scope

log = logging.getLogger("hvelv")

DESCRIPTION = """\
Hvelv is a self-hostable platform for sensitive health research data: isolated projects,
MFA identities, scoped tokens and API keys, and a tamper-evident audit ledger.

Every operation names the action it performs (`x-hvelv-action`); one authorization
decision allows or refuses it. Errors always have the shape
`{"error": {"code", "message", "details"}}`.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Background jobs (files sweep, outbox, coming-of-age review) while the app runs."""
    scheduler: Scheduler = app.state.scheduler
    await scheduler.start()
    try:
        yield
    finally:
        await scheduler.stop()


def create_app(platform: Platform, *, scheduler: Scheduler | None = None) -> FastAPI:
    """The application; ``scheduler`` (default: the built-in jobs on their intervals) runs
    while the app's lifespan does."""
    app = FastAPI(
        lifespan=_lifespan,
        title="Hvelv API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.platform = platform
    app.state.scheduler = scheduler or Scheduler.for_platform(platform)
    errors.install(app)
    # FastAPI matches a request against every route in order, router by router, at about
    # 1.5 µs per route passed: routers whose requests do the least work come first (health
    # checks, then project reads, which a cached authorization answers in ≈ 0.1 ms), and
    # those whose requests are heavy after them (a consent change ≈ 3 ms, a login's argon2id
    # ≈ 50 ms). Their prefixes are disjoint, so the order changes nothing else.
    routers = (
        health_router,
        projects_api.router,
        participant_api.router,
        files_api.router,
        consent_api.router,
        datasets_api.router,
        audit_api.router,
        identity_api.router,
    )
    for router in routers:
        # the routes themselves, not `include_router`: FastAPI >= 0.16x matches an included
        # router as one more level, with its own bookkeeping per route passed (≈ 10 % of the
        # CPU of a cached read); an APIRouter's routes already carry its prefix and tags
        app.router.routes.extend(router.routes)
    portal.install(app)
    settings = platform.settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=[
                "Location",
                "X-Request-ID",
                "ETag",
                "Content-Range",
                "X-Content-SHA256",
                *TUS_RESPONSE_HEADERS,
            ],
            max_age=600,
        )
    app.add_middleware(
        EdgeMiddleware,
        max_body=settings.max_json_body_bytes,
        hsts=settings.base_url.startswith("https://"),
    )
    check_routes(app)
    _secure_openapi(app)
    return app


def _secure_openapi(app: FastAPI) -> None:
    """Add the bearer scheme and mark which operations need it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An access token from /v1/auth/token, or a project API key.",
        }
        for methods in schema.get("paths", {}).values():
            for operation in methods.values():
                action = Action(operation[ACTION_KEY])
                if ACTIONS[action].scope is not Scope.PUBLIC:
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
