"""Errors of the datasets capability, in the platform's one error shape (:mod:`hvelv.errors`)."""

from __future__ import annotations

from typing import Any

from hvelv.errors import HvelvError

__all__ = [
    "DatasetChanged",
    "DatasetError",
    "DatasetNotQueryable",
    "IngestError",
    "IngestRejected",
    "QueryFailed",
    "QueryLimitExceeded",
    "RefusedQuery",
]


class DatasetError(HvelvError):
    """Base class of dataset errors."""

    status = 400
    code = "dataset_error"


class RefusedQuery(DatasetError):
    """The SQL was refused before it ran. ``reason`` is a stable code, ``detail`` names what."""

    code = "query_refused"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"query refused: {detail}", details={"reason": reason, "refused": detail})
        self.reason = reason
        self.detail = detail


class QueryLimitExceeded(DatasetError):
    """A query went over a row, byte or time limit; ``limit`` names which."""

    status = 422
    code = "query_limit_exceeded"

    def __init__(self, limit: str, maximum: float, message: str) -> None:
        super().__init__(message, details={"limit": limit, "maximum": maximum})
        self.limit = limit
        self.maximum = maximum


class QueryFailed(DatasetError):
    """DuckDB rejected the (vetted) query, e.g. an unknown column or a type error."""

    code = "query_failed"


class DatasetNotQueryable(DatasetError):
    """A dataset without a participant column that is not marked as holding no personal data."""

    status = 409
    code = "dataset_not_queryable"


class DatasetChanged(DatasetError):
    """A version the query was to read was deleted while it ran; the next query uses the
    dataset's new current version (or refuses the name if none is left)."""

    status = 409
    code = "dataset_changed"


class IngestError(DatasetError):
    """The source cannot be ingested as asked (format, columns, types, rules)."""

    status = 422
    code = "ingest_invalid"


class IngestRejected(DatasetError):
    """Rows were rejected and the ingest was all-or-nothing: nothing was stored."""

    status = 422
    code = "ingest_rejected"

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message, details=report.summary())
        self.report = report
