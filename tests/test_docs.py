"""Docs are checked: every setting and every API operation is documented."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from hvelv.config import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "operators.md").read_text()
    for name in Settings.model_fields:
        assert f"`HVELV_{name.upper()}`" in text, f"setting {name} is not in docs/operators.md"


def test_every_operation_is_documented(client: TestClient) -> None:
    text = (DOCS / "api.md").read_text()
    spec = client.get("/v1/openapi.json").json()
    for path in spec["paths"]:
        tail = path.replace("/v1/projects/{pid}", "").rsplit("/", 1)[-1]
        assert tail in text, f"{path} is not in docs/api.md"
    for methods in spec["paths"].values():
        for operation in methods.values():
            action = operation["x-hvelv-action"]
            family = action.split(".")[0]
            assert action in text or f"{family}.*" in text or family in text, action
