from __future__ import annotations

import json

import pytest

from hvelv.consent.diseases import (
    FORMAT,
    DiseaseHierarchy,
    DiseaseHierarchyError,
    DiseaseTerm,
    default_hierarchy,
    parse_hierarchy,
)

CANCER = "MONDO:0004992"
BREAST = "MONDO:0007254"
LUNG = "MONDO:0008903"
RESPIRATORY = "MONDO:0005087"
ROOT = "MONDO:0000001"
T2D = "MONDO:0005148"
DIABETES = "MONDO:0005015"


def doc(terms: object, fmt: object = FORMAT) -> str:
    return json.dumps({"format": fmt, "terms": terms})


def test_shipped_hierarchy_loads_from_package_data() -> None:
    h = default_hierarchy()
    assert h is default_hierarchy()  # cached
    assert 20 <= len(h) <= 60
    assert CANCER in h
    assert h.term(BREAST).label == "breast cancer"
    assert h.ancestors(BREAST) == {CANCER, ROOT}
    assert h.ancestors(LUNG) == {CANCER, RESPIRATORY, ROOT}  # several parents
    assert h.ancestors(ROOT) == frozenset()


def test_same_or_ancestor_and_related() -> None:
    h = default_hierarchy()
    assert h.is_same_or_ancestor(CANCER, BREAST)
    assert h.is_same_or_ancestor(BREAST, BREAST)
    assert not h.is_same_or_ancestor(BREAST, CANCER)
    assert not h.is_same_or_ancestor(DIABETES, BREAST)
    assert h.related(BREAST, CANCER)
    assert h.related(CANCER, BREAST)
    assert not h.related(T2D, BREAST)
    # unknown ids only match themselves
    assert h.is_same_or_ancestor("MONDO:9999999", "MONDO:9999999")
    assert not h.is_same_or_ancestor(CANCER, "MONDO:9999999")
    assert h.ancestors("MONDO:9999999") == frozenset()
    assert "MONDO:9999999" not in h


def test_deployment_hierarchy() -> None:
    h = parse_hierarchy(
        doc(
            [
                {"id": "X:3", "label": "leaf", "parents": ["X:2", "X:1"]},
                {"id": "X:2", "label": "mid", "parents": ["X:1"]},
                {"id": "X:1", "label": "root"},
            ]
        ).encode()
    )
    assert len(h) == 3
    assert h.ancestors("X:3") == {"X:1", "X:2"}
    assert h.term("X:1").parents == ()


def test_deep_hierarchy_has_no_recursion_limit() -> None:
    terms = [DiseaseTerm(f"D:{i}", f"d{i}", (f"D:{i - 1}",) if i else ()) for i in range(3000)]
    h = DiseaseHierarchy(reversed(terms))
    assert len(h.ancestors("D:2999")) == 2999


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[]", "JSON object"),
        (json.dumps({"terms": []}), "format"),
        (doc([], fmt="other/1"), "format"),
        (json.dumps({"format": FORMAT, "terms": {}}), "must be a list"),
        (doc(["X:1"]), "terms[0] must be an object"),
        (doc([{"label": "x"}]), "terms[0].id"),
        (doc([{"id": "X:1", "label": ""}]), "label"),
        (doc([{"id": "X:1", "label": "a", "parents": "X:2"}]), "parents must be a list"),
        (doc([{"id": "X:1", "label": "a", "parents": [1]}]), "parent must be"),
        (doc([{"id": "nocolon", "label": "a"}]), "PREFIX:ID"),
        (doc([{"id": "X:1", "label": "a"}, {"id": "X:1", "label": "b"}]), "defined twice"),
        (doc([{"id": "X:1", "label": "a", "parents": ["X:9"]}]), "unknown parent X:9"),
        (doc([{"id": "X:1", "label": "a", "parents": ["X:1"]}]), "cycle"),
        (
            doc(
                [
                    {"id": "X:1", "label": "a", "parents": ["X:3"]},
                    {"id": "X:2", "label": "b", "parents": ["X:1"]},
                    {"id": "X:3", "label": "c", "parents": ["X:2"]},
                ]
            ),
            "cycle",
        ),
    ],
)
def test_bad_documents(document: str | bytes, message: str) -> None:
    with pytest.raises(DiseaseHierarchyError, match=message.replace("[", r"\[")):
        parse_hierarchy(document)
