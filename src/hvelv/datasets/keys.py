"""Dense participant keys and permit masks: how consent is applied to rows fast.

Rows of a dataset carry the participant's pseudonym (what researchers see) and an internal dense
integer key (column :data:`PK_COLUMN`): the participant's enrolment ordinal in the project,
``0, 1, 2, ...``, assigned once and never reused. A consent snapshot for one use then is a boolean
array indexed by that key (:class:`Permits`), so "may this row be used" is one array lookup, and
the difference between two snapshots is one vectorised comparison.

:class:`ParticipantKeys` is the registry pseudonym -> key. It is append-only and must be
persisted with the project (a table later); :meth:`ParticipantKeys.pseudonyms` gives the order to
store. The consent store may keep the same ordinal for its own index, and then hands over masks
directly (:meth:`Permits.from_mask`) instead of pseudonym sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from hvelv.consent.snapshot import Snapshot

__all__ = ["PK_COLUMN", "ParticipantKeys", "Permits"]

#: internal column holding the dense participant key (never shown to researchers)
PK_COLUMN: Final = "_hv_pk"
_MAX_KEY: Final = int(np.iinfo(np.int32).max)


class ParticipantKeys:
    """Pseudonym <-> dense key registry of one project (append-only)."""

    def __init__(self, pseudonyms: Iterable[str] = ()) -> None:
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        for name in pseudonyms:
            self.key(name)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, pseudonym: object) -> bool:
        return pseudonym in self._index

    def key(self, pseudonym: str) -> int:
        """The key of ``pseudonym``, assigning the next one on first sight."""
        k = self._index.get(pseudonym)
        if k is None:
            k = len(self._names)
            if k > _MAX_KEY:
                raise OverflowError("too many participants for 32-bit keys")
            self._index[pseudonym] = k
            self._names.append(pseudonym)
        return k

    def get(self, pseudonym: str) -> int | None:
        """The key of an already registered pseudonym, or None."""
        return self._index.get(pseudonym)

    def pseudonym(self, key: int) -> str:
        return self._names[key]

    def names(self) -> Sequence[str]:
        """The live list of pseudonyms by key (read-only use, no copy)."""
        return self._names

    def pseudonyms(self) -> Sequence[str]:
        """Every registered pseudonym, in key order (what to persist)."""
        return tuple(self._names)

    def mask(self, permitted: Iterable[str]) -> npt.NDArray[np.bool_]:
        """A permit mask over all keys: True for the registered pseudonyms in ``permitted``.

        Pseudonyms not registered here (participants without rows) are ignored.
        """
        mask = np.zeros(len(self._names), dtype=np.bool_)
        index = self._index
        hits = [k for k in (index.get(p) for p in permitted) if k is not None]
        mask[np.asarray(hits, dtype=np.int64)] = True
        return mask


@dataclass(frozen=True, slots=True, eq=False)
class Permits:
    """Which participants (by dense key) one use may touch now, and the consent ledger position.

    Keys at or beyond ``len(mask)`` are not permitted (participants enrolled after the snapshot).
    """

    mask: npt.NDArray[np.bool_] = field(repr=False)
    ledger_position: int

    def __post_init__(self) -> None:
        if self.mask.dtype != np.bool_ or self.mask.ndim != 1:
            raise ValueError("a permit mask is a one-dimensional boolean array")

    @classmethod
    def from_mask(cls, mask: npt.ArrayLike, ledger_position: int) -> Permits:
        return cls(np.array(mask, dtype=np.bool_, copy=True), ledger_position)

    @classmethod
    def from_pseudonyms(
        cls, keys: ParticipantKeys, permitted: Iterable[str], ledger_position: int
    ) -> Permits:
        return cls(keys.mask(permitted), ledger_position)

    @classmethod
    def from_snapshot(cls, keys: ParticipantKeys, snapshot: Snapshot) -> Permits:
        """From a consent engine snapshot (:meth:`hvelv.consent.snapshot.ConsentIndex.snapshot`)."""
        return cls(keys.mask(snapshot.pseudonyms), snapshot.ledger_position)

    def padded(self, size: int) -> npt.NDArray[np.bool_]:
        """The mask over keys ``0..size-1`` (False where the snapshot does not reach)."""
        if len(self.mask) >= size:
            return self.mask[:size]
        out = np.zeros(size, dtype=np.bool_)
        out[: len(self.mask)] = self.mask
        return out

    @property
    def count(self) -> int:
        return int(self.mask.sum())
