"""A sorted, filterable index of rows, kept in order one change at a time.

The console's tables draw only the rows on screen, straight from the live
state. What they need is "which row id sits at position N" and "at which
position sits row id X", both cheap at 100,000 rows, in whichever order the
operator picked. :class:`SortedIndex` keeps one sorted list of keys per order
(each key ends with the row id, so keys are unique), all of them up to date,
so switching the sort column costs nothing; while a filter is set it also
keeps the matching keys of the current order.

Each list is cut into chunks of a few hundred keys (:class:`SortedKeys`), so
adding or removing a key moves a few hundred pointers, not the whole list:
a burst of 20,000 records stays cheap at 100,000 rows.

The index does not hold the rows. Whoever changes a row passes the old value
along with the new one, so the old keys can be found without storing them.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["BULK_REMOVE_MIN", "CHUNK_SIZE", "SortKey", "SortedIndex", "SortedKeys"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 512
"""Keys per chunk of a sorted list; a chunk is split when twice as large."""
BULK_REMOVE_MIN = 256
"""Removing at least this many rows at once rebuilds the lists in one pass."""

SortKey = tuple[Any, ...]
"""A row's sort values; the index appends the row id to make it unique."""

Row = TypeVar("Row")


class SortedKeys:
    """A sorted list of unique keys, stored in chunks.

    Args:
        keys: Initial keys, already sorted.
    """

    __slots__ = ("_chunks", "_len", "_maxes", "_starts")

    def __init__(self, keys: list[SortKey] | None = None) -> None:
        keys = keys or []
        self._chunks = [
            keys[i : i + CHUNK_SIZE] for i in range(0, len(keys), CHUNK_SIZE)
        ]
        self._maxes = [chunk[-1] for chunk in self._chunks]
        self._starts: list[int] | None = None
        self._len = len(keys)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[SortKey]:
        return itertools.chain.from_iterable(self._chunks)

    def __getitem__(self, position: int) -> SortKey:
        starts = self._offsets()
        slot = bisect.bisect_right(starts, position) - 1
        return self._chunks[slot][position - starts[slot]]

    def add(self, key: SortKey) -> None:
        """Insert a key where it sorts."""
        self._starts = None
        self._len += 1
        if not self._chunks:
            self._chunks.append([key])
            self._maxes.append(key)
            return
        slot = bisect.bisect_left(self._maxes, key)
        if slot == len(self._maxes):
            slot -= 1
            self._chunks[slot].append(key)
            self._maxes[slot] = key
        else:
            bisect.insort(self._chunks[slot], key)
        if len(self._chunks[slot]) > 2 * CHUNK_SIZE:
            self._split(slot)

    def discard(self, key: SortKey) -> bool:
        """Remove a key; False when it was not there."""
        slot = bisect.bisect_left(self._maxes, key)
        if slot == len(self._maxes):
            return False
        chunk = self._chunks[slot]
        place = bisect.bisect_left(chunk, key)
        if place == len(chunk) or chunk[place] != key:
            return False
        del chunk[place]
        if chunk:
            self._maxes[slot] = chunk[-1]
        else:
            del self._chunks[slot]
            del self._maxes[slot]
        self._starts = None
        self._len -= 1
        return True

    def index(self, key: SortKey) -> int | None:
        """The position of a key, or None when it is not there."""
        slot = bisect.bisect_left(self._maxes, key)
        if slot == len(self._maxes):
            return None
        chunk = self._chunks[slot]
        place = bisect.bisect_left(chunk, key)
        if place == len(chunk) or chunk[place] != key:
            return None
        return self._offsets()[slot] + place

    def _split(self, slot: int) -> None:
        chunk = self._chunks[slot]
        half = len(chunk) // 2
        self._chunks[slot : slot + 1] = [chunk[:half], chunk[half:]]
        self._maxes[slot : slot + 1] = [chunk[half - 1], chunk[-1]]

    def _offsets(self) -> list[int]:
        if self._starts is None:
            starts = []
            total = 0
            for chunk in self._chunks:
                starts.append(total)
                total += len(chunk)
            self._starts = starts
        return self._starts


