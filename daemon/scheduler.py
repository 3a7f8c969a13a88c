"""The expiry scheduler: one heap of deadlines, woken by the earliest.

Deadlines are stored as UTC wall-clock times (they survive a restart) and
kept here beside a monotonic deadline, so a wall clock set back never lets a
grant outlive its duration; a wall clock set forward pulls deadlines in.
Entries are never removed: an extended or ended grant leaves a stale entry
that :meth:`Scheduler.pop_due` hands out and the caller recognises by its
wall deadline no longer matching.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

__all__ = ["Due", "Scheduler"]

CLOCK_JUMP_S = 0.05
"""A change of the wall-minus-monotonic offset above this is a clock jump."""


@dataclass(frozen=True, slots=True)
class Due:
    """A deadline that has passed."""

    kind: str
    """``grant`` or ``request``."""
    object_id: str
    deadline: float
    """The wall-clock deadline it was scheduled for."""


class Scheduler:
    """A heap of (monotonic deadline, wall deadline, kind, id)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, float, str, str]] = []
        self._offset = time.time() - time.monotonic()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, kind: str, object_id: str, wall_deadline: float) -> None:
        """Schedule an object's deadline."""
        mono = wall_deadline - self._offset
        heapq.heappush(self._heap, (mono, wall_deadline, kind, object_id))

    def next_in(self) -> float | None:
        """Seconds until the earliest deadline (may be negative), or None when empty."""
        if not self._heap:
            return None
        return self._heap[0][0] - time.monotonic()

    def pop_due(self, limit: int) -> list[Due]:
        """Take up to ``limit`` deadlines that have passed, earliest first."""
        self._follow_wall_clock()
        now = time.monotonic()
        due: list[Due] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(due) < limit:
            _, wall, kind, object_id = heapq.heappop(heap)
            due.append(Due(kind, object_id, wall))
        return due

    def _follow_wall_clock(self) -> None:
        offset = time.time() - time.monotonic()
        if offset - self._offset > CLOCK_JUMP_S:
            # The wall clock jumped forward: deadlines by the wall come sooner.
            self._heap = [(min(m, w - offset), w, k, i) for m, w, k, i in self._heap]
            heapq.heapify(self._heap)
            self._offset = offset
        elif self._offset - offset > CLOCK_JUMP_S:
            # Set back: keep the monotonic deadlines, so nothing outlives its time.
            self._offset = offset
