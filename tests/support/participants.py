"""Participants for tests: valid national ids, enrolment and signed-in sessions."""

from __future__ import annotations

import datetime as dt
import random

from hvelv.audit.trail import AuditTrail
from hvelv.consent import access, enrolment
from hvelv.consent.models import Participant
from hvelv.consent.pseudonyms import ProjectSecrets
from hvelv.platform import Platform

_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _check(digits: str, weights: tuple[int, ...]) -> int | None:
    k = 11 - sum(w * int(d) for w, d in zip(weights, digits, strict=False)) % 11
    if k == 11:
        return 0
    return None if k == 10 else k


_ISSUED: set[str] = set()  # ids drawn without a seeded rng are unique in a test session


def national_id(birth: dt.date, rng: random.Random | None = None, *, d_number: bool = False) -> str:
    """A valid fødselsnummer (or D-number: day + 40) for someone born on ``birth``; without
    ``rng``, never the same one twice (two draws for one birth date collided now and then)."""
    if rng is None:
        while True:
            drawn = national_id(birth, random.Random(), d_number=d_number)
            if drawn not in _ISSUED:
                _ISSUED.add(drawn)
                return drawn
    day = birth.day + (40 if d_number else 0)
    while True:
        individual = rng.randint(500, 999) if birth.year >= 2000 else rng.randint(0, 499)
        base = f"{day:02d}{birth.month:02d}{birth.year % 100:02d}{individual:03d}"
        k1 = _check(base, _W1)
        if k1 is None:
            continue
        k2 = _check(base + str(k1), _W2)
        if k2 is None:
            continue
        return f"{base}{k1}{k2}"


def enrol(
    platform: Platform,
    pid: str,
    nid: str,
    *,
    email: str | None = "kari@example.org",
    language: str = "nb",
) -> str:
    """Enrol one participant; returns the pseudonym."""

    def work(trail: AuditTrail) -> str:
        secrets = ProjectSecrets(trail.session, platform.keyring, pid)
        rows = [enrolment.EnrolRow(1, nid, email, None, language)]
        (made,) = enrolment.enrol(trail.session, trail, secrets, rows, allow_synthetic=False)
        return made.pseudonym

    result: str = platform.run_as("local:test", work)
    return result


def session_headers(
    platform: Platform, pid: str, pseudonym: str, proxy_id: int | None = None
) -> dict[str, str]:
    """A participant session (as if signed in by invitation) for an enrolled participant."""
    with platform.db.write() as session:
        participant = (
            session.query(Participant).filter_by(project_id=pid, pseudonym=pseudonym).one()
        )
        opened = access.open_session(
            session, platform.settings, participant, proxy_id, assurance="low"
        )
    return {"Authorization": f"Bearer {opened.token}"}
