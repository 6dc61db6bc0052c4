"""Decisions from the stored ledger: one participant, or a bulk snapshot for one use.

A per-process :class:`ConsentCache` keeps one :class:`~hvelv.consent.snapshot.ConsentIndex` per
project and brings it up to date before every use from the rows added since (new published
template versions, participants by id, ledger events by ``seq``), so a snapshot costs a fold of
the new events only. API processes stay stateless: the cache is only an accelerator rebuilt from
the database, and every process catches up from the same rows.

Every decision and snapshot is written to the decision log (use, approval, time, ledger position,
requester) with an audit event. "Which uses relied on participant P" recomputes each logged
snapshot for P from P's ledger up to the logged position: decisions are reproducible, so the log
does not need a row per participant and snapshot.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, bindparam, func, or_, select
from sqlalchemy.orm import Session

from hvelv.audit.trail import AuditTrail
from hvelv.consent import ledger
from hvelv.consent.decision import EMPTY_STATE, ConsentState, decide
from hvelv.consent.mapping import (
    approval_from_dict,
    approval_of,
    approval_to_dict,
    event_from_row,
    template_from_row,
    use_from_dict,
    use_to_dict,
)
from hvelv.consent.model import Decision, Template, Use
from hvelv.consent.models import ConsentEventRow, DecisionLogEntry, Participant, TemplateVersion
from hvelv.consent.service import events_of, published_templates
from hvelv.consent.snapshot import ConsentIndex, Snapshot
from hvelv.db import batch
from hvelv.projects.models import Project

#: decision log kinds that hold a bulk snapshot (recomputed per participant by relied_on)
BULK_KINDS = ("snapshot", "query")

__all__ = ["BULK_KINDS", "ConsentCache", "decide_one", "decision_log", "relied_on", "snapshot"]


# the columns event_from_row reads (a Core query: no ORM objects for the cache's catch-up)
_EVENT_COLUMNS = (
    ConsentEventRow.seq,
    ConsentEventRow.participant_id,
    ConsentEventRow.kind,
    ConsentEventRow.at,
    ConsentEventRow.actor_kind,
    ConsentEventRow.actor_id,
    ConsentEventRow.template_version_id,
    ConsentEventRow.text_hash,
    ConsentEventRow.choices,
    ConsentEventRow.scope,
)


@dataclass
class _ProjectIndex:
    age_of_majority: int
    templates: dict[str, Template] = field(default_factory=dict)
    index: ConsentIndex | None = None
    last_seq: int = 0
    last_participant: int = 0
    names: dict[int, str] = field(default_factory=dict)
    template_rows: set[int] = field(default_factory=set)
    # the published versions' rows, detached (immutable once published)
    rows: dict[str, TemplateVersion] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    dropped: bool = False  # forgotten while a thread waited for its lock

    def __post_init__(self) -> None:
        self.index = ConsentIndex(
            template_lookup=self.templates.get, age_of_majority=self.age_of_majority
        )

    @property
    def live(self) -> ConsentIndex:
        assert self.index is not None
        return self.index

    def refresh(self, session: Session, pid: str) -> None:
        """Catch up with the rows committed since the last refresh: one probe query (the
        newest event, participant and the count of published versions), then only what is
        new. Statements are built once (Core, bound parameters)."""
        connection = session.connection()
        last_seq, last_participant, published = connection.execute(_PROBE, {"pid": pid}).one()
        if published != len(self.template_rows):  # load versions published since (immutable)
            ids = set(connection.execute(_PUBLISHED, {"pid": pid}).scalars())
            for row in session.execute(
                select(TemplateVersion).where(
                    TemplateVersion.id.in_(sorted(ids - self.template_rows))
                )
            ).scalars():
                self.templates[row.version_id] = template_from_row(row)
                session.expunge(row)  # kept across sessions, untouched by their rollbacks
                self.rows[row.version_id] = row
            self.template_rows |= ids
        if (last_participant or 0) > self.last_participant:
            new_people = connection.execute(
                _NEW_PARTICIPANTS, {"pid": pid, "after": self.last_participant}
            ).all()
            if new_people:
                self.live.add_participants((p.pseudonym, p.birth_date) for p in new_people)
                self.names.update({p.id: p.pseudonym for p in new_people})
                self.last_participant = new_people[-1].id
        if (last_seq or 0) <= self.last_seq:
            return
        rows = connection.execute(_NEW_EVENTS, {"pid": pid, "after": self.last_seq}).all()
        if not rows:
            return
        events = [event_from_row(row, self.names[row.participant_id]) for row in rows]
        if self.last_seq == 0 or len(events) > 64:
            self.live.load(events)
        else:
            for event in events:
                self.live.apply(event)
        self.last_seq = rows[-1].seq


_PID = bindparam("pid", type_=String())
_PROBE = select(
    select(func.max(ConsentEventRow.seq))
    .where(ConsentEventRow.project_id == _PID)
    .scalar_subquery(),
    select(func.max(Participant.id)).where(Participant.project_id == _PID).scalar_subquery(),
    select(func.count(TemplateVersion.id))
    .where(TemplateVersion.project_id == _PID, TemplateVersion.status == "published")
    .scalar_subquery(),
)
_PUBLISHED = select(TemplateVersion.id).where(
    TemplateVersion.project_id == _PID, TemplateVersion.status == "published"
)
_NEW_PARTICIPANTS = (
    select(Participant.id, Participant.pseudonym, Participant.birth_date)
    .where(Participant.project_id == _PID, Participant.id > bindparam("after"))
    .order_by(Participant.id)
)
_NEW_EVENTS = (
    select(*_EVENT_COLUMNS)
    .where(ConsentEventRow.project_id == _PID, ConsentEventRow.seq > bindparam("after"))
    .order_by(ConsentEventRow.seq)
)


class ConsentCache:
    """One consent index per project, per process (see the module doc).

    A refresh inside a group-commit batch (:mod:`hvelv.db.batch`) also reads the rows of the
    batch's earlier jobs, not yet committed; the cache then watches the batch: when a job is
    rolled back it drops the project's index if the index holds rows that are gone, and from
    just before the commit until its outcome it holds the index's lock, dropping the index if
    the commit fails. So no other transaction ever sees a row that did not commit."""

    def __init__(self) -> None:
        self._projects: dict[str, _ProjectIndex] = {}
        self._lock = threading.Lock()

    @contextmanager
    def current(self, session: Session, pid: str, age_of_majority: int) -> Iterator[ConsentIndex]:
        """The project's index, up to date with what ``session`` sees, locked while in use."""
        with self._refreshed(session, pid, age_of_majority) as entry:
            yield entry.live

    def _entry(self, pid: str, age_of_majority: int) -> _ProjectIndex:
        """The project's entry, locked (and not dropped meanwhile)."""
        while True:
            with self._lock:
                entry = self._projects.get(pid)
                if entry is None or entry.age_of_majority != age_of_majority:
                    entry = _ProjectIndex(age_of_majority)
                    self._projects[pid] = entry
            entry.lock.acquire()
            if not entry.dropped:
                return entry
            entry.lock.release()

    @contextmanager
    def _refreshed(
        self, session: Session, pid: str, age_of_majority: int
    ) -> Iterator[_ProjectIndex]:
        entry = self._entry(pid, age_of_majority)
        try:
            watch = batch.watch(
                session, (_WATCH_KEY, id(self), pid), lambda: _BatchWatch(self, pid)
            )
            # In a batch, one refresh is enough: its transaction holds the write lock, so
            # nothing else commits until it ends, and its own appends reach the index through
            # `appended` (a job that fails, an append the index could not take or one made
            # without `appended` — the batch's ledger head shows it — ends this).
            if (
                watch is None
                or watch.current is not entry
                or ledger.batch_head(session, pid) not in (None, entry.last_seq)
            ):
                entry.refresh(session, pid)
                if watch is not None:
                    watch.current = entry
            yield entry
        finally:
            entry.lock.release()

    def state_of(
        self,
        session: Session,
        pid: str,
        age_of_majority: int,
        pseudonym: str,
        at: dt.datetime,
    ) -> tuple[ConsentState, int, dict[str, Template]]:
        """One participant's folded state at ``at`` from the rows ``session`` sees, its ledger
        position, and the published templates — without reading the participant's ledger.

        Called inside a write transaction (SQLite's write lock, PostgreSQL's advisory lock
        held) every row it sees is committed or belongs to the same group-commit batch; the
        caller's own new rows are never added here: the next refresh reads them."""
        with self._refreshed(session, pid, age_of_majority) as entry:
            index = entry.live
            if pseudonym not in index:  # enrolled after the refresh's snapshot: no events yet
                return EMPTY_STATE, 0, dict(entry.templates)
            state, position = index.state_at(pseudonym, at)
            return state, position, dict(entry.templates)

    def appended(self, session: Session, pid: str, rows: list[ConsentEventRow]) -> None:
        """Apply events the caller just appended in a group-commit batch (the batch's next
        refresh then has nothing to read); outside a batch this does nothing, as the rows may
        not commit. A rolled-back job or batch drops the index (see the class doc)."""
        if not batch.in_batch(session) or not rows:
            return
        entry = self._locked_entry(pid)
        if entry is None:
            return
        try:
            watch = batch.watch(
                session, (_WATCH_KEY, id(self), pid), lambda: _BatchWatch(self, pid)
            )
            if entry.last_seq != rows[0].seq - 1 or any(
                r.participant_id not in entry.names for r in rows
            ):
                if watch is not None:
                    watch.current = None
                return  # not contiguous: the next refresh reads them
            for r in rows:
                entry.live.apply(event_from_row(r, entry.names[r.participant_id]))
                entry.last_seq = r.seq
        finally:
            entry.lock.release()

    def published_row(self, pid: str, version_id: str) -> TemplateVersion | None:
        """A published template version of the project as of the last refresh (detached; read
        its attributes only), or None when it is not known here."""
        entry = self._projects.get(pid)
        return None if entry is None else entry.rows.get(version_id)

    def forget(self, pid: str) -> None:
        with self._lock:
            entry = self._projects.pop(pid, None)
            if entry is not None:
                entry.dropped = True

    def _drop_locked(self, pid: str, entry: _ProjectIndex) -> None:
        """Drop ``entry`` (its lock held by the caller)."""
        with self._lock:
            if self._projects.get(pid) is entry:
                del self._projects[pid]
            entry.dropped = True

    def _locked_entry(self, pid: str) -> _ProjectIndex | None:
        with self._lock:
            entry = self._projects.get(pid)
        if entry is None:
            return None
        entry.lock.acquire()
        if entry.dropped:
            entry.lock.release()
            return None
        return entry

    def _drop_if_ahead(self, session: Session, pid: str) -> None:
        """Drop the project's index if it holds rows ``session`` does not see (they were rolled
        back): newer events, participants or published template versions."""
        entry = self._locked_entry(pid)
        if entry is None:
            return
        try:
            last_seq, last_participant = session.execute(
                select(
                    select(func.max(ConsentEventRow.seq))
                    .where(ConsentEventRow.project_id == pid)
                    .scalar_subquery(),
                    select(func.max(Participant.id))
                    .where(Participant.project_id == pid)
                    .scalar_subquery(),
                )
            ).one()
            published = set(
                session.execute(
                    select(TemplateVersion.id).where(
                        TemplateVersion.project_id == pid, TemplateVersion.status == "published"
                    )
                ).scalars()
            )
            if (
                entry.last_seq > (last_seq or 0)
                or entry.last_participant > (last_participant or 0)
                or not entry.template_rows <= published
            ):
                self._drop_locked(pid, entry)
        finally:
            entry.lock.release()