class SortedIndex(Generic[Row]):
    """Row ids in the order the operator picked, with an optional text filter.

    Args:
        orders: Every order the rows can be shown in: a name and the sort
            values of a row (values at one position must compare).
        text: The text a filter searches in a row (compared lower-cased).
        order: The order to start in.
    """

    def __init__(
        self,
        orders: Mapping[str, Callable[[Row], SortKey]],
        text: Callable[[Row], str],
        order: str,
    ) -> None:
        self._key_fns = dict(orders)
        self._text_of = text
        self._lists = {name: SortedKeys() for name in self._key_fns}
        self._texts: dict[str, str] = {}
        self._order = order
        self._shown: SortedKeys | None = None
        self._needle = ""
        self.descending = False
        """Whether positions count from the end of the order."""

    def __len__(self) -> int:
        """The number of rows shown (those matching the filter)."""
        return len(self._view)

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._texts

    @property
    def orders(self) -> tuple[str, ...]:
        """The names of the orders, in the order they were given."""
        return tuple(self._key_fns)

    @property
    def order(self) -> str:
        """The current order's name."""
        return self._order

    @property
    def total(self) -> int:
        """The number of rows, filter or not."""
        return len(self._texts)

    @property
    def needle(self) -> str:
        """The current filter text, lower-cased; empty when there is none."""
        return self._needle

    def key(self, row_id: str, row: Row, order: str | None = None) -> SortKey:
        """The full sort key of a row in an order (the current one by default)."""
        return (*self._key_fns[order or self._order](row), row_id)

    def put(self, row_id: str, row: Row, old: Row | None = None) -> None:
        """Add a row, or move it from where ``old`` (its previous value) sorted."""
        text = self._text_of(row).lower()
        old_text = self._texts.get(row_id)
        if old is not None and old_text is not None:
            self._move(row_id, old, old_text, row, text)
            return
        self._texts[row_id] = text
        for name, keys in self._lists.items():
            keys.add(self.key(row_id, row, name))
        if self._shown is not None and self._needle in text:
            self._shown.add(self.key(row_id, row))

    def remove(self, row_id: str, row: Row) -> None:
        """Drop a row, given its current value; an unknown id is ignored."""
        text = self._texts.pop(row_id, None)
        if text is None:
            return
        for name, keys in self._lists.items():
            keys.discard(self.key(row_id, row, name))
        if self._shown is not None and self._needle in text:
            self._shown.discard(self.key(row_id, row))

    def remove_many(self, rows: Iterable[tuple[str, Row]]) -> None:
        """Drop many rows, rebuilding the lists in one pass when there are many."""
        gone = [(row_id, row) for row_id, row in rows if row_id in self._texts]
        if len(gone) < BULK_REMOVE_MIN:
            for row_id, row in gone:
                self.remove(row_id, row)
            return
        dropped = {row_id for row_id, _ in gone}
        for row_id in dropped:
            del self._texts[row_id]
        for name, keys in self._lists.items():
            self._lists[name] = SortedKeys([k for k in keys if k[-1] not in dropped])
        self._refilter()

    def rebuild(self, rows: Mapping[str, Row]) -> None:
        """Replace every row at once (a snapshot), sorting each order once."""
        self._texts = {
            row_id: self._text_of(row).lower() for row_id, row in rows.items()
        }
        for name in self._key_fns:
            keys = sorted(self.key(row_id, row, name) for row_id, row in rows.items())
            self._lists[name] = SortedKeys(keys)
        self._refilter()

    def adopt_view(self, other: SortedIndex[Row]) -> None:
        """Take another index's order, direction and filter (after a snapshot)."""
        self._order = other.order if other.order in self._lists else self._order
        self.descending = other.descending
        self._needle = other.needle
        self._refilter()

    def set_order(self, order: str) -> None:
        """Show the rows in another of the orders; unknown names are ignored."""
        if order in self._lists and order != self._order:
            self._order = order
            self._refilter()

    def set_filter(self, needle: str) -> None:
        """Show only rows whose text contains ``needle`` (empty shows all).

        Typing on narrows what is already shown instead of searching all rows.
        """
        needle = needle.strip().lower()
        if needle == self._needle:
            return
        narrower = bool(self._needle) and self._needle in needle
        self._needle = needle
        self._refilter(self._shown if narrower else None)

    def id_at(self, position: int) -> str:
        """The id of the row shown at a position (0 is the top).

        Raises:
            IndexError: outside the shown rows.
        """
        if not 0 <= position < len(self._view):
            raise IndexError(position)
        return str(self._view[self._slot(position)][-1])

    def ids(self, start: int, stop: int) -> list[str]:
        """The ids shown from ``start`` up to ``stop`` (exclusive), in order."""
        stop = min(stop, len(self._view))
        return [self.id_at(position) for position in range(max(0, start), stop)]

    def position_of(self, row_id: str, row: Row) -> int | None:
        """Where a row (given its current value) is shown, or None."""
        if row_id not in self._texts:
            return None
        slot = self._view.index(self.key(row_id, row))
        return None if slot is None else self._slot(slot)

    @property
    def _view(self) -> SortedKeys:
        return self._lists[self._order] if self._shown is None else self._shown

    def _slot(self, position: int) -> int:
        """Turn a shown position into a list slot, and back (it is symmetric)."""
        return len(self._view) - 1 - position if self.descending else position

    def _move(self, row_id: str, old: Row, old_text: str, row: Row, text: str) -> None:
        self._texts[row_id] = text
        for name, keys in self._lists.items():
            old_key = self.key(row_id, old, name)
            new_key = self.key(row_id, row, name)
            if old_key != new_key:
                keys.discard(old_key)
                keys.add(new_key)
        if self._shown is not None:
            if self._needle in old_text:
                self._shown.discard(self.key(row_id, old))
            if self._needle in text:
                self._shown.add(self.key(row_id, row))

    def _refilter(self, among: SortedKeys | None = None) -> None:
        if not self._needle:
            self._shown = None
            return
        needle = self._needle
        matching = {row_id for row_id, text in self._texts.items() if needle in text}
        source = self._lists[self._order] if among is None else among
        self._shown = SortedKeys([key for key in source if key[-1] in matching])
