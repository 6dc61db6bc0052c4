"""String types for request bodies and parameters: no NUL or control characters.

PostgreSQL cannot store NUL in text, and control characters in names end up in logs and
terminals; both are refused at the edge with a clear 422.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


Line = Annotated[str, Field(pattern=LINE_PATTERN)]
Text = Annotated[str, Field(pattern=TEXT_PATTERN)]
