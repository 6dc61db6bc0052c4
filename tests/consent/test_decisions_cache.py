"""The per-process consent index cache: kept up to date incrementally from new ledger rows, it
must give the same snapshot as deciding every participant from the stored ledger, and the same
as a cache built from scratch (another process)."""

from __future__ import annotations

import datetime as dt
import itertools
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvelv.audit.trail import AuditTrail
from hvelv.consent import decisions, service
from hvelv.consent.decision import decide
from hvelv.consent.mapping import approval_of, purpose_from_dict
from hvelv.consent.model import ActorKind, EventKind, Use, WithdrawalScope
from hvelv.consent.models import Participant, Proxy
from hvelv.errors import HvelvError
from hvelv.projects.models import Project
from tests.consent.conftest import Consent

USES = [
    Use("", purpose_from_dict({"code": "HMB"}), "analyse", "questionnaire", "user:x", "UiO"),
    Use(
        "",
        purpose_from_dict({"code": "DS", "disease": "MONDO:0007254"}),
        "analyse",
        "genome",
        "user:x",
        "UiO",
    ),
    Use("", purpose_from_dict({"code": "HMB"}), "share", "genome", "user:x", "UiO"),
]

KINDS = ["given", "given", "changed", "withdrawn", "expired", "proxy_given", "proxy_given"]
KINDS.append("end_proxy")
ACTIONS = st.lists(
    st.tuples(
        st.integers(0, 5),  # participant
        st.sampled_from(KINDS),
        st.dictionaries(st.sampled_from(["hmb", "cancer"]), st.booleans(), min_size=1, max_size=2),
        st.sampled_from(list(WithdrawalScope)),
        st.booleans(),  # take a snapshot after this step
    ),
    min_size=1,
    max_size=30,
)


_BIRTHS = itertools.count()
Step = tuple[int, str, dict[str, bool], WithdrawalScope, bool]


def _apply(consent: Consent, trail: AuditTrail, people: list[Participant], step: Step) -> None:
    index, kind, choices, scope, _ = step
    session = trail.session
    participant = people[index]
    template = service.get_version_by_id(session, consent.pid, consent.version_id)
    proxy = session.query(Proxy).filter_by(participant_id=participant.id, ended_at=None).first()
    try:
        if kind == "end_proxy":
            if proxy is not None:
                service.end_proxy(session, trail, participant, proxy, reason="test")
            return
        acting = service.PARTICIPANT
        if kind == "proxy_given":
            if proxy is None:
                return
            acting = service.Acting(ActorKind.PROXY, proxy)
        needs_template = kind in ("given", "changed", "proxy_given")
        service.record_event(
            session,
            trail,
            participant,
            kind=EventKind(kind),
            acting=acting,
            channel="web",
            assurance="low",
            template=template if needs_template else None,
            choices=choices if needs_template else None,
            scope=scope if kind == "withdrawn" else None,
        )
    except HvelvError:
        session.rollback()  # refused by the engine: nothing was written


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ACTIONS, seed=st.integers(0, 2**16))
def test_incremental_cache_equals_fresh_decisions(
    consent: Consent, steps: list[Step], seed: int
) -> None:
    platform = consent.platform
    rng = random.Random(seed)
    # distinct birth dates: national ids never repeat between examples
    today = dt.date.today()
    adults = [dt.date(1940, 1, 1) + dt.timedelta(days=next(_BIRTHS)) for _ in range(4)]
    children = [today - dt.timedelta(days=400 + next(_BIRTHS)) for _ in range(2)]
    pseudonyms = [consent.enrol(birth) for birth in adults + children]
    with platform.db.write() as session:
        trail = AuditTrail(session, platform.ledger, "local:test")
        for p in session.query(Participant).filter(Participant.pseudonym.in_(pseudonyms[4:])):
            session.add(
                Proxy(
                    project_id=consent.pid,
                    participant_id=p.id,
                    relation="parent",
                    key_version=1,
                    contact_sealed=b"x",
                    language="nb",
                )
            )
    cache = decisions.ConsentCache()
    for step in steps:
        with platform.db.write() as session:
            trail = AuditTrail(session, platform.ledger, "local:test")
            people = [
                session.query(Participant).filter_by(pseudonym=name).one() for name in pseudonyms
            ]
            _apply(consent, trail, people, step)
        if step[-1] or step is steps[-1]:
            _check(consent, cache, pseudonyms, rng)


def _check(
    consent: Consent, cache: decisions.ConsentCache, pseudonyms: list[str], rng: random.Random
) -> None:
    platform = consent.platform
    now = dt.datetime.now(dt.UTC)
    with platform.db.read() as session:
        project = session.get(Project, consent.pid)
        assert project is not None
        approval = approval_of(project)
        templates = service.published_templates(session, consent.pid)
        use = USES[0] if rng.random() < 0.6 else rng.choice(USES)
        use = Use(consent.pid, use.purpose, use.action, use.data_class, "user:x", "UiO")
        with cache.current(session, consent.pid, 16) as index:
            incremental = index.snapshot(use, now, approval=approval)
        with decisions.ConsentCache().current(session, consent.pid, 16) as fresh_index:
            fresh = fresh_index.snapshot(use, now, approval=approval)
        expected = set()
        for name in pseudonyms:
            participant = service.get_participant(session, consent.pid, name)
            verdict = decide(
                service.events_of(session, participant),
                use,
                now,
                approval=approval,
                template_lookup=templates.get,
                participant_birth_date=participant.birth_date,
            )
            if verdict.permit:
                expected.add(name)
    assert incremental.pseudonyms & set(pseudonyms) == expected
    assert fresh.pseudonyms & set(pseudonyms) == expected
    assert incremental.ledger_position == fresh.ledger_position
