"""`hvelv jobs list|run NAME`: the server's background jobs, their last recorded runs, and a run
by hand (it waits for nobody: a run going on elsewhere makes it exit 1 with ``busy``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Column, Table

from hvelv.cli.local import LOCAL_ACTOR, HomeOption, JsonOption, open_platform, settings_for
from hvelv.cli.output import console, fail, print_json
from hvelv.jobs import Scheduler, builtin_jobs, recorded_runs

jobs_app = typer.Typer(help="Background jobs of the server.", no_args_is_help=True)


def _interval(seconds: float) -> str:
    return "off" if seconds == 0 else f"every {seconds:g} s"


@jobs_app.command("list")
def jobs_list(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Each job, its interval, and its last recorded run (runs that did something, failed or
    were started by hand are recorded in the audit ledger)."""
    settings = settings_for(home)
    platform = open_platform(settings)
    try:
        rows: list[dict[str, Any]] = []
        for job in builtin_jobs(settings):
            last = recorded_runs(platform.db, job.name)
            rows.append(
                {
                    "job": job.name,
                    "interval_seconds": job.interval,
                    "setting": f"HVELV_{job.setting.upper()}",
                    "description": job.description,
                    "last_run": last[0] if last else None,
                }
            )
    finally:
        platform.close()
    if as_json:
        print_json(rows)
        return
    table = Table(Column("job", no_wrap=True), "schedule", "last recorded run", "outcome", "result")
    for row in rows:
        last = row["last_run"]
        table.add_row(
            row["job"],
            f"{_interval(row['interval_seconds'])} ({row['setting']})",
            f"{last['finished_at']} on {last['node']}" if last else "—",
            last["outcome"] + (f" ({last['error']})" if last["error"] else "") if last else "—",
            ", ".join(f"{k}={v}" for k, v in last["result"].items()) if last else "—",
        )
    console.print(table)


@jobs_app.command("run")
def jobs_run(
    name: Annotated[str, typer.Argument(help="The job, as `hvelv jobs list` names it.")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run one job now (exit 0 ok · 1 failed or busy elsewhere · 2 unknown job)."""
    settings = settings_for(home)
    jobs = builtin_jobs(settings)
    names = [job.name for job in jobs]
    if name not in names:
        fail(f"no job {name!r}; the jobs are: {', '.join(names)}", 2)
    platform = open_platform(settings)
    try:
        run = Scheduler(platform, jobs).run_once(name, actor=LOCAL_ACTOR, manual=True)
    finally:
        platform.close()
    if as_json:
        print_json(run.to_dict())
    else:
        result = ", ".join(f"{k}={v}" for k, v in run.result.items())
        console.print(f"{run.job}: {run.outcome}" + (f" ({result})" if result else ""))
    if run.outcome == "failed":
        fail(f"the job failed: {run.error} (see the log)")
    if run.outcome == "busy":
        fail("a run of this job is going on elsewhere; try again later")
