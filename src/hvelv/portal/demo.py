"""Demo content for the portal (``hvelv demo``): a study with a published consent template, an
adult participant and a child with a guardian, each with an invitation link. Made through the
consent services, with synthetic national ids (month + 80), so nothing here is a real person."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from hvelv.audit.trail import AuditTrail
from hvelv.config import Settings
from hvelv.consent import access, enrolment, service
from hvelv.consent.pseudonyms import ProjectSecrets
from hvelv.crypto.keyring import Keyring
from hvelv.projects.models import Project

TEXTS = {
    "nb": (
        "Jeg samtykker til at spørreskjema og registeropplysninger om meg brukes i "
        "hjerteforskning i Nordisk hjertekohort. Jeg kan trekke samtykket når som helst."
    ),
    "en": (
        "I agree that questionnaires and registry data about me are used in heart research in "
        "the Nordic heart cohort. I can withdraw my consent at any time."
    ),
}
ITEMS: list[dict[str, Any]] = [
    {
        "item_id": "hmb",
        "effect": "permit",
        "purpose": {"code": "HMB"},
        "actions": ["store", "analyse"],
        "data_classes": ["questionnaire", "registry"],
        "titles": {"nb": "Helseforskning på dataene mine", "en": "Health research on my data"},
    },
    {
        "item_id": "registries",
        "effect": "permit",
        "purpose": {"code": "HMB"},
        "actions": ["link_registries"],
        "titles": {"nb": "Kobling med helseregistre", "en": "Linking with health registries"},
    },
    {
        "item_id": "recontact",
        "effect": "permit",
        "purpose": {"code": "GRU"},
        "actions": ["recontact"],
        "titles": {"nb": "Bli kontaktet om nye studier", "en": "Being contacted about new studies"},
    },
    {
        "item_id": "no-genome-share",
        "effect": "deny",
        "purpose": {"code": "GRU"},
        "actions": ["share"],
        "data_classes": ["genome"],
        "titles": {"nb": "Deling av arvestoff", "en": "Sharing genetic data"},
    },
]

_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _check(digits: str, weights: tuple[int, ...]) -> int | None:
    k = 11 - sum(w * int(d) for w, d in zip(weights, digits, strict=False)) % 11
    return 0 if k == 11 else (None if k == 10 else k)


def synthetic_id(birth: dt.date, rng: random.Random) -> str:
    """A synthetic test national id (month + 80) with valid check digits."""
    while True:
        individual = rng.randint(500, 999) if birth.year >= 2000 else rng.randint(0, 499)
        base = f"{birth.day:02d}{birth.month + 80:02d}{birth.year % 100:02d}{individual:03d}"
        k1 = _check(base, _W1)
        k2 = None if k1 is None else _check(base + str(k1), _W2)
        if k1 is not None and k2 is not None:
            return f"{base}{k1}{k2}"


def seed(
    trail: AuditTrail, settings: Settings, keyring: Keyring, project: Project
) -> dict[str, str]:
    """The demo study, template and two participants; returns their invitation links."""
    session = trail.session
    pid = project.pid
    study = service.create_study(
        session, trail, pid, name="Nordisk hjertekohort", description="Demo study"
    )
    template = service.create_template(
        session,
        trail,
        pid,
        study.id,
        title="Samtykke til hjerteforskning",
        texts=TEXTS,
        items=ITEMS,
    )
    service.publish(session, trail, template)
    rng = random.Random()  # noqa: S311 - synthetic test ids, not secrets
    today = dt.date.today()
    adult = dt.date(1986, 10, 15)
    child = today.replace(year=today.year - 12, day=1)
    secrets = ProjectSecrets(session, keyring, pid)
    rows = [
        enrolment.EnrolRow(1, synthetic_id(adult, rng), "kari@example.org", None, "nb"),
        enrolment.EnrolRow(2, synthetic_id(child, rng), None, None, "nb"),
    ]
    kari, ola = enrolment.enrol(session, trail, secrets, rows, allow_synthetic=True)
    guardian = enrolment.add_proxy(
        session,
        trail,
        secrets,
        ola,
        relation="parent",
        name="Demo Guardian",
        email="guardian@example.org",
        phone=None,
        language="nb",
    )
    participant = access.invite(session, trail, settings, keyring, secrets, project, kari, None)
    proxy = access.invite(session, trail, settings, keyring, secrets, project, ola, guardian)
    return {"participant": participant.link, "guardian": proxy.link}
