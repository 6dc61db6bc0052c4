"""String types for request bodies and parameters: no NUL or control characters.

PostgreSQL cannot store NUL in text, and control characters in names end up in logs and
terminals; both are refused at the edge with a clear 422.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Annotated, Any, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


Line = Annotated[str, Field(pattern=LINE_PATTERN)]
Text = Annotated[str, Field(pattern=TEXT_PATTERN)]


def _scalar(annotation: Any) -> type | None:
    """``int``/``float``, ``datetime``/``date``, or None, looking inside Optional/Annotated."""
    if annotation is bool:
        return None
    if annotation in (int, float):
        return float
    if annotation in (dt.datetime, dt.date):
        return dt.date
    if get_origin(annotation) is Annotated:
        return _scalar(get_args(annotation)[0])
    kinds = {_scalar(arg) for arg in get_args(annotation) if arg is not type(None)}
    return kinds.pop() if len(kinds) == 1 else None


class RequestBody(BaseModel):
    """Base of every JSON request body. Unknown fields are refused, and so are values of
    another JSON type than the schema says, which pydantic's lax mode would convert:
    ``true`` or ``"5"`` for a number, a number for a date-time."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _json_types(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, key, kind in _typed_fields(cls):
                value = data.get(key)
                if value is None:
                    continue
                if kind is float and (isinstance(value, bool | str)):
                    raise ValueError(f"{name} must be a number")
                if kind is dt.date and not isinstance(value, str):
                    raise ValueError(f"{name} must be an ISO 8601 date or date-time string")
        return data


@functools.cache
def _typed_fields(model: type[BaseModel]) -> tuple[tuple[str, str, type], ...]:
    """(name, JSON key, kind) of a body's number and date fields, worked out once per class
    (it ran for every field of every body, responses that reuse a body class included)."""
    found = []
    for name, info in model.model_fields.items():
        kind = _scalar(info.annotation)
        if kind is not None:
            found.append((name, info.alias or name, kind))
    return tuple(found)


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]|$)")


def _iso_only(value: object) -> object:
    """Only ISO 8601 text, as documented (pydantic would also take Unix numbers, 1e-5...)."""
    if not isinstance(value, str) or not _ISO_DATE.match(value.strip()):
        raise ValueError("use an ISO 8601 date-time such as 2026-01-31T12:00:00Z")
    return value


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2026-01-31T12:00:00Z")
    return value


IsoTime = Annotated[dt.datetime, BeforeValidator(_iso_only), AfterValidator(_aware)]
"""A time in a query parameter: ISO 8601 text with a time zone, nothing else."""
