"""String types for request bodies and parameters: no NUL or control characters.

PostgreSQL cannot store NUL in text, and control characters in names end up in logs and
terminals; both are refused at the edge with a clear 422.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


Line = Annotated[str, Field(pattern=LINE_PATTERN)]
Text = Annotated[str, Field(pattern=TEXT_PATTERN)]


def _numeric(annotation: Any) -> bool:
    """True for int/float annotations (also inside Optional/Annotated), never for bool."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) is Annotated:
        return _numeric(get_args(annotation)[0])
    args = get_args(annotation)
    return bool(args) and bool not in args and any(_numeric(arg) for arg in args)


class RequestBody(BaseModel):
    """Base of every JSON request body: unknown fields are refused, and so are JSON
    booleans where a number is expected (pydantic's lax mode would read ``true`` as 1)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                value = data.get(info.alias or name)
                if isinstance(value, bool) and _numeric(info.annotation):
                    raise ValueError(f"{name} must be a number, not true or false")
        return data
