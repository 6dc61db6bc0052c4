"""Recurring background jobs of the server process, and the small scheduler that runs them.

Built-in jobs (:func:`builtin_jobs`), each with its own interval setting (0: not scheduled):

* ``files.sweep`` — expire unfinished uploads, purge the trash (``maintenance_interval_seconds``);
* ``outbox.send`` — send queued notifications by SMTP (``outbox_interval_seconds``);
* ``consent.proxy_review`` — end representations at the age of majority and ask the participant
  to consent themselves (``consent_review_interval_seconds``).

The :class:`Scheduler` runs each job in a loop of its own on the event loop, the job's work in a
worker thread (never on the event loop). A run that raises is logged, recorded and retried at the
next interval; it never stops the loop or the other jobs. The first run comes
``jobs_start_delay_seconds`` after start (or one interval, when shorter), then one interval after
the end of each run.

**One run of a job at a time, across replicas.** A run first takes the job's lock
(:func:`job_lock`) without waiting; when another process or scheduler holds it, this run is
skipped (outcome ``busy``). On PostgreSQL the lock is a session advisory lock
(``pg_try_advisory_lock(JOBS, crc32(name))``, in the two-key space, apart from the write lock) on
a connection of its own, released by the database if the process dies. On SQLite, whose replicas
share one machine, it is an exclusive ``flock`` on ``<database>.job-<name>.lock`` next to the
database file (held by the open file, so two schedulers in one process exclude each other too);
SQLite's write lock cannot serve, since the job's own write transactions need it.

Runs that did something, failed, or were started by hand are written to the audit ledger
(``jobs.run``, target ``job:<name>``, with counts only), which ``hvelv jobs list`` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select, text

from hvelv.audit.ledger import Outcome
from hvelv.audit.models import AuditEvent
from hvelv.audit.trail import AuditTrail
from hvelv.config import Settings
from hvelv.consent import review
from hvelv.db.engine import Database
from hvelv.files import maintenance
from hvelv.notify import outbox
from hvelv.platform import Platform

__all__ = [
    "AUDIT_ACTION",
    "JOB_ACTOR",
    "Job",
    "JobRun",
    "Scheduler",
    "builtin_jobs",
    "job_lock",
    "recorded_runs",
]

log = logging.getLogger("hvelv.jobs")
JOB_ACTOR = review.JOB_ACTOR
AUDIT_ACTION = "jobs.run"
LOCK_CLASS = 0x4A4F4253  # "JOBS": the first key of the jobs' PostgreSQL advisory locks
STOP_WAIT_SECONDS = 60.0

Clock = Callable[[], dt.datetime]
RunOutcome = Literal["ok", "failed", "busy"]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Job:
    """A recurring job: ``run(platform, now)`` returns counts of what it did."""

    name: str
    interval: float  # seconds between runs; 0: not scheduled (still runnable by hand)
    run: Callable[[Platform, dt.datetime], Mapping[str, int]]
    description: str = ""
    setting: str = ""  # the interval's setting, for `hvelv jobs list`


@dataclass(frozen=True)
class JobRun:
    job: str
    outcome: RunOutcome
    started_at: dt.datetime
    finished_at: dt.datetime
    node: str
    result: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def did_something(self) -> bool:
        return any(self.result.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "outcome": self.outcome,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "node": self.node,
            "result": dict(self.result),
            "error": self.error,
        }


# -- the lock: one run of a job at a time, across processes and replicas --------------------


def _signed32(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


_memory_locks: dict[tuple[str, str], threading.Lock] = {}
_memory_guard = threading.Lock()


@contextlib.contextmanager
def job_lock(db: Database, name: str) -> Iterator[bool]:
    """Try to take the job's lock without waiting; yields whether this caller holds it."""
    if not db.is_sqlite:
        with _pg_lock(db, name) as held:
            yield held
        return
    path = db.url.split("///", 1)[1] if "///" in db.url else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        with _memory_guard:
            lock = _memory_locks.setdefault((db.url, name), threading.Lock())
        if not lock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
        return
    fd = os.open(f"{path}.job-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _pg_lock(db: Database, name: str) -> Iterator[bool]:
    key = {"c": LOCK_CLASS, "o": _signed32(zlib.crc32(name.encode()))}
    conn = db.engine.connect()
    try:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:c, :o)"), key).scalar())
        conn.commit()  # a session lock outlives the transaction; do not sit idle in one
        try:
            yield held
        finally:
            if held:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:c, :o)"), key)
                    conn.commit()
                except Exception:  # the session ends with the connection, and the lock with it
                    conn.invalidate()
                    raise
    finally:
        conn.close()


