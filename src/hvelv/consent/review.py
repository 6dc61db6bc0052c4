"""Re-consent notices and the coming-of-age review, shared by the API route and the scheduled
job (:mod:`hvelv.jobs`).

:func:`review_project` ends the representation of every participant of one project who has
reached the age of majority, raises a re-consent request per template their proxy consented to
and queues an e-mail for each (when the participant has an address). :func:`review_all` does
that for every active project, each project in its own write transaction so that a failure in
one loses nothing in the others.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.consent import enrolment, service
from hvelv.consent.models import Participant, ReconsentRequest, TemplateVersion
from hvelv.consent.pseudonyms import ProjectSecrets
from hvelv.crypto.keyring import Keyring
from hvelv.notify import outbox
from hvelv.platform import Platform
from hvelv.projects.models import Project

__all__ = ["JOB_ACTOR", "ReviewFailed", "notify_reconsent", "review_all", "review_project"]

log = logging.getLogger("hvelv.consent")
JOB_ACTOR = "system:jobs"


def notify_reconsent(
    session: Session,
    keyring: Keyring,
    project: Project,
    template: TemplateVersion,
    made: Iterable[ReconsentRequest],
    people: Iterable[Participant],
) -> int:
    """Queue the re-consent e-mail of each new request (participants without an address get
    none: they see the request when they sign in). Returns how many were queued."""
    secrets = ProjectSecrets(session, keyring, project.pid)
    by_id = {p.id: p for p in people}
    queued = 0
    for request in made:
        participant = by_id[request.participant_id]
        email = enrolment.contact_of(secrets, participant).get("email")
        if email:
            outbox.enqueue(
                session,
                keyring,
                project_id=project.pid,
                kind="reconsent",
                language=participant.language,
                to=email,
                params={"project": project.name, "title": template.title},
            )
            queued += 1
    return queued


def review_project(
    session: Session,
    trail: AuditTrail,
    keyring: Keyring,
    project: Project,
    *,
    today: dt.date,
    age_of_majority: int,
) -> list[service.ComingOfAge]:
    """The coming-of-age review of one project, with its notices, in the caller's transaction."""
    reviewed = service.review_representations(
        session, trail, project.pid, today=today, age_of_majority=age_of_majority
    )
    for item in reviewed:
        for request in item.requests:
            template = session.get(TemplateVersion, request.template_id)
            assert template is not None
            notify_reconsent(session, keyring, project, template, [request], [item.participant])
    return reviewed


class ReviewFailed(RuntimeError):
    """The review failed for some projects (the others were reviewed)."""


def review_all(platform: Platform, now: dt.datetime) -> dict[str, int]:
    """The scheduled review over every active project; counts of what it did."""
    with platform.db.read() as session:
        pids = list(
            session.execute(
                select(Project.pid).where(Project.status == "active").order_by(Project.pid)
            ).scalars()
        )
    ended = requests = failed = 0
    for pid in pids:
        try:
            with platform.db.write() as session:
                project = session.get(Project, pid)
                if project is None or project.status != "active":
                    continue
                trail = AuditTrail(session, platform.ledger, JOB_ACTOR)
                reviewed = review_project(
                    session,
                    trail,
                    platform.keyring,
                    project,
                    today=now.astimezone(dt.UTC).date(),
                    age_of_majority=platform.settings.consent_age_of_majority,
                )
        except Exception:
            log.exception("coming-of-age review failed for a project", extra={"event": pid})
            failed += 1
            continue
        ended += len(reviewed)
        requests += sum(len(item.requests) for item in reviewed)
    if failed:
        raise ReviewFailed(f"the review failed for {failed} of {len(pids)} project(s)")
    return {"projects": len(pids), "ended": ended, "requests": requests}
