"""Enrolment: validation per row, all-or-nothing CSV import, encryption at rest, pseudonyms."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select

from hvelv.consent.models import Participant
from hvelv.consent.pseudonyms import ProjectSecrets, mask_national_id, pseudonym
from tests.consent.conftest import Consent
from tests.support.participants import national_id

VALID = "15108695088"
ALSO_VALID = "31129956715"
BAD_CHECKSUM = "15108695077"


def test_one_participant_is_stored_encrypted_with_a_stable_pseudonym(consent: Consent) -> None:
    response = consent.client.post(
        f"{consent.base}/participants",
        json={"national_id": "151086 95088", "email": "kari@example.org", "language": "en"},
        headers=consent.dm,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["national_id"] == "*********88"
    assert body["email"] == "k***@example.org"
    assert body["birth_year"] == 1986
    assert body["id_kind"] == "fnr"
    assert VALID not in response.text
    with consent.platform.db.read() as session:
        row = session.execute(select(Participant)).scalar_one()
        assert VALID.encode() not in row.identity_sealed
        assert b"kari@example.org" not in row.identity_sealed
        assert row.birth_date == dt.date(1986, 10, 15)
        # the exported function gives the same pseudonym, with or without separators
        assert pseudonym(session, consent.platform.keyring, consent.pid, VALID) == row.pseudonym
        assert pseudonym(session, consent.platform.keyring, consent.pid, "151086-95088") == (
            row.pseudonym
        )
    # rotating the project key keeps pseudonyms and still opens older rows
    rotated = consent.client.post(
        f"/v1/projects/{consent.pid}/keys/rotate", headers=consent.people["owner"].headers
    )
    assert rotated.status_code == 200
    found = consent.client.post(
        f"{consent.base}/participants/search", json={"national_id": VALID}, headers=consent.dm
    )
    assert found.status_code == 200
    assert found.json()["pseudonym"] == body["pseudonym"]
    assert found.json()["email"] == "k***@example.org"
    again = consent.client.post(
        f"{consent.base}/participants", json={"national_id": VALID}, headers=consent.dm
    )
    assert again.status_code == 422
    assert again.json()["error"]["details"]["rows"][0]["reason"] == "already_enrolled"


def test_pseudonyms_differ_between_projects(consent: Consent) -> None:
    other = consent.people["outsider"].extra["project"]
    with consent.platform.db.read() as session:
        keyring = consent.platform.keyring
        assert pseudonym(session, keyring, consent.pid, VALID) != pseudonym(
            session, keyring, other, VALID
        )
        secrets = ProjectSecrets(session, keyring, consent.pid)
        assert secrets.lookup_hash(VALID) != secrets.lookup_hash(ALSO_VALID)


def test_csv_import_is_all_or_nothing_with_a_row_level_report(consent: Consent) -> None:
    future = national_id(dt.date.today() + dt.timedelta(days=400))
    csv = "\n".join(
        [
            "national_id,email,phone,language",
            f"{VALID},a@example.org,+4791234567,nb",
            f"{BAD_CHECKSUM},b@example.org,,en",
            "1234,c@example.org,,nn",
            f"{ALSO_VALID},not-an-email,12,de",
            f"{VALID},d@example.org,,nb",
            f"{future},,,",
        ]
    )
    response = consent.client.post(
        f"{consent.base}/participants/import", json={"csv": csv}, headers=consent.dm
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "enrolment_rejected"
    found = {(r["line"], r["field"], r["reason"]) for r in error["details"]["rows"]}
    assert found == {
        (3, "national_id", "checksum"),
        (4, "national_id", "length"),
        (5, "email", "invalid_email"),
        (5, "phone", "invalid_phone"),
        (5, "language", "unknown_language"),
        (6, "national_id", "duplicate_in_file"),
        (7, "national_id", "future_birth_date"),
    }
    duplicate = next(r for r in error["details"]["rows"] if r["reason"] == "duplicate_in_file")
    assert duplicate["same_as_line"] == 2
    # no national id appears unmasked anywhere in the answer
    assert not re.search(r"(?<![0-9a-f])\d{11}(?![0-9a-f])", response.text)
    assert mask_national_id(BAD_CHECKSUM) in response.text
    listed = consent.client.get(f"{consent.base}/participants", headers=consent.dm).json()
    assert listed["items"] == []

    good = "national_id,email,language\n" + "\n".join(
        f"{national_id(dt.date(1950 + n, 1 + n % 12, 1 + n))},p{n}@example.org,nb"
        for n in range(20)
    )
    imported = consent.client.post(
        f"{consent.base}/participants/import", json={"csv": good}, headers=consent.dm
    )
    assert imported.status_code == 201, imported.text
    assert imported.json()["enrolled"] == 20
    page = consent.client.get(
        f"{consent.base}/participants", params={"limit": 15, "with_state": True}, headers=consent.dm
    ).json()
    assert len(page["items"]) == 15
    assert page["items"][0]["state"]["consents"] == []
    rest = consent.client.get(
        f"{consent.base}/participants", params={"after": page["next_after"]}, headers=consent.dm
    ).json()
    assert len(rest["items"]) == 5


def test_d_numbers_and_bad_csv_headers(consent: Consent) -> None:
    d_number = national_id(dt.date(1986, 10, 15), d_number=True)
    assert d_number.startswith("55")
    made = consent.client.post(
        f"{consent.base}/participants", json={"national_id": d_number}, headers=consent.dm
    )
    assert made.status_code == 201, made.text
    assert made.json()["id_kind"] == "dnr"
    assert made.json()["birth_year"] == 1986
    bad = consent.client.post(
        f"{consent.base}/participants/import",
        json={"csv": "fnr,email\n15108695088,a@example.org"},
        headers=consent.dm,
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_csv"
    empty = consent.client.post(
        f"{consent.base}/participants/import", json={"csv": "national_id\n"}, headers=consent.dm
    )
    assert empty.json()["error"]["code"] == "invalid_csv"
    ragged = consent.client.post(
        f"{consent.base}/participants/import",
        json={"csv": "national_id\n15108695088,extra"},
        headers=consent.dm,
    )
    assert ragged.json()["error"]["code"] == "invalid_csv"


def test_unreadable_csv_is_a_clear_422(consent: Consent) -> None:
    for text in ('"national_id\n', 'national_id\n"151086\r95088', "national_id\n\x00"):
        response = consent.client.post(
            f"{consent.base}/participants/import", json={"csv": text}, headers=consent.dm
        )
        assert response.status_code == 422, (text, response.text)