# -- the scheduler ----------------------------------------------------------------------------


class Scheduler:
    """Runs ``jobs`` on their intervals while started; :meth:`run_once` runs one now."""

    def __init__(
        self,
        platform: Platform,
        jobs: Sequence[Job],
        *,
        clock: Clock = _utcnow,
        start_delay: float | None = None,
    ) -> None:
        names = [job.name for job in jobs]
        if len(names) != len(set(names)):
            raise ValueError("job names must be unique")
        self.platform = platform
        self.jobs = {job.name: job for job in jobs}
        self.clock = clock
        self.start_delay = (
            platform.settings.jobs_start_delay_seconds if start_delay is None else start_delay
        )
        self.last: dict[str, JobRun] = {}
        self.runs: dict[str, int] = dict.fromkeys(names, 0)  # runs that got the lock
        self._running = {name: threading.Lock() for name in names}
        # per event loop: one app object may be started and stopped by several loops in turn
        # (test clients run each lifespan on a loop of their own); each stop ends its own
        self._tasks: dict[asyncio.AbstractEventLoop, list[asyncio.Task[None]]] = {}
        self._inflight: dict[asyncio.AbstractEventLoop, set[asyncio.Future[JobRun]]] = {}

    @classmethod
    def for_platform(cls, platform: Platform, *, clock: Clock = _utcnow) -> Scheduler:
        return cls(platform, builtin_jobs(platform.settings), clock=clock)

    def run_once(self, name: str, *, actor: str = JOB_ACTOR, manual: bool = False) -> JobRun:
        """Run one job now in this thread (unless a run of it is going on anywhere)."""
        job = self.jobs[name]
        started = _utcnow()
        node = self.platform.settings.node_name
        if not self._running[name].acquire(blocking=False):
            return self._busy(job, started, node)
        try:
            with job_lock(self.platform.db, name) as held:
                if not held:
                    return self._busy(job, started, node)
                self.runs[name] += 1
                run = self._run(job, started, node)
        finally:
            self._running[name].release()
        self.last[name] = run
        self._record(run, actor=actor, manual=manual)
        return run

    def _busy(self, job: Job, started: dt.datetime, node: str) -> JobRun:
        log.info("job busy elsewhere", extra={"event": job.name, "status": "busy"})
        return JobRun(job.name, "busy", started, _utcnow(), node)

    def _run(self, job: Job, started: dt.datetime, node: str) -> JobRun:
        clock = time.monotonic()
        try:
            result = {k: int(v) for k, v in job.run(self.platform, self.clock()).items()}
        except Exception as exc:
            log.exception(
                "job failed",
                extra={
                    "event": job.name,
                    "status": "failed",
                    "duration_ms": round((time.monotonic() - clock) * 1000),
                },
            )
            return JobRun(job.name, "failed", started, _utcnow(), node, error=type(exc).__name__)
        run = JobRun(job.name, "ok", started, _utcnow(), node, result)
        level = logging.INFO if run.did_something else logging.DEBUG
        log.log(
            level,
            f"job done {result}",
            extra={
                "event": job.name,
                "status": "ok",
                "duration_ms": round((time.monotonic() - clock) * 1000),
            },
        )
        return run

    def _record(self, run: JobRun, *, actor: str, manual: bool) -> None:
        if not (manual or run.outcome == "failed" or run.did_something):
            return
        try:
            with self.platform.db.write() as session:
                AuditTrail(session, self.platform.ledger, actor).record(
                    AUDIT_ACTION,
                    target=f"job:{run.job}",
                    outcome=Outcome.FAILED if run.outcome == "failed" else Outcome.SUCCESS,
                    details={
                        "job": run.job,
                        "outcome": run.outcome,
                        "node": run.node,
                        "started_at": run.started_at.isoformat(),
                        "finished_at": run.finished_at.isoformat(),
                        "result": run.result,
                        "error": run.error,
                        "manual": manual,
                    },
                )
        except Exception:  # the database may be why the job failed; the log has it
            log.exception("could not record a job run", extra={"event": run.job})

    # -- on the event loop --------------------------------------------------------------------

    async def start(self) -> None:
        """Start a loop per scheduled job (interval > 0) on the running event loop."""
        tasks = self._tasks.setdefault(asyncio.get_running_loop(), [])
        for job in self.jobs.values():
            if job.interval > 0:
                tasks.append(asyncio.create_task(self._loop(job), name=f"job:{job.name}"))

    async def _loop(self, job: Job) -> None:
        delay = min(job.interval, self.start_delay)
        while True:
            await asyncio.sleep(delay)
            future = asyncio.ensure_future(asyncio.to_thread(self.run_once, job.name))
            inflight = self._inflight.setdefault(asyncio.get_running_loop(), set())
            inflight.add(future)
            future.add_done_callback(inflight.discard)
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                raise
            except Exception:  # run_once catches the job's errors; this is a bug in us
                log.exception("job loop error", extra={"event": job.name})
            delay = job.interval

    async def stop(self) -> None:
        """Stop the loops and wait (a bounded time) for runs in progress to finish."""
        loop = asyncio.get_running_loop()
        tasks = self._tasks.pop(loop, [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        inflight = self._inflight.pop(loop, set())
        if inflight:
            _, pending = await asyncio.wait(set(inflight), timeout=STOP_WAIT_SECONDS)
            if pending:
                log.warning("jobs still running at shutdown", extra={"status": len(pending)})


# -- the built-in jobs ------------------------------------------------------------------------


def _sweep(platform: Platform, now: dt.datetime) -> dict[str, int]:
    swept = maintenance.sweep(platform, now)
    return {"uploads_expired": swept.uploads_expired, "files_purged": swept.files_purged}


def _send_outbox(platform: Platform, now: dt.datetime) -> dict[str, int]:
    return {"sent": outbox.send_pending(platform.db, platform.settings, platform.keyring)}


def builtin_jobs(settings: Settings) -> list[Job]:
    return [
        Job(
            "files.sweep",
            settings.maintenance_interval_seconds,
            _sweep,
            "expire unfinished uploads, purge the trash after its retention",
            "maintenance_interval_seconds",
        ),
        Job(
            "outbox.send",
            settings.outbox_interval_seconds,
            _send_outbox,
            "send queued notifications by SMTP (nothing without HVELV_SMTP_HOST)",
            "outbox_interval_seconds",
        ),
        Job(
            "consent.proxy_review",
            settings.consent_review_interval_seconds,
            review.review_all,
            "end representations at the age of majority, ask participants to re-consent",
            "consent_review_interval_seconds",
        ),
    ]


def recorded_runs(db: Database, name: str, *, limit: int = 1) -> list[dict[str, Any]]:
    """The newest recorded runs of a job (from the audit ledger), newest first."""
    with db.read() as session:
        bodies = session.execute(
            select(AuditEvent.body)
            .where(AuditEvent.action == AUDIT_ACTION, AuditEvent.target == f"job:{name}")
            .order_by(AuditEvent.seq.desc())
            .limit(limit)
        ).scalars()
        runs: list[dict[str, Any]] = []
        for body in bodies:
            event = json.loads(body)
            details = dict(event.get("details") or {})
            details["actor"] = event.get("actor")
            runs.append(details)
    return runs