_WATCH_KEY = "hvelv-consent-cache"


class _BatchWatch:
    """Keeps one project's cached index consistent with a group-commit batch (see
    :class:`ConsentCache`)."""

    def __init__(self, cache: ConsentCache, pid: str) -> None:
        self.cache = cache
        self.pid = pid
        self.held: _ProjectIndex | None = None
        # the index refreshed in this batch and kept up to date with its appends since
        self.current: _ProjectIndex | None = None

    def job_failed(self, session: Session) -> None:
        self.current = None
        self.cache._drop_if_ahead(session, self.pid)

    def before_commit(self, session: Session) -> None:
        self.held = self.cache._locked_entry(self.pid)

    def after_commit(self, committed: bool) -> None:
        held, self.held = self.held, None
        if committed:
            if held is not None:
                held.lock.release()
            return
        if held is None:
            self.cache.forget(self.pid)
            return
        try:
            self.cache._drop_locked(self.pid, held)
        finally:
            held.lock.release()


def _log(
    session: Session,
    trail: AuditTrail,
    project: Project,
    *,
    kind: str,
    use: Use,
    at: dt.datetime,
    position: int,
    permitted: int,
    participant: Participant | None,
    extra: dict[str, Any],
) -> DecisionLogEntry:
    entry = DecisionLogEntry(
        project_id=project.pid,
        kind=kind,
        participant_id=participant.id if participant else None,
        use=use_to_dict(use),
        approval=approval_to_dict(approval_of(project)),
        at=at,
        ledger_position=position,
        permitted=permitted,
        requester=trail.actor,
    )
    session.add(entry)
    session.flush()
    details: dict[str, Any] = {
        "log": entry.id,
        "purpose": str(use.purpose),
        "action": use.action,
        "data_class": use.data_class,
        "ledger_position": position,
        **extra,
    }
    trail.record(
        f"consent.{kind}",
        target=f"participant:{participant.pseudonym}" if participant else None,
        project_id=project.pid,
        details=details,
    )
    return entry


