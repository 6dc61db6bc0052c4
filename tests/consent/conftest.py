"""Fixtures for the consent API tests: a published template and enrolled participants."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hvelv.platform import Platform
from tests.support.participants import national_id, session_headers
from tests.support.people import Person

TEXTS = {
    "nb": "Jeg samtykker til at opplysningene mine brukes i helseforskning.",
    "en": "I agree that my data may be used for health research.",
}
ITEMS: list[dict[str, Any]] = [
    {
        "item_id": "hmb",
        "effect": "permit",
        "purpose": {"code": "HMB"},
        "actions": ["store", "analyse"],
        "titles": {"nb": "Helseforskning", "en": "Health research"},
    },
    {
        "item_id": "cancer",
        "effect": "permit",
        "purpose": {"code": "DS", "disease": "MONDO:0004992"},
        "actions": ["analyse"],
        "modifiers": {"codes": ["PUB"]},
    },
    {
        "item_id": "no-genome-share",
        "effect": "deny",
        "purpose": {"code": "GRU"},
        "actions": ["share"],
        "data_classes": ["genome"],
    },
]
HMB_USE = {
    "purpose": {"code": "HMB"},
    "action": "analyse",
    "data_class": "questionnaire",
    "requester_institution": "UiO",
}
ADULT_BIRTH = dt.date(1986, 10, 15)
CHILD_BIRTH = dt.date.today().replace(year=dt.date.today().year - 10, day=1)


@dataclass
class Consent:
    """A project with a published template, helpers bound to the owner and data manager."""

    client: TestClient
    platform: Platform
    pid: str
    people: dict[str, Person]
    version_id: str
    template_id: str

    @property
    def base(self) -> str:
        return f"/v1/projects/{self.pid}/consent"

    @property
    def dm(self) -> dict[str, str]:
        return self.people["data_manager"].headers

    def enrol(self, birth: dt.date = ADULT_BIRTH, **extra: Any) -> str:
        body = {"national_id": national_id(birth), "email": "kari@example.org", **extra}
        response = self.client.post(f"{self.base}/participants", json=body, headers=self.dm)
        assert response.status_code == 201, response.text
        pseudonym: str = response.json()["pseudonym"]
        return pseudonym

    def participant(self, pseudonym: str, proxy_id: int | None = None) -> dict[str, str]:
        return session_headers(self.platform, self.pid, pseudonym, proxy_id)

    def add_proxy(self, pseudonym: str, **contact: str) -> dict[str, Any]:
        """Register a guardian for a participant (default: a parent, "Mor", with e-mail)."""
        body = {"relation": "parent", "name": "Mor", "email": "mor@example.org", **contact}
        response = self.client.post(
            f"{self.base}/participants/{pseudonym}/proxies", json=body, headers=self.dm
        )
        assert response.status_code == 201, response.text
        proxy: dict[str, Any] = response.json()
        return proxy

    def give(self, headers: dict[str, str], **choices: bool) -> Any:
        return self.client.post(
            "/v1/participant/consents",
            json={"template_version": self.version_id, "choices": choices},
            headers=headers,
        )

    def decide(self, pseudonym: str, use: dict[str, Any] | None = None, **extra: Any) -> Any:
        response = self.client.post(
            f"{self.base}/decisions",
            json={"participant": pseudonym, "use": use or HMB_USE, **extra},
            headers=self.people["member"].headers,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def snapshot(self, use: dict[str, Any] | None = None) -> Any:
        response = self.client.post(
            f"{self.base}/snapshots",
            json={"use": use or HMB_USE},
            headers=self.people["member"].headers,
        )
        assert response.status_code == 200, response.text
        return response.json()


def publish_template(
    client: TestClient, pid: str, headers: dict[str, str], items: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    base = f"/v1/projects/{pid}/consent"
    study = client.post(f"{base}/studies", json={"name": "Heart cohort"}, headers=headers)
    assert study.status_code == 201, study.text
    created = client.post(
        f"{base}/studies/{study.json()['id']}/templates",
        json={"title": "Main consent", "texts": TEXTS, "items": items or ITEMS},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    published = client.post(
        f"{base}/templates/{body['template_id']}/versions/{body['version']}/publish",
        headers=headers,
    )
    assert published.status_code == 200, published.text
    result: dict[str, Any] = published.json()
    return result


@pytest.fixture
def consent(
    client: TestClient, platform: Platform, project: str, people: dict[str, Person]
) -> Consent:
    template = publish_template(client, project, people["data_manager"].headers)
    return Consent(
        client, platform, project, people, template["version_id"], template["template_id"]
    )
