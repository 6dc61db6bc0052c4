"""Consent changes through the group-commit writer: concurrent changes keep each participant's
order and both hash chains; the process's consent cache never keeps a row that did not commit
(a job rolled back after the cache read its row, a batch whose commit failed). On SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import Future
from typing import Any

from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.audit.verify import verify
from hvelv.consent import decisions, ledger, service
from hvelv.consent.decision import decide
from hvelv.consent.mapping import approval_of, purpose_from_dict
from hvelv.consent.model import EventKind, Use
from hvelv.consent.models import ConsentEventRow, Participant
from hvelv.projects.models import Project
from tests.consent.conftest import Consent
from tests.support.batching import held, orphan_child, scratch_tables

HMB = Use("", purpose_from_dict({"code": "HMB"}), "analyse", "questionnaire", "user:x", "UiO")
AGE = 16


def _adults(consent: Consent, n: int) -> list[str]:
    return [consent.enrol(dt.date(1950, 1, 1) + dt.timedelta(days=131 * i)) for i in range(n)]


def _change(consent: Consent, pseudonym: str, granted: bool, *, fail_after: bool = False) -> Any:
    """A batch job that changes the hmb item the way the participant route does (state from the
    process's cache, engine check, append); ``fail_after`` reads the cache again (so it holds the
    new row) and then fails."""
    platform = consent.platform

    def job(session: Session) -> int:
        participant = service.get_participant(session, consent.pid, pseudonym)
        at = dt.datetime.now(dt.UTC)
        cache = platform.consent_cache
        state, position, templates = cache.state_of(session, consent.pid, AGE, pseudonym, at)
        template = service.get_version_by_id(session, consent.pid, consent.version_id)
        row = service.record_event(
            session,
            AuditTrail(session, platform.ledger, f"participant:{pseudonym}"),
            participant,
            kind=EventKind.CHANGED,
            acting=service.PARTICIPANT,
            channel="web",
            assurance="low",
            template=template,
            choices={"hmb": granted},
            age_of_majority=AGE,
            at=at,
            cached=service.Cached(state, position, templates),
        )
        if fail_after:
            cache.state_of(session, consent.pid, AGE, pseudonym, dt.datetime.now(dt.UTC))
            raise RuntimeError("failed after the cache read the new row")
        return row.seq

    return job


def _permitted(consent: Consent, cache: decisions.ConsentCache) -> tuple[set[str], int]:
    with consent.platform.db.write() as session:  # as the routes: inside a write transaction
        project = session.get(Project, consent.pid)
        assert project is not None
        use = Use(consent.pid, HMB.purpose, HMB.action, HMB.data_class, "user:x", "UiO")
        with cache.current(session, consent.pid, AGE) as index:
            result = index.snapshot(use, dt.datetime.now(dt.UTC), approval=approval_of(project))
    return set(result.pseudonyms), result.ledger_position


def _expected(consent: Consent, pseudonyms: list[str]) -> set[str]:
    now = dt.datetime.now(dt.UTC)
    with consent.platform.db.read() as session:
        project = session.get(Project, consent.pid)
        assert project is not None
        templates = service.published_templates(session, consent.pid)
        use = Use(consent.pid, HMB.purpose, HMB.action, HMB.data_class, "user:x", "UiO")
        found = set()
        for name in pseudonyms:
            participant = service.get_participant(session, consent.pid, name)
            verdict = decide(
                service.events_of(session, participant),
                use,
                now,
                approval=approval_of(project),
                template_lookup=templates.get,
                participant_birth_date=participant.birth_date,
            )
            if verdict.permit:
                found.add(name)
    return found


def _check_consistent(consent: Consent, pseudonyms: list[str]) -> None:
    """The process's cache, a cache built from scratch and decide() over the stored ledgers
    agree; both chains verify."""
    expected = _expected(consent, pseudonyms)
    live, live_position = _permitted(consent, consent.platform.consent_cache)
    fresh, fresh_position = _permitted(consent, decisions.ConsentCache())
    assert live & set(pseudonyms) == expected
    assert fresh & set(pseudonyms) == expected
    assert live_position == fresh_position
    with consent.platform.db.read() as session:
        assert ledger.verify(session, consent.pid) == fresh_position
    report = verify(consent.platform.db.engine, consent.platform.keyring.signing_public)
    assert report.ok, report.problem


def _results(futures: list[Future[Any]]) -> list[Any]:
    out: list[Any] = []
    for future in futures:
        try:
            out.append(future.result(30))
        except Exception as exc:
            out.append(type(exc).__name__)
    return out


def test_concurrent_changes_through_the_api(consent: Consent) -> None:
    names = _adults(consent, 6)
    headers = {name: consent.participant(name) for name in names}
    for name in names:
        assert consent.give(headers[name], hmb=True).status_code == 201
    rounds = 8
    replies: dict[str, list[tuple[bool, int, dict[str, Any]]]] = {name: [] for name in names}
    errors: list[BaseException] = []
    url = f"/v1/participant/consents/{consent.template_id}/items/hmb"

    def participant(name: str) -> None:
        try:
            for r in range(rounds):
                granted = r % 2 == 1  # withdraw, grant, withdraw, ... ends granted
                response = consent.client.post(
                    url, json={"granted": granted}, headers=headers[name]
                )
                replies[name].append((granted, response.status_code, response.json()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=participant, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with consent.platform.db.read() as session:
        for name in names:
            assert [status for _, status, _ in replies[name]] == [200] * rounds
            seqs = [body["seq"] for _, _, body in replies[name]]
            assert seqs == sorted(seqs)
            assert [body["choices"] for _, _, body in replies[name]] == [
                {"hmb": granted} for granted, _, _ in replies[name]
            ]
            participant_id = service.get_participant(session, consent.pid, name).id
            stored = (
                session.query(ConsentEventRow)
                .filter_by(project_id=consent.pid, participant_id=participant_id, kind="changed")
                .order_by(ConsentEventRow.seq)
                .all()
            )
            assert [row.seq for row in stored] == seqs
    auditor = consent.people["auditor"].headers
    verified = consent.client.get(f"{consent.base}/ledger/verify", headers=auditor)
    assert verified.status_code == 200, verified.text
    assert verified.json()["events"] == len(names) * (rounds + 1)
    _check_consistent(consent, names)
    assert _expected(consent, names) == set(names)  # the last change granted


def test_a_job_rolled_back_after_the_cache_read_its_row(consent: Consent) -> None:
    names = _adults(consent, 2)
    for name in names:
        assert consent.give(consent.participant(name), hmb=True).status_code == 201
    writer = consent.platform.batch
    with held(writer):
        futures = [
            writer.submit(_change(consent, names[0], False)),
            writer.submit(_change(consent, names[1], False, fail_after=True)),
            writer.submit(_change(consent, names[0], True)),  # takes the rolled-back seq
        ]
    assert _results(futures) == [3, "RuntimeError", 4]
    _check_consistent(consent, names)
    assert _expected(consent, names) == set(names)


def test_a_failed_commit_leaves_the_cache_without_the_batch(consent: Consent) -> None:
    names = _adults(consent, 2)
    for name in names:
        assert consent.give(consent.participant(name), hmb=True).status_code == 201
    _check_consistent(consent, names)  # the cache holds both grants
    writer = consent.platform.batch
    with scratch_tables(consent.platform.db):
        with held(writer):
            futures = [
                writer.submit(_change(consent, names[0], False)),
                writer.submit(_change(consent, names[1], False)),
                writer.submit(_change(consent, names[0], True)),  # the cache read job 1's row
                writer.submit(orphan_child),  # the commit fails
            ]
        assert _results(futures) == ["IntegrityError"] * 4
    with consent.platform.db.read() as session:
        assert session.query(ConsentEventRow).filter_by(project_id=consent.pid).count() == 2
    _check_consistent(consent, names)
    assert _expected(consent, names) == set(names)
    # and the next change goes through the route as usual
    url = f"/v1/participant/consents/{consent.template_id}/items/hmb"
    response = consent.client.post(
        url, json={"granted": False}, headers=consent.participant(names[1])
    )
    assert response.status_code == 200, response.text
    assert response.json()["seq"] == 3
    _check_consistent(consent, names)
    assert _expected(consent, names) == {names[0]}


def test_a_refused_change_in_a_batch_is_a_409_and_keeps_the_others(consent: Consent) -> None:
    names = _adults(consent, 2)
    assert consent.give(consent.participant(names[0]), hmb=True).status_code == 201
    writer = consent.platform.batch
    with held(writer):
        futures = [
            writer.submit(_change(consent, names[0], False)),
            writer.submit(_change(consent, names[1], True)),  # no consent to change
            writer.submit(_change(consent, names[0], True)),
        ]
    assert _results(futures) == [2, "Conflict", 3]
    _check_consistent(consent, names)
    with consent.platform.db.read() as session:
        assert session.query(Participant).filter_by(project_id=consent.pid).count() == 2


def _position(consent: Consent, pseudonym: str, out: list[int]) -> Any:
    """A batch job that reads the participant's state from the cache, as the route does."""

    def job(session: Session) -> None:
        cache = consent.platform.consent_cache
        _, position, _ = cache.state_of(
            session, consent.pid, AGE, pseudonym, dt.datetime.now(dt.UTC)
        )
        out.append(position)

    return job


def test_one_refresh_per_batch_still_sees_every_append_of_the_batch(consent: Consent) -> None:
    """The cache refreshes once per batch; an append made without telling the cache (the
    ``_change`` job here) is still seen by the batch's next read, through the ledger head."""
    names = _adults(consent, 2)
    for name in names:
        assert consent.give(consent.participant(name), hmb=True).status_code == 201
    writer = consent.platform.batch
    positions: list[int] = []
    with held(writer):
        futures = [
            writer.submit(_position(consent, names[0], positions)),
            writer.submit(_change(consent, names[0], False)),
            writer.submit(_position(consent, names[0], positions)),
            writer.submit(_change(consent, names[1], False)),
            writer.submit(_change(consent, names[0], True)),
            writer.submit(_position(consent, names[0], positions)),
        ]
    assert _results(futures) == [None, 3, None, 4, 5, None]
    assert positions == [1, 3, 5]  # the participant's newest event each time
    _check_consistent(consent, names)
