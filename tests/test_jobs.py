"""The background job scheduler: runs on schedule in a live app, survives failing jobs, never
runs one job twice at once (two schedulers on one database, SQLite or PostgreSQL), records runs,
and the `hvelv jobs` commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from hvelv.app import create_app
from hvelv.audit.models import AuditEvent
from hvelv.cli.main import app as cli
from hvelv.config import ConfigError, Settings, load_settings
from hvelv.db.engine import Database
from hvelv.jobs import Job, Scheduler, job_lock, recorded_runs
from hvelv.platform import Platform

WAIT = 30.0  # a guard against hanging; every wait ends on the outcome it waits for


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.02)


def counting(runs: list[dt.datetime]) -> Callable[[Platform, dt.datetime], Mapping[str, int]]:
    def run(platform: Platform, now: dt.datetime) -> Mapping[str, int]:
        runs.append(now)
        return {"done": 0}

    return run


@pytest.fixture
def replica(platform: Platform) -> Iterator[Platform]:
    """A second API replica: its own engine and connections on the same database."""
    other = Platform.build(
        platform.settings.model_copy(update={"node_name": "replica-2"}),
        Database(platform.settings.resolved_database_url),
        platform.keyring,
    )
    yield other
    other.close()


def test_a_job_runs_on_schedule_in_a_live_app(platform: Platform) -> None:
    runs: list[dt.datetime] = []
    fixed = dt.datetime(2031, 5, 17, 8, tzinfo=dt.UTC)
    scheduler = Scheduler(
        platform, [Job("tick", 0.1, counting(runs))], clock=lambda: fixed, start_delay=0
    )
    with TestClient(create_app(platform, scheduler=scheduler)) as client:
        assert client.get("/healthz").status_code == 200
        wait_for(lambda: len(runs) >= 3, "three scheduled runs")
    assert set(runs) == {fixed}  # the job gets the scheduler's clock
    assert scheduler.last["tick"].outcome == "ok"
    # stopped with the app: no loop left, no run in progress
    assert not scheduler._tasks
    assert not scheduler._inflight


def test_a_stop_on_one_event_loop_leaves_another_loops_jobs_alone(platform: Platform) -> None:
    # One app object can be started by several event loops in turn (test clients run each
    # lifespan on a loop of their own); a loop whose lifespan never stopped must not break the
    # next one's stop, which awaited its tasks from the wrong loop before.
    scheduler = Scheduler(platform, [Job("tick", 60, counting([]))], start_delay=60)
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(scheduler.start())  # never stopped
        second = asyncio.new_event_loop()
        try:
            second.run_until_complete(scheduler.start())
            second.run_until_complete(scheduler.stop())
        finally:
            second.close()
        assert list(scheduler._tasks) == [first]
        first.run_until_complete(scheduler.stop())
        assert not scheduler._tasks
    finally:
        first.close()


def test_a_failing_job_does_not_stop_the_others(platform: Platform) -> None:
    runs: list[dt.datetime] = []
    failures: list[int] = []

    def boom(platform: Platform, now: dt.datetime) -> Mapping[str, int]:
        failures.append(1)
        raise RuntimeError("broken on purpose")

    scheduler = Scheduler(
        platform,
        [Job("boom", 0.1, boom), Job("tick", 0.1, counting(runs))],
        start_delay=0,
    )
    with TestClient(create_app(platform, scheduler=scheduler)):
        wait_for(lambda: len(failures) >= 3 and len(runs) >= 3, "both jobs, several times")
    assert scheduler.last["boom"].outcome == "failed"
    assert scheduler.last["boom"].error == "RuntimeError"
    assert scheduler.last["tick"].outcome == "ok"
    # failures are recorded in the audit ledger (quiet successful runs are not)
    (last,) = recorded_runs(platform.db, "boom")
    assert (last["outcome"], last["error"], last["actor"]) == (
        "failed",
        "RuntimeError",
        "system:jobs",
    )
    assert recorded_runs(platform.db, "tick") == []
    with platform.db.read() as session:
        outcomes = set(
            session.execute(
                select(AuditEvent.outcome).where(AuditEvent.target == "job:boom")
            ).scalars()
        )
    assert outcomes == {"failed"}


def test_two_schedulers_on_one_database_never_run_a_job_at_once(
    platform: Platform, replica: Platform
) -> None:
    entered = threading.Event()
    release = threading.Event()

    def hold(platform: Platform, now: dt.datetime) -> Mapping[str, int]:
        entered.set()
        assert release.wait(WAIT)
        return {"held": 1}

    first = Scheduler(platform, [Job("hold", 0, hold)])
    second = Scheduler(replica, [Job("hold", 0, hold)])
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(first.run_once("hold")))
    worker.start()
    try:
        assert entered.wait(WAIT)
        busy = second.run_once("hold")
        assert busy.outcome == "busy"
        assert busy.node == "replica-2"
        assert second.runs["hold"] == 0
        # the same scheduler does not start a second run either
        assert first.run_once("hold").outcome == "busy"
    finally:
        release.set()
        worker.join(WAIT)
    assert [r.outcome for r in results] == ["ok"]
    # the lock is released after the run: now the other replica runs it
    assert second.run_once("hold").outcome == "ok"
    assert (first.runs["hold"], second.runs["hold"]) == (1, 1)
    # runs that did something are recorded with the node that ran them
    nodes = [r["node"] for r in recorded_runs(platform.db, "hold", limit=5)]
    assert nodes == ["replica-2", platform.settings.node_name]


def test_live_schedulers_of_two_replicas_take_turns(platform: Platform, replica: Platform) -> None:
    guard = threading.Lock()
    state = {"inside": 0, "most": 0, "runs": 0}

    def exclusive(platform: Platform, now: dt.datetime) -> Mapping[str, int]:
        with guard:
            state["inside"] += 1
            state["most"] = max(state["most"], state["inside"])
        time.sleep(0.05)  # leave room for the other replica to try (it must not get in)
        with guard:
            state["inside"] -= 1
            state["runs"] += 1
        return {}

    schedulers = [
        Scheduler(p, [Job("exclusive", 0.1, exclusive)], start_delay=0) for p in (platform, replica)
    ]
    with (
        TestClient(create_app(platform, scheduler=schedulers[0])),
        TestClient(create_app(replica, scheduler=schedulers[1])),
    ):
        wait_for(lambda: state["runs"] >= 12, "a dozen runs")
    assert state["most"] == 1
    assert sum(s.runs["exclusive"] for s in schedulers) == state["runs"]


def test_the_lock_is_per_job(platform: Platform, replica: Platform) -> None:
    with job_lock(platform.db, "a") as held:
        assert held
        with job_lock(replica.db, "a") as again:
            assert not again
        with job_lock(replica.db, "b") as other:
            assert other
    with job_lock(replica.db, "a") as later:
        assert later


def test_job_intervals_are_validated(settings: Settings) -> None:
    assert load_settings(home=settings.home, outbox_interval_seconds=0).outbox_interval_seconds == 0
    assert load_settings(home=settings.home, maintenance_interval_seconds=0.5)
    for bad in ({"outbox_interval_seconds": 0.01}, {"consent_review_interval_seconds": -1}):
        with pytest.raises(ConfigError) as err:
            load_settings(home=settings.home, **bad)
        assert f"HVELV_{next(iter(bad)).upper()}" in str(err.value)
    with pytest.raises(ConfigError, match="HVELV_JOBS_START_DELAY_SECONDS"):
        load_settings(home=settings.home, jobs_start_delay_seconds=7200)


def test_the_cli_lists_and_runs_jobs(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = platform.settings
    monkeypatch.setenv("HVELV_DATABASE_URL", settings.resolved_database_url)
    home = ["--home", str(settings.home)]
    runner = CliRunner()
    listed = runner.invoke(cli, ["jobs", "list", *home, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["job"] for r in rows] == ["files.sweep", "outbox.send", "consent.proxy_review"]
    assert all(r["last_run"] is None for r in rows)
    assert rows[1]["setting"] == "HVELV_OUTBOX_INTERVAL_SECONDS"

    ran = runner.invoke(cli, ["jobs", "run", "consent.proxy_review", *home, "--json"])
    assert ran.exit_code == 0, ran.output
    run = json.loads(ran.stdout)
    assert (run["outcome"], run["result"]) == (
        "ok",
        {"projects": 0, "ended": 0, "requests": 0},
    )
    listed = runner.invoke(cli, ["jobs", "list", *home, "--json"])
    last = {r["job"]: r["last_run"] for r in json.loads(listed.stdout)}
    assert last["consent.proxy_review"]["outcome"] == "ok"
    assert last["consent.proxy_review"]["manual"] is True
    assert last["consent.proxy_review"]["actor"] == "local:admin"
    assert last["files.sweep"] is None
    table = runner.invoke(cli, ["jobs", "list", *home])
    assert table.exit_code == 0
    assert "consent.proxy_review" in table.stdout

    with job_lock(platform.db, "files.sweep") as held:  # a run going on elsewhere
        assert held
        busy = runner.invoke(cli, ["jobs", "run", "files.sweep", *home])
    assert busy.exit_code == 1
    assert "busy" in busy.output
    unknown = runner.invoke(cli, ["jobs", "run", "nope", *home])
    assert unknown.exit_code == 2
    assert "files.sweep" in unknown.output
