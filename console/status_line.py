"""The status line: connected or not and since when, ``seq``, counts, who we are."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from keyturn.console.state import Counts
from keyturn.console.wording import clock_time, compact_duration

__all__ = ["Connection", "StatusLine"]


@dataclass(frozen=True, slots=True)
class Connection:
    """What the console knows about its link to the daemon."""

    connected: bool = False
    since: float = 0.0
    """When it connected, or when the daemon was last heard from."""
    reason: str = "connecting"
    """Why it is not connected (empty when connected)."""
    ever: bool = False
    """Whether the daemon ever answered this console."""


class StatusLine(Static):
    """One line: link state, identity, ``seq`` and counts."""

    _shown = ""
    """The text on screen, so an unchanged line is not repainted."""

    def show(
        self,
        connection: Connection,
        counts: Counts,
        seq: str,
        who: str,
        now: float,
    ) -> None:
        """Redraw with the current values."""
        self.set_class(not connection.connected, "-disconnected")
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append_text(self._link_text(connection, now))
        text.append(f" · {who} · seq {seq} · {counts.active} active")
        if counts.revoking:
            text.append(f", {counts.revoking} revoking")
        text.append(f" · {counts.pending} pending")
        if text.plain != self._shown:
            self._shown = text.plain
            self.update(text, layout=False)

    @staticmethod
    def _link_text(connection: Connection, now: float) -> Text:
        if connection.connected:
            since = clock_time(connection.since)
            return Text(f"● connected since {since}", style="bold")
        if not connection.ever:
            return Text(f"○ not connected: {connection.reason}", style="bold")
        ago = compact_duration(now - connection.since)
        return Text(
            f"○ DISCONNECTED, last heard {clock_time(connection.since)} ({ago} ago)"
            f": {connection.reason}; reconnecting",
            style="bold",
        )
