"""The console's main screen: banner, status line, grants, pending requests, events.

The screen turns the operator's key presses into actions on one object, named
by id at the moment of the key press (never "whatever row is under the
cursor when the dialog closes"), asks before destructive ones, and hands the
resulting :class:`~keyturn.console.link.Command` to the app to send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label

from keyturn.console.dialogs import ExtendDialog, ReasonDialog
from keyturn.console.event_log import EventLog
from keyturn.console.grants_table import GrantsTable
from keyturn.console.link import Command
from keyturn.console.lockdown_banner import LockdownBanner
from keyturn.console.requests_table import MINE_MARK, RequestsTable
from keyturn.console.state import LiveState, StateChange
from keyturn.console.status_line import Connection, StatusLine
from keyturn.console.wording import clock_time, compact_duration
from keyturn.shared.model import Grant, Request

__all__ = ["SORT_WORDS", "MainScreen"]

logger = logging.getLogger(__name__)

Send = Callable[[Command], bool]
"""Hands a command to the daemon link; False when it was not sent."""

SORT_WORDS: dict[str, str] = {
    "left": "time left",
    "vendor": "vendor",
    "state": "state",
    "by": "asked by",
    "age": "age",
}
"""How each sort order is named in titles and in the command palette."""


class MainScreen(Screen[None]):
    """Everything the on-call engineer watches, on one screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape",
            "close_filter",
            "Clear filter",
            show=False,
            tooltip="Clear the filter and go back to the table.",
            id="main.close_filter",
        ),
    ]

    def __init__(self, state: LiveState, identity: str, send: Send) -> None:
        super().__init__()
        self.state = state
        self.identity = identity
        self.send = send
        self._titles: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield LockdownBanner(id="lockdown")
        yield StatusLine(id="status")
        with Vertical(id="grants-pane", classes="pane"):
            yield Label(id="grants-title", classes="pane-title")
            yield Input(
                placeholder="filter grants: vendor, scope, state, id, person",
                id="grants-filter",
                classes="filter",
            )
            yield GrantsTable(self.state, id="grants")
        with Vertical(id="requests-pane", classes="pane"):
            yield Label(id="requests-title", classes="pane-title")
            yield Input(
                placeholder="filter requests: vendor, scope, reason, person",
                id="requests-filter",
                classes="filter",
            )
            yield RequestsTable(self.state, self.identity, id="requests")
        with Vertical(id="events-pane", classes="pane"):
            yield Label("Events, newest first", classes="pane-title")
            yield EventLog(self.state.recent, id="events")
        yield Footer()

    def on_mount(self) -> None:
        """Start with the grants table focused and the titles filled in."""
        self.grants.focus()
        self._update_titles()

    @property
    def grants(self) -> GrantsTable:
        """The grants table."""
        return self.query_one("#grants", GrantsTable)

    @property
    def requests(self) -> RequestsTable:
        """The pending requests table."""
        return self.query_one("#requests", RequestsTable)

    def reloaded(self, now: float) -> None:
        """A snapshot replaced the state: point the tables at the new rows."""
        self.grants.set_rows(self.state.grant_index, self.state.grants)
        self.requests.set_rows(self.state.request_index, self.state.requests)
        self.state_changed(StateChange(grants=True, requests=True, lockdown=True), now)

    def state_changed(self, change: StateChange, now: float) -> None:
        """Repaint what a batch of records changed, as of ``now``."""
        self.grants.now = self.requests.now = now
        if change.grants:
            self.grants.data_changed()
        if change.requests:
            self.requests.data_changed()
        self.query_one(EventLog).records_changed()
        self._update_titles()

    def tick(self, now: float, swept: bool) -> None:
        """The once-a-second repaint of the countdowns and ages (visible rows only).

        Args:
            now: The time to draw at.
            swept: Whether ended grants left the table since the last tick.
        """
        if swept:
            self.grants.data_changed()
            self._update_titles()
        for table in (self.grants, self.requests):
            table.now = now
            table.refresh_shown_rows()

    def show_status(
        self, connection: Connection, who: str, daemon_seq: int, now: float
    ) -> None:
        """Redraw the status line and grey the state while disconnected."""
        self.set_class(not connection.connected and connection.ever, "-disconnected")
        seq = str(self.state.seq)
        if daemon_seq > self.state.seq and connection.connected:
            seq += f" (daemon at {daemon_seq})"
        status = self.query_one(StatusLine)
        status.show(connection, self.state.counts(), seq, who, now)

    def show_lockdown(self, lift_key: str) -> None:
        """Show or hide the lockdown banner."""
        self.query_one(LockdownBanner).show(self.state.lockdown, lift_key)

    def ask_revoke(self, grant_id: str | None = None) -> None:
        """Ask for a reason, then revoke exactly this grant (case C-10)."""
        grant_id = grant_id or self.grants.selected_id
        grant = self._live_grant(grant_id, "revoke")
        if grant is None:
            return
        dialog = ReasonDialog(
            f"Revoke grant {grant.grant_id}?",
            self._grant_words(grant),
            required=False,
        )
        self.app.push_screen(
            dialog, lambda reason: self._revoke(grant.grant_id, reason)
        )

    def ask_extend(self, grant_id: str | None = None) -> None:
        """Ask how much longer, then extend exactly this grant."""
        grant_id = grant_id or self.grants.selected_id
        grant = self._live_grant(grant_id, "extend")
        if grant is None:
            return
        room_s = int(grant.max_expires_at - grant.expires_at)
        if room_s < 1:
            self.notify(
                f"{grant.grant_id} already runs to its maximum "
                f"({clock_time(grant.max_expires_at)} UTC).",
                title="Cannot extend",
                severity="warning",
            )
            return
        body = (
            f"{self._grant_words(grant)}\nexpires {clock_time(grant.expires_at)} UTC;"
            f" may run until {clock_time(grant.max_expires_at)} UTC at most"
        )
        dialog = ExtendDialog(f"Extend grant {grant.grant_id}", body, max_s=room_s)
        self.app.push_screen(dialog, lambda by: self._extend(grant.grant_id, by))

    def approve(self, request_id: str | None = None) -> None:
        """Approve a pending request at once, unless this identity made it."""
        request = self._pending(request_id or self.requests.selected_id, "approve")
        if request is None:
            return
        if request.requested_by == self.identity:
            self.notify(
                f"You ({self.identity}) made request {request.request_id}; "
                "nobody approves their own request. Another approver must.",
                title="Not approved",
                severity="error",
            )
            return
        self.send(
            Command(
                "approve",
                "approve",
                {"request_id": request.request_id},
                f"approve {self._request_words(request)}",
            )
        )

    def ask_deny(self, request_id: str | None = None) -> None:
        """Ask for a short reason, then deny exactly this request."""
        request = self._pending(request_id or self.requests.selected_id, "deny")
        if request is None:
            return
        dialog = ReasonDialog(
            f"Deny request {request.request_id}?",
            self._request_words(request),
            required=True,
        )
        self.app.push_screen(dialog, lambda reason: self._deny(request, reason))

    def open_filter(self, which: str) -> None:
        """Show a table's filter box and put the cursor in it."""
        box = self.query_one(f"#{which}-filter", Input)
        box.add_class("-open")
        box.focus()

    def action_close_filter(self) -> None:
        """Clear the focused filter box, hide it, go back to its table."""
        focused = self.focused
        if not isinstance(focused, Input) or not focused.has_class("filter"):
            return
        which = (focused.id or "").removesuffix("-filter")
        focused.value = ""
        focused.remove_class("-open")
        self.query_one(f"#{which}").focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Escape closes a filter only while a filter box has focus."""
        if action == "close_filter":
            focused = self.focused
            return isinstance(focused, Input) and focused.has_class("filter")
        return True

    @on(GrantsTable.RevokePressed)
    def _on_revoke(self, event: GrantsTable.RevokePressed) -> None:
        self.ask_revoke(event.grant_id)

    @on(GrantsTable.ExtendPressed)
    def _on_extend(self, event: GrantsTable.ExtendPressed) -> None:
        self.ask_extend(event.grant_id)

    @on(RequestsTable.ApprovePressed)
    def _on_approve(self, event: RequestsTable.ApprovePressed) -> None:
        self.approve(event.request_id)

    @on(RequestsTable.DenyPressed)
    def _on_deny(self, event: RequestsTable.DenyPressed) -> None:
        self.ask_deny(event.request_id)

    @on(GrantsTable.FilterPressed)
    def _on_grants_filter(self) -> None:
        self.open_filter("grants")

    @on(RequestsTable.FilterPressed)
    def _on_requests_filter(self) -> None:
        self.open_filter("requests")

    @on(Input.Changed, ".filter")
    def _on_filter_changed(self, event: Input.Changed) -> None:
        """Filter after the letter is on screen: at 100,000 rows a search takes
        a moment, and the typing must not wait for it."""
        which = (event.input.id or "").removesuffix("-filter")
        table = self.grants if which == "grants" else self.requests
        self.call_after_refresh(self._filter, table, event.input)

    def _filter(self, table: GrantsTable | RequestsTable, box: Input) -> None:
        table.set_filter(box.value)
        self._update_titles()

    @on(Input.Submitted, ".filter")
    def _on_filter_submitted(self, event: Input.Submitted) -> None:
        which = (event.input.id or "").removesuffix("-filter")
        if not event.value:
            event.input.remove_class("-open")
        self.query_one(f"#{which}").focus()

    @on(GrantsTable.Sorted)
    @on(RequestsTable.Sorted)
    def _on_sorted(self) -> None:
        self._update_titles()

    def _revoke(self, grant_id: str, reason: str | None) -> None:
        if reason is None:
            return
        grant = self._live_grant(grant_id, "revoke")
        if grant is None:
            return
        self.send(
            Command(
                "revoke",
                "revoke",
                {"grant_id": grant_id, "reason": reason},
                f"revoke {self._grant_words(grant)}",
            )
        )

    def _extend(self, grant_id: str, by_s: int | None) -> None:
        if by_s is None:
            return
        grant = self._live_grant(grant_id, "extend")
        if grant is None:
            return
        words = f"extend {self._grant_words(grant)} by {compact_duration(by_s)}"
        self.send(
            Command("extend", "extend", {"grant_id": grant_id, "by": by_s}, words)
        )

    def _deny(self, request: Request, reason: str | None) -> None:
        if reason is None:
            return
        if request.request_id not in self.state.requests:
            self._gone("deny", request.request_id, "is no longer pending")
            return
        self.send(
            Command(
                "deny",
                "deny",
                {"request_id": request.request_id, "reason": reason},
                f"deny {self._request_words(request)}",
            )
        )

    def _live_grant(self, grant_id: str | None, verb: str) -> Grant | None:
        """The grant if it is still live; else say why nothing happens."""
        if grant_id is None:
            self._gone(verb, "", "no grant is selected")
            return None
        grant = self.state.grants.get(grant_id)
        if grant is None:
            self._gone(verb, grant_id, "is gone")
            return None
        if not grant.is_live:
            self._gone(verb, grant_id, f"already {grant.state.value}")
            return None
        return grant

    def _pending(self, request_id: str | None, verb: str) -> Request | None:
        if request_id is None:
            self._gone(verb, "", "no pending request is selected")
            return None
        request = self.state.requests.get(request_id)
        if request is None:
            self._gone(verb, request_id, "is no longer pending")
        return request

    def _gone(self, verb: str, object_id: str, why: str) -> None:
        subject = f"{object_id} " if object_id else ""
        self.notify(
            f"{subject}{why}: nothing was sent.",
            title=f"Cannot {verb}",
            severity="warning",
        )

    def _grant_words(self, grant: Grant) -> str:
        left = compact_duration(grant.expires_at - self.grants.now)
        return (
            f"{grant.grant_id} · {grant.vendor} · {', '.join(grant.scopes)}"
            f" · {left} left · asked by {grant.requested_by}"
        )

    @staticmethod
    def _request_words(request: Request) -> str:
        return (
            f"{request.request_id} · {request.vendor} · {', '.join(request.scopes)}"
            f" for {compact_duration(request.ttl_s)} · asked by {request.requested_by}"
            f" · “{request.reason}”"
        )

    def _update_titles(self) -> None:
        counts = self.state.counts()
        grants = self.grants
        title = f"Grants: {counts.active} active"
        if counts.revoking:
            title += f", {counts.revoking} revoking"
        title += self._order_words(grants.sort_key, grants.index.descending)
        if grants.index.needle:
            title += f" · filter “{grants.index.needle}”: {len(grants.index)} shown"
        self._set_title("#grants-title", title)
        requests = self.requests
        title = f"Pending requests: {counts.pending} · {MINE_MARK} = yours"
        if requests.index.needle:
            title += f" · filter “{requests.index.needle}”: {len(requests.index)} shown"
        self._set_title("#requests-title", title)

    def _set_title(self, selector: str, title: str) -> None:
        """Change a pane title in place (its size never changes: no layout)."""
        label = self.query_one(selector, Label)
        if self._titles.get(selector) != title:
            self._titles[selector] = title
            label.update(title, layout=False)

    @staticmethod
    def _order_words(sort_key: str, descending: bool) -> str:
        arrow = "▼" if descending else "▲"
        return f" · by {SORT_WORDS.get(sort_key, sort_key)} {arrow}"
