"""Request body base: unknown fields and booleans-for-numbers are refused."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import pytest
from pydantic import Field, ValidationError

from hvelv.text import RequestBody


class Body(RequestBody):
    when: dt.datetime | None = None
    day: dt.date | None = None
    count: int = 0
    ratio: float | None = None
    limit: Annotated[int | None, Field(ge=0)] = None
    flag: bool = False
    name: str = ""


@pytest.mark.parametrize("field", ["count", "ratio", "limit"])
def test_booleans_for_numbers_are_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="must be a number"):
        Body.model_validate({field: True})
    with pytest.raises(ValidationError, match="must be a number"):
        Body.model_validate({field: "5"})


def test_real_values_pass() -> None:
    body = Body.model_validate({"count": 3, "ratio": 0.5, "limit": None, "flag": True, "name": "x"})
    assert (body.count, body.ratio, body.limit, body.flag) == (3, 0.5, None, True)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        Body.model_validate({"other": 1})


@pytest.mark.parametrize("field", ["when", "day"])
def test_numbers_for_dates_are_refused(field: str) -> None:
    with pytest.raises(ValidationError, match="ISO 8601"):
        Body.model_validate({field: 1.5e-256})
    assert Body.model_validate({field: "2026-01-31"}) is not None
