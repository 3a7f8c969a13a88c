"""The pending requests: what is asked, for how long, why, by whom, since when.

Requests this console's identity made are marked with a star; the console
will not send an approval for them (nobody approves their own request).
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message

from keyturn.console.line_table import Cell, Column, LineTable
from keyturn.console.state import LiveState
from keyturn.console.wording import compact_duration
from keyturn.shared.model import Request

__all__ = ["MINE_MARK", "RequestsTable"]

MINE_MARK = "★"
"""Marks a request this identity made."""


class RequestsTable(LineTable[Request]):
    """Pending requests, oldest first, with approve and deny on one key each."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "a",
            "approve",
            "Approve",
            tooltip="Approve the selected request at once.",
            id="requests.approve",
        ),
        Binding(
            "d",
            "deny",
            "Deny",
            tooltip="Deny the selected request (asks for a short reason).",
            id="requests.deny",
        ),
        Binding(
            "s",
            "cycle_sort",
            "Sort",
            show=False,
            tooltip="Sort the requests by the next column.",
            id="requests.sort",
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            show=False,
            tooltip="Type to show only matching requests.",
            id="requests.filter",
        ),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {"requests-table--mine"}

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("mine", "", 1),
        Column("vendor", "vendor", 10, grow=1),
        Column("scopes", "scopes", 12, grow=2),
        Column("ttl", "for", 6, align="right"),
        Column("reason", "reason", 10, grow=3),
        Column("by", "asked by", 10),
        Column("age", "age", 6, align="right"),
        Column("approvals", "ok", 3, wide_only=120),
        Column("request", "request", 16, wide_only=140),
    )

    EMPTY_TEXT: ClassVar[str] = "no pending requests"

    class ApprovePressed(Message):
        """The operator asked to approve a request."""

        def __init__(self, request_id: str) -> None:
            super().__init__()
            self.request_id = request_id

    class DenyPressed(Message):
        """The operator asked to deny a request."""

        def __init__(self, request_id: str) -> None:
            super().__init__()
            self.request_id = request_id

    class FilterPressed(Message):
        """The operator wants to type a filter."""

    def __init__(self, state: LiveState, identity: str, *, id: str | None = None):
        super().__init__(state.request_index, state.requests, id=id)
        self.state = state
        self.identity = identity
        """Requests made by this identity are marked as the operator's own."""

    def row_class(self, row_id: str, row: Request) -> str | None:
        """The operator's own requests stand out."""
        return "requests-table--mine" if row.requested_by == self.identity else None

    def row_cells(self, row_id: str, row: Request) -> dict[str, Cell]:
        """Mark, vendor, scopes, duration, reason, requester, age, approvals, id."""
        mine = MINE_MARK if row.requested_by == self.identity else ""
        needed = max(1, row.approvals_needed)
        return {
            "mine": (mine, None),
            "vendor": (row.vendor, None),
            "scopes": (", ".join(row.scopes), None),
            "ttl": (compact_duration(row.ttl_s), None),
            "reason": (row.reason, None),
            "by": (row.requested_by, None),
            "age": (compact_duration(self.now - row.requested_at), None),
            "approvals": (f"{len(row.approvals)}/{needed}", None),
            "request": (row.request_id, None),
        }

    def action_approve(self) -> None:
        """Approve the request under the cursor."""
        if self.selected_id is not None:
            self.post_message(self.ApprovePressed(self.selected_id))

    def action_deny(self) -> None:
        """Deny the request under the cursor."""
        if self.selected_id is not None:
            self.post_message(self.DenyPressed(self.selected_id))

    def action_cycle_sort(self) -> None:
        """Sort by the next column."""
        self.cycle_sort()

    def action_filter(self) -> None:
        """Open the filter box."""
        self.post_message(self.FilterPressed())
