"""Areas and file paths: what a project's file names may be.

A path is ``/``-separated, relative, NFC-normalised, with no empty, ``.`` or ``..``
component, no control characters and no backslash; components are at most 255 UTF-8
bytes, the whole path at most 1024 bytes and 32 levels deep. Anything else is refused
with a 422 that names the rule, never silently "fixed" (except NFC normalisation, so
that the same name typed on macOS and Linux is the same file).
"""

from __future__ import annotations

import unicodedata
from enum import StrEnum
from typing import Final

from hvelv.errors import InvalidInput

MAX_PATH_BYTES: Final = 1024
MAX_COMPONENT_BYTES: Final = 255
MAX_DEPTH: Final = 32


class Area(StrEnum):
    IMPORT = "import"  # incoming data
    FILES = "files"  # the project's working storage
    EXPORT = "export"  # what may leave


def _refuse(reason: str, message: str) -> InvalidInput:
    return InvalidInput(f"invalid file path: {message}", code="invalid_path", details=reason)


def _bad_character(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs") or ch in "\\\u2028\u2029"


def clean_path(raw: str) -> str:
    """The normalised path, or :class:`InvalidInput` naming the broken rule."""
    path = unicodedata.normalize("NFC", raw)
    if not path:
        raise _refuse("empty", "the path is empty")
    if path.startswith("/"):
        raise _refuse("absolute", "the path must be relative (no leading /)")
    if any(_bad_character(ch) for ch in path):
        raise _refuse("control_character", "control characters and backslashes are not allowed")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise _refuse("too_long", f"the path is longer than {MAX_PATH_BYTES} bytes")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise _refuse("too_deep", f"the path has more than {MAX_DEPTH} levels")
    for part in parts:
        if part in ("", ".", ".."):
            raise _refuse("traversal", "empty, '.' and '..' components are not allowed")
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise _refuse("name_too_long", f"a name is longer than {MAX_COMPONENT_BYTES} bytes")
    return path


def clean_prefix(raw: str) -> str:
    """A listing prefix: like a path, but it may be empty or end with ``/``."""
    if not raw:
        return ""
    if raw.endswith("/"):
        return clean_path(raw[:-1]) + "/"
    return clean_path(raw)
