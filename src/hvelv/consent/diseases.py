"""A small disease hierarchy (MONDO-style ids) for DUO disease-specific (DS) matching.

The package ships ``data/diseases.json``: a few dozen common terms with MONDO ids, enough for
templates such as "cancer research" or "diabetes research". A deployment can load a larger
hierarchy (for instance an extract of MONDO) with :func:`parse_hierarchy`; the caller reads the
file, this module stays free of I/O apart from reading its own package data.

File format (JSON)::

    {"format": "hvelv-diseases/1",
     "terms": [{"id": "MONDO:0004992", "label": "cancer", "parents": ["MONDO:0000001"]}, ...]}

A term may have several parents (MONDO is a polyhierarchy). Loading rejects, with a
:class:`DiseaseHierarchyError` naming the term: a malformed document, a duplicate id, a parent
that is not defined in the file, and any cycle in the parent links.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final

__all__ = [
    "FORMAT",
    "DiseaseHierarchy",
    "DiseaseHierarchyError",
    "DiseaseTerm",
    "default_hierarchy",
    "parse_hierarchy",
]

FORMAT: Final = "hvelv-diseases/1"
_ID_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_.-]+$")


class DiseaseHierarchyError(ValueError):
    """The disease hierarchy document is not acceptable."""


@dataclass(frozen=True, slots=True)
class DiseaseTerm:
    """One disease term and the ids of its direct parents."""

    id: str
    label: str
    parents: tuple[str, ...] = ()


class DiseaseHierarchy:
    """An immutable, validated disease DAG with precomputed ancestor sets."""

    __slots__ = ("_ancestors", "_terms")

    def __init__(self, terms: Iterable[DiseaseTerm]) -> None:
        by_id: dict[str, DiseaseTerm] = {}
        for term in terms:
            if not _ID_RE.match(term.id):
                raise DiseaseHierarchyError(f"term id {term.id!r} is not of the form PREFIX:ID")
            if term.id in by_id:
                raise DiseaseHierarchyError(f"term {term.id} is defined twice")
            by_id[term.id] = term
        for term in by_id.values():
            for parent in term.parents:
                if parent not in by_id:
                    raise DiseaseHierarchyError(f"term {term.id} names unknown parent {parent}")
        self._terms: Mapping[str, DiseaseTerm] = by_id
        self._ancestors: Mapping[str, frozenset[str]] = _ancestor_sets(by_id)

    def __contains__(self, term_id: object) -> bool:
        return term_id in self._terms

    def __len__(self) -> int:
        return len(self._terms)

    def term(self, term_id: str) -> DiseaseTerm:
        """The term with this id (``KeyError`` when unknown)."""
        return self._terms[term_id]

    def ancestors(self, term_id: str) -> frozenset[str]:
        """All proper ancestors of ``term_id`` (empty for unknown terms)."""
        return self._ancestors.get(term_id, frozenset())

    def is_same_or_ancestor(self, ancestor: str, term_id: str) -> bool:
        """True when ``ancestor`` is ``term_id`` itself or one of its ancestors.

        An unknown id is only "the same" as itself: nothing is known about its place in the tree.
        """
        return ancestor == term_id or ancestor in self.ancestors(term_id)

    def related(self, a: str, b: str) -> bool:
        """True when one term is the other or an ancestor of it (they overlap)."""
        return self.is_same_or_ancestor(a, b) or self.is_same_or_ancestor(b, a)


def _ancestor_sets(by_id: Mapping[str, DiseaseTerm]) -> dict[str, frozenset[str]]:
    """Ancestors of every term; raises on a cycle (iterative DFS, no recursion limit)."""
    done: dict[str, frozenset[str]] = {}
    on_path: set[str] = set()
    for root in by_id:
        if root in done:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        on_path.add(root)
        while stack:
            node, i = stack[-1]
            parents = by_id[node].parents
            if i < len(parents):
                stack[-1] = (node, i + 1)
                parent = parents[i]
                if parent in on_path:
                    raise DiseaseHierarchyError(f"cycle in disease hierarchy through {parent}")
                if parent not in done:
                    on_path.add(parent)
                    stack.append((parent, 0))
                continue
            acc: set[str] = set()
            for parent in parents:
                acc.add(parent)
                acc.update(done[parent])
            done[node] = frozenset(acc)
            on_path.discard(node)
            stack.pop()
    return done


def _as_str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise DiseaseHierarchyError(f"{where} must be a non-empty string")
    return value


def parse_hierarchy(document: str | bytes) -> DiseaseHierarchy:
    """Parse and validate a disease hierarchy JSON document (see module doc for the format)."""
    try:
        data: object = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DiseaseHierarchyError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DiseaseHierarchyError("the document must be a JSON object")
    if data.get("format") != FORMAT:
        raise DiseaseHierarchyError(f'the document must declare "format": "{FORMAT}"')
    raw_terms = data.get("terms")
    if not isinstance(raw_terms, list):
        raise DiseaseHierarchyError('"terms" must be a list')
    terms: list[DiseaseTerm] = []
    for n, raw in enumerate(raw_terms):
        if not isinstance(raw, dict):
            raise DiseaseHierarchyError(f"terms[{n}] must be an object")
        term_id = _as_str(raw.get("id"), f"terms[{n}].id")
        label = _as_str(raw.get("label"), f"term {term_id}: label")
        parents = raw.get("parents", [])
        if not isinstance(parents, list):
            raise DiseaseHierarchyError(f"term {term_id}: parents must be a list")
        terms.append(
            DiseaseTerm(
                id=term_id,
                label=label,
                parents=tuple(_as_str(p, f"term {term_id}: parent") for p in parents),
            )
        )
    return DiseaseHierarchy(terms)


@cache
def default_hierarchy() -> DiseaseHierarchy:
    """The hierarchy shipped in the package (``hvelv/consent/data/diseases.json``)."""
    text = resources.files("hvelv.consent").joinpath("data/diseases.json").read_text("utf-8")
    return parse_hierarchy(text)
