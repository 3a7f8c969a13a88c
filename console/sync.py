"""Keep a copy of the daemon's state exact: which records to apply, which to drop.

The daemon publishes every record with a sequence number ``seq`` and, once a
second, a heartbeat with the latest ``seq`` and its ``boot_id``. A subscriber
subscribes first, takes a snapshot, drops records the snapshot already holds
(``seq <= snapshot seq``) and applies the rest in order. It takes a new
snapshot when a record skips a number, when the heartbeat names a new boot,
or when a heartbeat announced a ``seq`` that has still not arrived by the
next heartbeat (the publisher dropped it). :class:`Sequencer` makes those
decisions; it holds no sockets, so it is tested on its own.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

__all__ = ["MAX_HELD", "Sequencer", "Verdict"]

logger = logging.getLogger(__name__)

MAX_HELD = 100_000
"""Records kept while waiting for a snapshot; later ones are caught as a gap."""


class Verdict(Enum):
    """What to do with one record from the stream."""

    APPLY = "apply"
    """The next record in order: apply it."""
    DROP = "drop"
    """Already in the state (or not a record): ignore it."""
    HOLD = "hold"
    """No snapshot yet: the sequencer keeps it for after the snapshot."""
    RESYNC = "resync"
    """Something was missed or the daemon restarted: take a new snapshot."""


class Sequencer:
    """Decides, record by record, how a live copy stays equal to the daemon's state.

    Attributes:
        seq: The ``seq`` the copy reflects, or None while a snapshot is needed.
        boot_id: The boot of the daemon the copy comes from.
    """

    def __init__(self, max_held: int = MAX_HELD) -> None:
        self.seq: int | None = None
        self.boot_id = ""
        self._max_held = max_held
        self._held: list[dict[str, Any]] = []
        self._announced: int | None = None

    @property
    def synced(self) -> bool:
        """Whether the copy is current (False means: take a snapshot)."""
        return self.seq is not None

    def reset(self) -> None:
        """Forget the position: the next step is a snapshot."""
        self.seq = None
        self._held.clear()
        self._announced = None

    def on_record(self, record: dict[str, Any]) -> Verdict:
        """Judge one journaled record (anything but a heartbeat)."""
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return Verdict.DROP
        if self.seq is None:
            if len(self._held) < self._max_held:
                self._held.append(record)
            return Verdict.HOLD
        if seq <= self.seq:
            return Verdict.DROP
        if seq == self.seq + 1:
            self.seq = seq
            return Verdict.APPLY
        logger.info("resync: seq jumped from %d to %d", self.seq, seq)
        self.reset()
        return Verdict.RESYNC

    def on_heartbeat(self, heartbeat: dict[str, Any]) -> Verdict:
        """Judge a heartbeat: RESYNC on a new boot or a lost record, else DROP."""
        if self.seq is None:
            return Verdict.DROP
        boot_id = heartbeat.get("boot_id")
        if isinstance(boot_id, str) and boot_id and boot_id != self.boot_id:
            logger.info("resync: daemon boot changed to %s", boot_id)
            self.reset()
            return Verdict.RESYNC
        if self._announced is not None and self.seq < self._announced:
            logger.info(
                "resync: seq %d announced, still at %d", self._announced, self.seq
            )
            self.reset()
            return Verdict.RESYNC
        latest = heartbeat.get("seq")
        behind = isinstance(latest, int) and latest > self.seq
        self._announced = latest if behind else None
        return Verdict.DROP

    def on_snapshot(self, seq: int, boot_id: str) -> tuple[list[dict[str, Any]], bool]:
        """Take a snapshot's position and release the records held for it.

        Args:
            seq: The snapshot's ``seq``.
            boot_id: The snapshot's ``boot_id``.

        Returns:
            The held records to apply after the snapshot, in order, and whether
            they showed a gap (then the sequencer wants another snapshot).
        """
        self.seq = seq
        self.boot_id = boot_id
        self._announced = None
        held, self._held = self._held, []
        ready: list[dict[str, Any]] = []
        for record in held:
            verdict = self.on_record(record)
            if verdict is Verdict.RESYNC:
                return [], True
            if verdict is Verdict.APPLY:
                ready.append(record)
        return ready, False