def decide_one(
    session: Session,
    trail: AuditTrail,
    cache: ConsentCache,
    project: Project,
    participant: Participant,
    use: Use,
    at: dt.datetime,
    *,
    age_of_majority: int,
) -> tuple[Decision, DecisionLogEntry]:
    approval = approval_of(project)
    with cache.current(session, project.pid, age_of_majority) as index:
        decision = index.decide(participant.pseudonym, use, at, approval=approval)
    entry = _log(
        session,
        trail,
        project,
        kind="decision",
        use=use,
        at=at,
        position=decision.ledger_position,
        permitted=int(decision.permit),
        participant=participant,
        extra={"permit": decision.permit},
    )
    return decision, entry


def snapshot(
    session: Session,
    trail: AuditTrail,
    cache: ConsentCache,
    project: Project,
    use: Use,
    at: dt.datetime,
    *,
    age_of_majority: int,
    kind: str = "snapshot",
    extra: dict[str, Any] | None = None,
) -> tuple[Snapshot, DecisionLogEntry]:
    """A bulk snapshot for ``use``, logged as ``kind`` (``snapshot``, or ``query`` when a dataset
    query relies on it; ``extra`` goes into the audit event)."""
    approval = approval_of(project)
    with cache.current(session, project.pid, age_of_majority) as index:
        result = index.snapshot(use, at, approval=approval)
    entry = _log(
        session,
        trail,
        project,
        kind=kind,
        use=use,
        at=at,
        position=result.ledger_position,
        permitted=len(result.pseudonyms),
        participant=None,
        extra={"permitted": len(result.pseudonyms), **(extra or {})},
    )
    return result, entry


