"""A store fixture parametrized over every backend, for the BlobStore contract tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hvelv.storage.base import BlobStore
from hvelv.storage.local import LocalBlobStore
from hvelv.storage.s3 import S3BlobStore
from tests.support.seaweedfs import SeaweedFS

BUCKET = "hvelv-tests"


def make_s3_store(server: SeaweedFS, prefix: str, *, create: bool = True) -> S3BlobStore:
    return S3BlobStore(
        BUCKET,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key=server.access_key,
        secret_key=server.secret_key,
        key_prefix=prefix,
        create_bucket=create,
    )


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def reopen(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], BlobStore]]:
    """A factory giving a fresh store instance over the same data (another process)."""
    if backend == "local":
        yield lambda: LocalBlobStore(tmp_path / "store")
    else:
        server = request.getfixturevalue("seaweedfs_s3")
        prefix = f"t-{uuid.uuid4().hex}/"
        yield lambda: make_s3_store(server, prefix)


@pytest.fixture
def store(reopen: Callable[[], BlobStore]) -> BlobStore:
    return reopen()
