"""The app factory uvicorn workers call: builds the app and settles the start-up heap."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from hvelv.config import Settings
from hvelv.crypto.keyring import create_keyring
from hvelv.server import app_from_env


def test_the_factory_builds_the_app_and_freezes_the_start_up_heap(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_keyring(settings.home)
    monkeypatch.setenv("HVELV_HOME", str(Path(settings.home)))
    monkeypatch.setenv("HVELV_DATABASE_URL", settings.resolved_database_url)
    gc.unfreeze()
    try:
        app = app_from_env()
        assert gc.get_freeze_count() > 0
        assert any(getattr(r, "path", None) == "/healthz" for r in app.routes)
        app.state.platform.close()
    finally:
        gc.unfreeze()
