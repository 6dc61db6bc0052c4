"""`hvelv demo` seeds a queryable dataset whose counts follow consent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hvelv.cli.local import open_platform
from hvelv.cli.serve import seed_demo
from hvelv.config import load_settings
from hvelv.consent import service as consent
from hvelv.consent.model import EventKind, WithdrawalScope
from hvelv.consent.models import Participant
from hvelv.datasets import service
from hvelv.datasets.demo import DEMO_QUERY


def test_demo_dataset_is_queryable_and_follows_a_withdrawal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HVELV_DATABASE_URL", "HVELV_STORAGE_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(home=tmp_path / "demo")
    seeded = seed_demo(settings)
    data = seeded["datasets"]
    assert data["dataset_rows"] == 1500
    platform = open_platform(settings)
    try:
        who = service.AuditContext("user:bjorn")
        pid = seeded["project"]
        spec = service.QuerySpec(
            sql="SELECT count(DISTINCT participant) AS n, count(*) AS rows FROM visits",
            purpose="DUO:0000006",
        )
        before = service.run_query(platform, who, pid, spec).result.table.to_pylist()[0]
        assert 0 < before["n"] <= data["consenting"]
        assert before["rows"] < 1500
        assert (
            service.run_query(
                platform, who, pid, service.QuerySpec(DEMO_QUERY, "DUO:0000006")
            ).result.table.num_rows
            == 5
        )

        participant_ids = (
            service.run_query(
                platform,
                who,
                pid,
                service.QuerySpec("SELECT participant FROM visits LIMIT 1", "HMB"),
            )
            .result.table.column(0)
            .to_pylist()
        )

        def withdraw(trail: Any) -> None:
            session = trail.session
            person = session.query(Participant).filter_by(pseudonym=participant_ids[0]).one()
            consent.record_event(
                session,
                trail,
                person,
                kind=EventKind.WITHDRAWN,
                acting=consent.PARTICIPANT,
                channel="web",
                assurance="substantial",
                scope=WithdrawalScope.STOP_USE,
            )

        platform.run_as("local:test", withdraw)
        after = service.run_query(platform, who, pid, spec).result.table.to_pylist()[0]
        assert after["n"] == before["n"] - 1
    finally:
        platform.close()