def relied_on(
    session: Session, participant: Participant, *, age_of_majority: int
) -> list[DecisionLogEntry]:
    """Logged decisions and snapshots that permitted a use of this participant's data."""
    entries = session.execute(
        select(DecisionLogEntry)
        .where(
            DecisionLogEntry.project_id == participant.project_id,
            or_(
                DecisionLogEntry.participant_id == participant.id,
                DecisionLogEntry.kind.in_(BULK_KINDS),
            ),
        )
        .order_by(DecisionLogEntry.id)
    ).scalars()
    events = events_of(session, participant)
    templates = published_templates(session, participant.project_id)
    found: list[DecisionLogEntry] = []
    for entry in entries:
        if entry.kind == "decision":
            if entry.permitted:
                found.append(entry)
            continue
        considered = [e for e in events if e.seq <= entry.ledger_position]
        if not considered:
            continue
        if participant.enrolled_at > entry.created_at:
            continue
        verdict = decide(
            considered,
            use_from_dict(entry.use),
            entry.at,
            approval=approval_from_dict(entry.approval),
            template_lookup=templates.get,
            participant_birth_date=participant.birth_date,
            age_of_majority=age_of_majority,
        )
        if verdict.permit:
            found.append(entry)
    return found


def decision_log(
    session: Session, pid: str, *, after: int | None, limit: int
) -> list[DecisionLogEntry]:
    query = select(DecisionLogEntry).where(DecisionLogEntry.project_id == pid)
    if after is not None:
        query = query.where(DecisionLogEntry.id > after)
    return list(session.execute(query.order_by(DecisionLogEntry.id).limit(limit)).scalars())
