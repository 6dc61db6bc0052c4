"""File path rules: refused with a named reason, never silently changed (except NFC)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvelv.errors import InvalidInput
from hvelv.files.paths import MAX_COMPONENT_BYTES, MAX_DEPTH, clean_path, clean_prefix


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("a/\x00b", "control_character"),
        ("a\nb", "control_character"),
        ("a\x7fb", "control_character"),
        ("a\x85b", "control_character"),
        ("a\\b", "control_character"),
        ("a\u2028b", "control_character"),
        ("../up", "traversal"),
        ("a/./b", "traversal"),
        ("a//b", "traversal"),
        ("a/", "traversal"),
        ("x" * (MAX_COMPONENT_BYTES + 1), "name_too_long"),
        ("/".join(["a"] * (MAX_DEPTH + 1)), "too_deep"),
        ("/".join(["x" * 200] * 6), "too_long"),
    ],
)
def test_refusals_name_the_rule(raw: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        clean_path(raw)
    assert caught.value.details == reason
    assert caught.value.status == 422


def test_accepted_paths() -> None:
    assert clean_path("data/2026/raw file (1).csv") == "data/2026/raw file (1).csv"
    assert clean_path("e\u0301") == "\u00e9"
    assert clean_path(".hidden/..dots..") == ".hidden/..dots.."
    assert clean_prefix("") == ""
    assert clean_prefix("a/") == "a/"
    assert clean_prefix("a/b") == "a/b"


@given(st.text(max_size=60))
def test_accepted_paths_are_safe_and_stable(raw: str) -> None:
    try:
        path = clean_path(raw)
    except InvalidInput:
        return
    parts = path.split("/")
    assert not path.startswith("/")
    assert all(part not in ("", ".", "..") for part in parts)
    assert all(unicodedata.category(ch) != "Cc" for ch in path)
    assert path == unicodedata.normalize("NFC", path)
    assert clean_path(path) == path  # idempotent
