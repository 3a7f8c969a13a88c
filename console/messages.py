"""Every message the daemon link posts to the console app, each a small dataclass.

Messages are named for what already happened. Those that only carry a
latest value (:class:`HeartbeatSeen`) replace an older one still queued, so a
burst costs one repaint; messages that carry records are never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from keyturn.console.state import ParsedRecord, PreparedSnapshot

__all__ = [
    "ActionRefused",
    "ActionSucceeded",
    "DaemonConnected",
    "DaemonLost",
    "EventsArrived",
    "HeartbeatSeen",
    "IdentityKnown",
    "LinkFailed",
    "SnapshotTaken",
]


@dataclass
class SnapshotTaken(Message):
    """A ``snapshot`` reply arrived: the whole state as of its ``seq``, indexed."""

    prepared: PreparedSnapshot


@dataclass
class EventsArrived(Message):
    """Records to apply, in order, each the next ``seq`` after the last."""

    records: list[ParsedRecord]
    """The records with their objects built (in the link's thread)."""


@dataclass
class HeartbeatSeen(Message):
    """The daemon's latest heartbeat; a newer one replaces an unhandled older one."""

    seq: int
    boot_id: str
    at: float

    def can_replace(self, message: Message) -> bool:
        """A newer heartbeat makes this one useless."""
        return isinstance(message, HeartbeatSeen)


@dataclass
class DaemonConnected(Message):
    """The daemon answered (first time, or again after it was lost)."""

    since: float
    """Wall-clock time of the answer."""
    restarted: bool
    """Whether it is a new boot of the daemon since the last contact."""


@dataclass
class DaemonLost(Message):
    """Nothing heard from the daemon for too long, or it said it stopped."""

    since: float
    """Wall-clock time it was last heard from."""
    reason: str


@dataclass
class IdentityKnown(Message):
    """The daemon said who this console is (the ``status`` op)."""

    identity: str
    role: str
    vendor: str


@dataclass
class LinkFailed(Message):
    """The link cannot work at all (bad configuration or key files)."""

    message: str


@dataclass
class ActionSucceeded(Message):
    """The daemon carried out an operator's action."""

    action: str
    """The action's id, e.g. ``revoke``."""
    summary: str
    """What was done, in words."""
    result: dict[str, Any]


@dataclass
class ActionRefused(Message):
    """The daemon refused an operator's action, or could not be reached."""

    action: str
    summary: str
    """What was attempted, in words."""
    code: str
    """The error code (``unreachable`` when no reply came)."""
    reason: str
    """The daemon's message."""
