"""Shared fixtures. Backends skip with a reason unless HVELV_REQUIRE_BACKENDS=1 (CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.seaweedfs import SeaweedFS, WeedNotFoundError, find_weed, seaweedfs


def backends_required() -> bool:
    return os.environ.get("HVELV_REQUIRE_BACKENDS", "").strip().lower() in {"1", "true", "yes"}


def missing_backend(reason: str) -> None:
    """Skip, or fail loudly when the environment demands real backends."""
    if backends_required():
        pytest.fail(f"HVELV_REQUIRE_BACKENDS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def seaweedfs_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real SeaweedFS S3 endpoint for the whole session."""
    try:
        find_weed()
    except WeedNotFoundError as exc:
        missing_backend(str(exc))
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
