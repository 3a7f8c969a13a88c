"""A sorted, filterable index of rows, kept in order one change at a time.

The console's tables draw only the rows on screen, straight from the live
state. What they need from it is "which row id sits at position N" and "at
which position sits row id X", both cheap at 100,000 rows. :class:`SortedIndex`
keeps a sorted list of sort keys (each ending with the row id, so keys are
unique) and, while a filter is set, a second sorted list of the keys that
match. A change moves one key with a binary search; a full sort happens only
when the sort column changes or a snapshot replaces everything.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["BULK_REMOVE_MIN", "SortKey", "SortedIndex"]

logger = logging.getLogger(__name__)

BULK_REMOVE_MIN = 256
"""Removing at least this many rows at once filters the lists in one pass."""

SortKey = tuple[Any, ...]
"""A row's sort values; the index appends the row id to make it unique."""

Row = TypeVar("Row")


class SortedIndex(Generic[Row]):
    """Row ids in display order, with an optional case-insensitive text filter.

    Args:
        key: The sort values of a row; values of one position must compare.
        text: The text a filter searches in a row (compared lower-cased).
    """

    def __init__(
        self,
        key: Callable[[Row], SortKey],
        text: Callable[[Row], str],
    ) -> None:
        self._key_of = key
        self._text_of = text
        self._keys: dict[str, SortKey] = {}
        self._texts: dict[str, str] = {}
        self._all: list[SortKey] = []
        self._shown: list[SortKey] = self._all
        self._needle = ""
        self.descending = False
        """Whether positions count from the end of the sort order."""

    def __len__(self) -> int:
        """The number of rows shown (those matching the filter)."""
        return len(self._shown)

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._keys

    @property
    def total(self) -> int:
        """The number of rows, filter or not."""
        return len(self._all)

    @property
    def needle(self) -> str:
        """The current filter text, lower-cased; empty when there is none."""
        return self._needle

    def put(self, row_id: str, row: Row) -> None:
        """Add a row or move it to where its new values sort."""
        key = (*self._key_of(row), row_id)
        text = self._text_of(row).lower()
        old_key = self._keys.get(row_id)
        old_text = self._texts.get(row_id, "")
        self._texts[row_id] = text
        if old_key == key and self._matches(old_text) == self._matches(text):
            return
        if old_key is not None:
            self._discard(old_key, old_text)
        self._keys[row_id] = key
        self._insert(key, text)

    def remove(self, row_id: str) -> None:
        """Drop a row; an unknown id is ignored."""
        key = self._keys.pop(row_id, None)
        text = self._texts.pop(row_id, "")
        if key is not None:
            self._discard(key, text)

    def remove_many(self, row_ids: Iterable[str]) -> None:
        """Drop many rows, in one pass over the lists when there are many."""
        gone = [row_id for row_id in row_ids if row_id in self._keys]
        if len(gone) < BULK_REMOVE_MIN:
            for row_id in gone:
                self.remove(row_id)
            return
        dropped = set(gone)
        for row_id in gone:
            del self._keys[row_id]
            del self._texts[row_id]
        self._all = [key for key in self._all if key[-1] not in dropped]
        self._refilter()

    def rebuild(self, rows: Mapping[str, Row]) -> None:
        """Replace every row at once (a snapshot), sorting once."""
        self._keys = {
            row_id: (*self._key_of(row), row_id) for row_id, row in rows.items()
        }
        self._texts = {
            row_id: self._text_of(row).lower() for row_id, row in rows.items()
        }
        self._all = sorted(self._keys.values())
        self._refilter()

    def resort(self, key: Callable[[Row], SortKey], rows: Mapping[str, Row]) -> None:
        """Sort by other values; ``rows`` must hold every row of the index."""
        self._key_of = key
        self._keys = {row_id: (*key(rows[row_id]), row_id) for row_id in self._keys}
        self._all = sorted(self._keys.values())
        self._refilter()

    def set_filter(self, needle: str) -> None:
        """Show only rows whose text contains ``needle`` (empty shows all)."""
        needle = needle.strip().lower()
        if needle == self._needle:
            return
        self._needle = needle
        self._refilter()

    def id_at(self, position: int) -> str:
        """The id of the row shown at a position (0 is the top).

        Raises:
            IndexError: past the last shown row.
        """
        if position < 0:
            raise IndexError(position)
        return str(self._shown[self._slot(position)][-1])

    def ids(self, start: int, stop: int) -> list[str]:
        """The ids shown from ``start`` up to ``stop`` (exclusive), in order."""
        stop = min(stop, len(self._shown))
        return [self.id_at(position) for position in range(max(0, start), stop)]

    def position_of(self, row_id: str) -> int | None:
        """Where a row is shown, or None when it is unknown or filtered out."""
        key = self._keys.get(row_id)
        if key is None:
            return None
        slot = bisect.bisect_left(self._shown, key)
        if slot >= len(self._shown) or self._shown[slot] != key:
            return None
        return self._slot(slot)

    def _slot(self, position: int) -> int:
        """Turn a shown position into a list slot, and back (it is symmetric)."""
        if self.descending:
            return len(self._shown) - 1 - position
        return position

    def _matches(self, text: str) -> bool:
        return not self._needle or self._needle in text

    def _insert(self, key: SortKey, text: str) -> None:
        bisect.insort(self._all, key)
        if self._shown is not self._all and self._matches(text):
            bisect.insort(self._shown, key)

    def _discard(self, key: SortKey, text: str) -> None:
        _delete(self._all, key)
        if self._shown is not self._all and self._matches(text):
            _delete(self._shown, key)

    def _refilter(self) -> None:
        if not self._needle:
            self._shown = self._all
            return
        texts = self._texts
        needle = self._needle
        self._shown = [key for key in self._all if needle in texts[key[-1]]]


def _delete(keys: list[SortKey], key: SortKey) -> None:
    slot = bisect.bisect_left(keys, key)
    if slot < len(keys) and keys[slot] == key:
        del keys[slot]
    else:
        logger.debug("sort key %r was not in the index", key[-1])
