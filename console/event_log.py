"""The event stream panel: the latest records, newest first, in words."""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from keyturn.console.wording import clock_time, describe, record_family

__all__ = ["EventLog"]

_FAMILIES = frozenset({"grant", "request", "lockdown", "daemon", "access"})


class EventLog(ScrollView, can_focus=True):
    """The latest records, newest at the top, one sentence each."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "event-log--time",
        "event-log--grant",
        "event-log--request",
        "event-log--lockdown",
        "event-log--daemon",
        "event-log--access",
        "event-log--empty",
    }

    def __init__(self, records: deque[dict[str, Any]], *, id: str | None = None):
        super().__init__(id=id)
        self.records = records
        self._base_style = Style()
        """The state's recent records, newest first (shared, not copied)."""

    def records_changed(self) -> None:
        """New records arrived: show them at the top."""
        self.virtual_size = Size(
            self.scrollable_content_region.width, len(self.records)
        )
        self.refresh()

    def render_lines(self, crop: Region) -> list[Strip]:
        """Draw the lines Textual asks for, computing the base style once."""
        self._base_style = self.rich_style
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        """One record per line: time, ``seq``, and what happened."""
        width = self.scrollable_content_region.width
        position = self.scroll_offset.y + y
        if position >= len(self.records):
            return self._empty(position, width)
        record = self.records[position]
        family = record_family(record)
        style = self._base_style
        if family in _FAMILIES:
            style = style + self.get_component_rich_style(f"event-log--{family}")
        time_style = self._base_style + self.get_component_rich_style("event-log--time")
        stamp = (
            f"{clock_time(float(record.get('at') or 0.0))} #{record.get('seq', '-')} "
        )
        segments = [Segment(stamp, time_style), Segment(describe(record), style)]
        return (
            Strip(segments).extend_cell_length(width, self._base_style).crop(0, width)
        )

    def _empty(self, position: int, width: int) -> Strip:
        if position == 0 and not self.records:
            style = self._base_style + self.get_component_rich_style("event-log--empty")
            text = "no events yet".ljust(width)[:width]
            return Strip([Segment(text, style)], width)
        return Strip.blank(width, self._base_style)
