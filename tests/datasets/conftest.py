"""Fixtures for dataset tests: a store, a small synthetic cohort, a pseudonymiser, ingest."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from hvelv.datasets.engine import EngineSettings, QueryEngine
from hvelv.datasets.ingest import IngestOptions, IngestReport, ingest
from hvelv.datasets.keys import ParticipantKeys
from hvelv.datasets.storage import BlobLocation
from hvelv.datasets.synthetic import Cohort, make_cohort
from hvelv.storage.base import BlobStore
from hvelv.storage.local import LocalBlobStore

PSEUDONYM_KEY = b"p" * 32
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def pseudonym_of(national_id: str) -> str:
    """A keyed HMAC, as the consent store will provide."""
    return "pn-" + hmac.new(PSEUDONYM_KEY, national_id.encode(), hashlib.sha256).hexdigest()[:20]


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture(scope="session")
def cohort() -> Cohort:
    return make_cohort(40, seed=11)


@pytest.fixture(scope="session")
def visits(cohort: Cohort) -> pa.Table:
    return pa.Table.from_batches(list(cohort.visits(600, batch_rows=128)))


Ingest = Callable[..., IngestReport]


def ingester(store: BlobStore) -> Ingest:
    """ingest() into ``store`` with test defaults; returns the report."""

    def run(
        source: Any,
        name: str = "visits",
        *,
        keys: ParticipantKeys,
        enrolled: Callable[[str], bool] | None = None,
        version: int = 1,
        target: BlobStore | None = None,
        progress: Callable[[int], None] | None = None,
        **options: Any,
    ) -> IngestReport:
        options.setdefault("participant_column", "national_id")
        options.setdefault("allow_synthetic", True)

        def pseudonymise(nid: str) -> str | None:
            if enrolled is not None and not enrolled(nid):
                return None
            return pseudonym_of(nid)

        return ingest(
            source,
            name=name,
            version=version,
            location=BlobLocation(
                target or store, f"proj-1/datasets/{name}/{version}", os.urandom(32)
            ),
            options=IngestOptions(**options),
            pseudonymise=pseudonymise,
            keys=keys,
            created_by="data-manager-1",
            now=NOW,
            progress=progress,
        )

    return run


@pytest.fixture
def run_ingest(store: BlobStore) -> Ingest:
    return ingester(store)


@pytest.fixture
def engine() -> Iterator[QueryEngine]:
    eng = QueryEngine(EngineSettings(memory_limit="512MB", threads=1))
    yield eng
    eng.close()
