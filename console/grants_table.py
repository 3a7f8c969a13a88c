"""The grants table: who holds what, for how much longer, counting down live.

Each line is drawn from the live state when it is on screen; the once-a-second
tick repaints only the visible lines, so the cost of a tick does not grow with
the number of grants. A grant that just appeared is highlighted; a grant that
ended stays a few seconds showing how it ended, then the state drops it.
"""

from __future__ import annotations

import math
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message

from keyturn.console.line_table import Cell, Column, LineTable
from keyturn.console.state import LiveState
from keyturn.console.wording import clock_time, compact_duration
from keyturn.shared.model import Grant, GrantState

__all__ = ["BAR_CELLS", "CRITICAL_LEFT_S", "WARNING_LEFT_S", "GrantsTable"]

BAR_CELLS = 6
"""Width of the time-left bar."""
WARNING_LEFT_S = 120.0
"""Less time left than this turns the countdown amber."""
CRITICAL_LEFT_S = 30.0
"""Less time left than this turns it red."""
WARNING_FRACTION = 0.25
"""Less than this share of the grant's life left also turns it amber."""
CRITICAL_FRACTION = 0.10
"""Less than this share left also turns it red."""

_EIGHTHS = " ▏▎▍▌▋▊▉█"


def time_bar(fraction: float, cells: int = BAR_CELLS) -> str:
    """A bar of ``cells`` cells filled to ``fraction`` (0 to 1), in eighths."""
    eighths = round(max(0.0, min(1.0, fraction)) * cells * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part else "")
    return bar.ljust(cells)


def urgency(left_s: float, life_s: float) -> str:
    """``ok``, ``warn`` or ``crit`` for a grant with ``left_s`` of ``life_s`` left."""
    fraction = left_s / life_s if life_s > 0 else 0.0
    if left_s <= CRITICAL_LEFT_S or fraction <= CRITICAL_FRACTION:
        return "crit"
    if left_s <= WARNING_LEFT_S or fraction <= WARNING_FRACTION:
        return "warn"
    return "ok"


class GrantsTable(LineTable[Grant]):
    """Live and just-ended grants with a ticking countdown."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "r",
            "revoke",
            "Revoke",
            tooltip="End the selected grant now (asks for a reason).",
            id="grants.revoke",
        ),
        Binding(
            "e",
            "extend",
            "Extend",
            tooltip="Give the selected grant more time, up to its maximum.",
            id="grants.extend",
        ),
        Binding(
            "s",
            "cycle_sort",
            "Sort",
            tooltip="Sort the grants by the next column.",
            id="grants.sort",
        ),
        Binding(
            "S",
            "reverse_sort",
            "Reverse",
            show=False,
            tooltip="Reverse the order of the grants.",
            id="grants.reverse",
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            tooltip="Type to show only matching grants.",
            id="grants.filter",
        ),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "grants-table--new",
        "grants-table--ended",
        "grants-table--revoking",
        "grants-table--ok",
        "grants-table--warn",
        "grants-table--crit",
    }

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("vendor", "vendor", 12, grow=1),
        Column("scopes", "scopes", 14, grow=3),
        Column("state", "state", 8),
        Column("left", "time left", 6 + 1 + BAR_CELLS),
        Column("expires", "expires", 8),
        Column("by", "asked by", 10, wide_only=110),
        Column("grant", "grant", 16, wide_only=140),
    )

    EMPTY_TEXT: ClassVar[str] = "no live grants"

    class RevokePressed(Message):
        """The operator asked to revoke a grant."""

        def __init__(self, grant_id: str) -> None:
            super().__init__()
            self.grant_id = grant_id

    class ExtendPressed(Message):
        """The operator asked to extend a grant."""

        def __init__(self, grant_id: str) -> None:
            super().__init__()
            self.grant_id = grant_id

    class FilterPressed(Message):
        """The operator wants to type a filter."""

    def __init__(self, state: LiveState, *, id: str | None = None) -> None:
        super().__init__(state.grant_index, state.grants, id=id)
        self.state = state

    def row_class(self, row_id: str, row: Grant) -> str | None:
        """Ended grants are dimmed; new ones are highlighted."""
        if not row.is_live:
            return "grants-table--ended"
        if self.state.is_new(row_id):
            return "grants-table--new"
        return None

    def row_cells(self, row_id: str, row: Grant) -> dict[str, Cell]:
        """Vendor, scopes, state, countdown, expiry, requester, id."""
        return {
            "vendor": (row.vendor, None),
            "scopes": (", ".join(row.scopes), None),
            "state": self._state_cell(row),
            "left": self._left_cell(row),
            "expires": (clock_time(row.expires_at), None),
            "by": (row.requested_by, None),
            "grant": (row.grant_id, None),
        }

    def action_revoke(self) -> None:
        """Ask to revoke the grant under the cursor."""
        if self.selected_id is not None:
            self.post_message(self.RevokePressed(self.selected_id))

    def action_extend(self) -> None:
        """Ask to extend the grant under the cursor."""
        if self.selected_id is not None:
            self.post_message(self.ExtendPressed(self.selected_id))

    def action_cycle_sort(self) -> None:
        """Sort by the next column."""
        self.cycle_sort()

    def action_reverse_sort(self) -> None:
        """Flip the sort direction."""
        self.sort_by(self.sort_key, descending=not self.index.descending)

    def action_filter(self) -> None:
        """Open the filter box."""
        self.post_message(self.FilterPressed())

    def _state_cell(self, grant: Grant) -> Cell:
        if grant.state is GrantState.REVOKING:
            return ("revoking", "grants-table--revoking")
        return (grant.state.value, None)

    def _left_cell(self, grant: Grant) -> Cell:
        if not grant.is_live:
            return ("ended", None)
        left = math.ceil(grant.expires_at - self.now)
        life = grant.expires_at - grant.activated_at
        bar = time_bar(left / life if life > 0 else 0.0)
        text = f"{compact_duration(left):>6} {bar}"
        return (text, f"grants-table--{urgency(left, life)}")
