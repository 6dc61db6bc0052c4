"""Browser tus clients (tus-js-client, Uppy) need CORS: preflight and exposed headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from hvelv.app import create_app
from hvelv.platform import Platform
from tests.files.support import create
from tests.support.people import Person

ORIGIN = "https://portal.example.org"


@pytest.fixture
def browser(platform: Platform) -> Iterator[TestClient]:
    allowed = Platform.build(
        platform.settings.model_copy(update={"cors_origins": [ORIGIN]}),
        platform.db,
        platform.keyring,
    )
    with TestClient(create_app(allowed)) as client:
        yield client


def test_preflight_allows_tus_requests_from_configured_origins(
    browser: TestClient, project: str
) -> None:
    response = browser.options(
        f"/v1/projects/{project}/files/import/uploads/{'0' * 32}",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization,tus-resumable,upload-offset,"
            "upload-checksum,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "PATCH" in response.headers["access-control-allow-methods"]
    other = browser.options(
        f"/v1/projects/{project}/files/import/uploads",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_tus_response_headers_are_exposed(
    browser: TestClient, people: dict[str, Person], project: str
) -> None:
    response = create(
        browser, project, {**people["member"].headers, "Origin": ORIGIN}, 10, area="import"
    )
    assert response.status_code == 201
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {
        "location",
        "upload-offset",
        "upload-length",
        "tus-resumable",
        "upload-expires",
    } <= exposed
