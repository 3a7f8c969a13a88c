"""A table that draws only the rows on screen, straight from a sorted index.

A ``DataTable`` keeps a copy of every cell and repaints from that copy; a
table of grants whose countdowns change every second would have to rewrite
all of them. :class:`LineTable` keeps nothing: each visible line is built on
demand (Textual's line API) from the live state through a
:class:`~keyturn.console.index.SortedIndex`, so a tick costs the visible rows
only, whether the index holds a hundred rows or a hundred thousand.

The cursor follows a row id, not a position: when rows move, the highlight
moves with the selected row, and every action reads :attr:`selected_id` at
the moment of the key press.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from keyturn.console.index import SortedIndex

__all__ = ["Cell", "Column", "LineTable"]

logger = logging.getLogger(__name__)

HEADER_LINES = 1
"""Lines above the rows (the column titles)."""

Row = TypeVar("Row")

Cell = tuple[str, str | None]
"""A cell's text and the component class that styles it (None: the row's style)."""


@dataclass(frozen=True)
class Column:
    """One column of a :class:`LineTable`."""

    key: str
    """Stable id; also the sort id when the column sorts."""
    title: str
    width: int
    """Least width in cells."""
    grow: int = 0
    """Share of the width left over once every column has its least width."""
    align: Literal["left", "right"] = "left"
    wide_only: int = 0
    """Shown only when the table is at least this wide (0: always)."""


class LineTable(ScrollView, Generic[Row], can_focus=True):
    """Rows of a :class:`SortedIndex`, one line each; the cursor follows its row.

    Subclasses set :attr:`COLUMNS` (a column whose key names one of the
    index's orders sorts), and implement :meth:`row_cells` (and optionally
    :meth:`row_class`).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("pageup", "page_up", "Page up", show=False, id="table.page_up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="table.page_down"),
        Binding("home", "first", "First row", show=False, id="table.first"),
        Binding("end", "last", "Last row", show=False, id="table.last"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "line-table--header",
        "line-table--sorted",
        "line-table--cursor",
        "line-table--empty",
    }

    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    EMPTY_TEXT: ClassVar[str] = "nothing to show"

    class Sorted(Message):
        """The table's sort column or direction changed."""

        def __init__(self, table: LineTable[Any]) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> LineTable[Any]:
            """The table that was sorted."""
            return self.table

    def __init__(
        self,
        index: SortedIndex[Row],
        rows: Mapping[str, Row],
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.index = index
        self.rows = rows
        self.cursor_row = 0
        self.selected_id: str | None = None
        self.now = 0.0
        """The time rows are drawn at; the app sets it on each tick."""
        self._layout: list[tuple[Column, int]] = []
        self._layout_width = 0
        self._base_style = Style()

    @property
    def sort_key(self) -> str:
        """The column the rows are sorted by."""
        return self.index.order

    def set_rows(self, index: SortedIndex[Row], rows: Mapping[str, Row]) -> None:
        """Point the table at a new index and rows (after a snapshot)."""
        self.index = index
        self.rows = rows

    def row_cells(self, row_id: str, row: Row) -> dict[str, Cell]:
        """The cells of one row by column key (hidden columns may be left out)."""
        raise NotImplementedError

    def row_class(self, row_id: str, row: Row) -> str | None:
        """A component class for the whole row (new, ending, mine...), or None."""
        return None

    def data_changed(self) -> None:
        """Rows were added, removed or changed: keep the cursor on its row, repaint."""
        self._follow_selection()
        self._update_virtual_size()
        self.refresh()

    def refresh_shown_rows(self) -> None:
        """Repaint only the rows on screen (not the titles, not blank lines)."""
        top = self.scroll_offset.y
        room = self.scrollable_content_region.height - HEADER_LINES
        shown = min(len(self.index) - top, room)
        if shown > 0:
            self.refresh_lines(top + HEADER_LINES, shown)

    def sort_by(self, column_key: str, descending: bool | None = None) -> None:
        """Sort by a column; the same column again flips the direction."""
        if column_key not in self.index.orders:
            return
        if descending is None:
            flip = column_key == self.index.order
            descending = not self.index.descending if flip else False
        self.index.set_order(column_key)
        self.index.descending = descending
        self.data_changed()
        self._scroll_to_cursor()
        self.post_message(self.Sorted(self))

    def cycle_sort(self) -> None:
        """Sort by the next of the index's orders."""
        orders = self.index.orders
        current = orders.index(self.index.order)
        self.sort_by(orders[(current + 1) % len(orders)], descending=False)

    def set_filter(self, text: str) -> None:
        """Show only the rows whose text contains ``text``."""
        self.index.set_filter(text)
        self.data_changed()
        self._scroll_to_cursor()

    def select_row(self, row_id: str) -> bool:
        """Put the cursor on a row by id; False when it is not shown."""
        position = self._position_of(row_id)
        if position is None:
            return False
        self._move_to(position)
        return True

    def on_resize(self, event: events.Resize) -> None:
        """Lay the columns out for the new width."""
        self._layout = []
        self._update_virtual_size()

    def notify_style_update(self) -> None:
        """Styles changed: lay out again and repaint."""
        super().notify_style_update()
        self._layout = []

    def render_lines(self, crop: Region) -> list[Strip]:
        """Draw the lines Textual asks for, computing the base style once."""
        self._base_style = self.rich_style
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        """Draw one line: the titles at the top, else the row scrolled there."""
        width = self.scrollable_content_region.width
        if y < HEADER_LINES:
            return self._header_strip(width)
        position = self.scroll_offset.y + y - HEADER_LINES
        if position >= len(self.index):
            return self._blank_or_empty(position, width)
        row_id = self.index.id_at(position)
        row = self.rows.get(row_id)
        if row is None:
            return Strip.blank(width, self._base_style)
        return self._row_strip(row_id, row, position, width)

    def action_cursor_up(self) -> None:
        """Move the cursor one row up."""
        self._move_to(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        """Move the cursor one row down."""
        self._move_to(self.cursor_row + 1)

    def action_page_up(self) -> None:
        """Move the cursor one screen up."""
        self._move_to(self.cursor_row - self._page())

    def action_page_down(self) -> None:
        """Move the cursor one screen down."""
        self._move_to(self.cursor_row + self._page())

    def action_first(self) -> None:
        """Move the cursor to the first row."""
        self._move_to(0)

    def action_last(self) -> None:
        """Move the cursor to the last row."""
        self._move_to(len(self.index) - 1)

    def on_click(self, event: events.Click) -> None:
        """Select the clicked row (the mouse is optional, never needed)."""
        if event.y >= HEADER_LINES:
            self._move_to(self.scroll_offset.y + event.y - HEADER_LINES)

    def on_focus(self) -> None:
        """Show the cursor."""
        self.refresh()

    def on_blur(self) -> None:
        """Dim the cursor."""
        self.refresh()

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - HEADER_LINES - 1)

    def _move_to(self, position: int) -> None:
        count = len(self.index)
        position = max(0, min(position, count - 1))
        old_row = self.cursor_row
        self.cursor_row = position
        self.selected_id = self.index.id_at(position) if count else None
        self._refresh_rows(old_row, position)
        self._scroll_to_cursor()

    def _follow_selection(self) -> None:
        count = len(self.index)
        position = None
        if self.selected_id is not None:
            position = self._position_of(self.selected_id)
        if position is None:
            position = max(0, min(self.cursor_row, count - 1))
        self.cursor_row = position
        self.selected_id = self.index.id_at(position) if count else None

    def _position_of(self, row_id: str) -> int | None:
        row = self.rows.get(row_id)
        return None if row is None else self.index.position_of(row_id, row)

    def _refresh_rows(self, *positions: int) -> None:
        for position in positions:
            self.refresh_line(position + HEADER_LINES)

    def _scroll_to_cursor(self) -> None:
        visible = self.scrollable_content_region.height - HEADER_LINES
        top = self.scroll_offset.y
        if visible <= 0:
            return
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            target = self.cursor_row - visible + 1
            self.scroll_to(y=target, animate=False, immediate=True)

    def _update_virtual_size(self) -> None:
        width = self.scrollable_content_region.width
        lines = max(1, len(self.index)) + HEADER_LINES
        self.virtual_size = Size(width, lines)

    def _columns(self, width: int) -> list[tuple[Column, int]]:
        if self._layout and self._layout_width == width:
            return self._layout
        shown = [c for c in self.COLUMNS if c.wide_only <= width]
        spare = width - sum(c.width for c in shown) - (len(shown) - 1)
        growth = sum(c.grow for c in shown) or 1
        layout = []
        for column in shown:
            extra = max(0, spare) * column.grow // growth
            layout.append((column, column.width + extra))
        self._layout = layout
        self._layout_width = width
        return layout

    def _header_strip(self, width: int) -> Strip:
        style = self._base_style + self.get_component_rich_style("line-table--header")
        sorted_style = style + self.get_component_rich_style("line-table--sorted")
        arrow = " ▼" if self.index.descending else " ▲"
        cells: list[tuple[str, Style]] = []
        for column, _ in self._columns(width):
            if column.key == self.sort_key:
                cells.append((column.title + arrow, sorted_style))
            else:
                cells.append((column.title, style))
        return self._strip(cells, width, style)

    def _row_strip(self, row_id: str, row: Row, position: int, width: int) -> Strip:
        base = self._base_style
        row_class = self.row_class(row_id, row)
        if row_class:
            base = base + self.get_component_rich_style(row_class)
        if position == self.cursor_row:
            cursor = self.get_component_rich_style("line-table--cursor")
            base = base + (cursor if self.has_focus else Style(underline=True))
        values = self.row_cells(row_id, row)
        cells = []
        for column, _ in self._columns(width):
            text, component = values.get(column.key, ("", None))
            style = base
            if component:
                style = base + self.get_component_rich_style(component)
                if position == self.cursor_row and self.has_focus:
                    style = style + self.get_component_rich_style("line-table--cursor")
            cells.append((text, style))
        return self._strip(cells, width, base)

    def _strip(self, cells: list[tuple[str, Style]], width: int, fill: Style) -> Strip:
        """One line of cells; neighbours of the same style share one segment.

        Fewer segments make every later step of Textual's rendering cheaper,
        and the tick repaints every visible row.
        """
        segments: list[Segment] = []
        run: list[str] = []
        run_style = fill
        for (column, cell_width), (text, style) in zip(
            self._columns(width), cells, strict=False
        ):
            if run:
                run.append(" ")
            if style != run_style:
                if run:
                    segments.append(Segment("".join(run), run_style))
                run = []
                run_style = style
            run.append(_fit(text, cell_width, column.align))
        if run:
            segments.append(Segment("".join(run), run_style))
        return Strip(segments).extend_cell_length(width, fill).crop(0, width)

    def _blank_or_empty(self, position: int, width: int) -> Strip:
        if position == 0 and len(self.index) == 0:
            style = self._base_style + self.get_component_rich_style(
                "line-table--empty"
            )
            text = self.EMPTY_TEXT
            if self.index.needle:
                text = f"nothing matches “{self.index.needle}”"
            return Strip([Segment(_fit(text, width, "left"), style)], width)
        return Strip.blank(width, self._base_style)


def _fit(text: str, width: int, align: Literal["left", "right"]) -> str:
    """Cut or pad text to exactly ``width`` cells, marking a cut with an ellipsis."""
    if width <= 0:
        return ""
    if not text.isascii():
        return _fit_wide(text, width, align)
    if len(text) > width:
        return text[: width - 1] + "…"
    return text.rjust(width) if align == "right" else text.ljust(width)


def _fit_wide(text: str, width: int, align: Literal["left", "right"]) -> str:
    """:func:`_fit` for text with characters that may take two cells."""
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    padding = " " * (width - cell_len(text))
    return padding + text if align == "right" else text + padding
