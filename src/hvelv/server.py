"""Serving: the ASGI app built from the environment (used by uvicorn workers)."""

from __future__ import annotations

from fastapi import FastAPI

from hvelv.app import create_app
from hvelv.config import load_settings
from hvelv.logs import configure
from hvelv.platform import Platform


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory hvelv.server:app_from_env``."""
    settings = load_settings()
    configure(settings.log_level)
    return create_app(Platform.open(settings))
