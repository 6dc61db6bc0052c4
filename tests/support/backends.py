"""Which real backends the tests use, and the rule for missing ones.

``HVELV_TEST_DATABASE_URL`` selects PostgreSQL (the suite runs once per backend in CI);
without it the tests use SQLite files. A missing backend skips with a reason on a laptop
but fails loudly when ``HVELV_REQUIRE_BACKENDS=1``.
"""

from __future__ import annotations

import os

import pytest


def required() -> bool:
    return os.environ.get("HVELV_REQUIRE_BACKENDS", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """Skip (laptop) or fail (CI) because a backend is not available."""
    if required():
        pytest.fail(f"required backend missing: {reason}", pytrace=False)
    pytest.skip(reason)


def database_url() -> str | None:
    return os.environ.get("HVELV_TEST_DATABASE_URL") or None
