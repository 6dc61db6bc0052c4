"""Build a BlobStore from a small typed settings object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hvelv.storage.base import BlobStore

__all__ = ["StorageSettings", "build_store"]


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where objects live. The secret key is left out of ``repr``."""

    backend: Literal["local", "s3"] = "local"
    root: Path | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_bucket: str | None = None
    s3_key_prefix: str = ""
    s3_create_bucket: bool = False


def build_store(settings: StorageSettings) -> BlobStore:
    """The configured store; raises ValueError on incomplete settings."""
    if settings.backend == "local":
        if settings.root is None:
            raise ValueError("storage backend 'local' needs a root directory")
        from hvelv.storage.local import LocalBlobStore

        return LocalBlobStore(settings.root)
    if settings.backend == "s3":
        if not settings.s3_bucket:
            raise ValueError("storage backend 's3' needs a bucket")
        if (settings.s3_access_key is None) != (settings.s3_secret_key is None):
            raise ValueError("give both the S3 access key and secret key, or neither")
        from hvelv.storage.s3 import S3BlobStore

        return S3BlobStore(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            key_prefix=settings.s3_key_prefix,
            create_bucket=settings.s3_create_bucket,
        )
    raise ValueError(f"unknown storage backend {settings.backend!r}")
