"""Group commit: one writer thread runs the write jobs of many requests in one transaction.

A request hands its change to :meth:`BatchWriter.submit` as a *job*, a function of a
:class:`~sqlalchemy.orm.Session`, and waits for the result. The writer thread takes every job
waiting in its queue (at most ``max_jobs``), begins one write transaction (SQLite's write gate
and ``BEGIN IMMEDIATE``, PostgreSQL's advisory lock: see :mod:`hvelv.db.engine`), runs each job
inside its own SAVEPOINT, commits once and only then hands each caller its result. So:

* a job that raises is rolled back alone (its savepoint) and its caller gets its exception;
  the other jobs of the batch go on;
* a caller never sees a result before the transaction holding its change has committed
  (``synchronous=FULL`` on SQLite: durable); when the commit fails, every job of the batch
  gets the commit's error and nothing of the batch is kept;
* while the writer waits for one commit's fsync, new jobs queue up and go into the next batch:
  one fsync is shared by every change that arrived meanwhile, with no timer.

Jobs run one at a time in arrival order, each seeing the rows of the jobs before it (same
transaction). A job must not open a transaction of its own (``Database.write``) — it would wait
for the write gate that its own batch holds — and should return plain values or the rows it
made itself.

Code that keeps state outside the database across a transaction (the audit ledger's head in a
batch, the process's consent cache) registers a :class:`Watcher` with :func:`watch`: it hears
when the current job is rolled back, runs its last writes before the commit, and learns whether
the commit succeeded.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from hvelv.db.engine import Database

__all__ = ["BatchWriter", "Watcher", "current_job", "in_batch", "watch"]

log = logging.getLogger(__name__)

T = TypeVar("T")
W = TypeVar("W", bound="Watcher")

_BATCH = "hvelv_batch"


class Watcher(Protocol):
    """State kept beside one batch transaction (all calls on the writer thread)."""

    def job_failed(self, session: Session) -> None:
        """The current job's savepoint was rolled back; ``session`` is still in the batch."""

    def before_commit(self, session: Session) -> None:
        """Last writes before the commit; raising fails the whole batch."""

    def after_commit(self, committed: bool) -> None:
        """The batch's outcome: committed, or rolled back (commit or ``before_commit`` failed)."""


@dataclass
class _Batch:
    job: int = 0
    watchers: dict[Hashable, Watcher] = field(default_factory=dict)
    touched: list[Hashable] = field(default_factory=list)  # keys watched by the current job

    def start_job(self) -> None:
        self.job += 1
        self.touched = []

    def job_failed(self, session: Session) -> None:
        for key in dict.fromkeys(self.touched):
            self.watchers[key].job_failed(session)


def in_batch(session: Session) -> bool:
    return _BATCH in session.info


def current_job(session: Session) -> int:
    """The number of the job running in ``session``'s batch (from 1), 0 outside a batch."""
    batch: _Batch | None = session.info.get(_BATCH)
    return 0 if batch is None else batch.job


def watch(session: Session, key: Hashable, factory: Callable[[], W]) -> W | None:
    """The watcher under ``key`` of ``session``'s batch, made by ``factory`` on first use and
    told about the current job; None when ``session`` is not a batch's (nothing to watch)."""
    batch: _Batch | None = session.info.get(_BATCH)
    if batch is None:
        return None
    found = batch.watchers.get(key)
    if found is None:
        found = batch.watchers[key] = factory()
    batch.touched.append(key)
    return found  # type: ignore[return-value]  # the key's owner always makes the same type


@dataclass
class _Job:
    work: Callable[[Session], Any]
    future: Future[Any]


_STOP = object()


class BatchWriter:
    """The process's group-commit writer for one :class:`Database` (see the module doc).

    The thread starts with the first job and stops at :meth:`close`."""

    def __init__(self, db: Database, *, max_jobs: int = 128) -> None:
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        self.db = db
        self.max_jobs = max_jobs
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0  # committed or failed batches, for tests and metrics
        self.jobs = 0

    def submit(self, work: Callable[[Session], T]) -> Future[T]:
        """Queue ``work``; the future resolves after its batch's commit (or with its error)."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the batch writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="hvelv-batch-writer", daemon=True
                )
                self._thread.start()
            self._queue.put(_Job(work, future))
        return future

    def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in the next batch and return its result once committed."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a batch job cannot wait for another batch job")
        return self.submit(work).result()

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                return
            jobs: list[_Job] = [item]
            while len(jobs) < self.max_jobs:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                jobs.append(item)
            try:
                self._run(jobs)
            except BaseException as exc:  # never leave a caller waiting
                log.exception("batch writer failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _run(self, jobs: list[_Job]) -> None:
        batch = _Batch()
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        failure: BaseException | None = None
        with self.db.writer() as session:
            session.info[_BATCH] = batch
            for job in jobs:
                if not job.future.set_running_or_notify_cancel():
                    continue
                batch.start_job()
                try:
                    with session.begin_nested():
                        result = job.work(session)
                except Exception as exc:
                    outcomes.append((job, None, exc))
                    try:
                        batch.job_failed(session)
                    except Exception as hook_error:  # the batch cannot be trusted any more
                        failure = hook_error
                        break
                else:
                    outcomes.append((job, result, None))
            batch.touched = []
            if failure is None:
                try:
                    for watcher in list(batch.watchers.values()):
                        watcher.before_commit(session)
                    session.commit()
                except Exception as exc:
                    failure = exc
            if failure is not None:
                try:
                    session.rollback()
                except Exception:
                    log.exception("rollback after a failed batch commit")
            for watcher in batch.watchers.values():
                try:
                    watcher.after_commit(failure is None)
                except Exception:
                    log.exception("batch watcher failed after the outcome")
            session.info.pop(_BATCH, None)
        self.batches += 1
        self.jobs += len(outcomes)
        for job, result, error in outcomes:
            if failure is not None:
                job.future.set_exception(failure)
            elif error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
