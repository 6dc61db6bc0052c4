"""Routes: /healthz (the process answers) and /readyz (the database answers)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from hvelv import __version__
from hvelv.errors import HvelvError
from hvelv.http.context import Ctx
from hvelv.http.routing import endpoint
from hvelv.security.actions import Action

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str


@endpoint(router, "GET", "/healthz", Action.HEALTH)
async def healthz() -> Health:
    """Liveness: the process serves requests."""
    return Health(status="ok", version=__version__)


@endpoint(router, "GET", "/readyz", Action.HEALTH, errors={503: "Not ready"})
def readyz(ctx: Ctx) -> Health:
    """Readiness: the database answers."""
    try:
        ctx.session.execute(text("SELECT 1"))
    except Exception:
        raise HvelvError("database unavailable", code="not_ready", status=503) from None
    return Health(status="ready", version=__version__)
