"""The help screen: every key of the console, built from the bindings themselves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static

from keyturn.console.bindings import APP_BINDINGS, lockdown_binding
from keyturn.console.grants_table import GrantsTable
from keyturn.console.line_table import LineTable
from keyturn.console.requests_table import RequestsTable

__all__ = ["HelpScreen"]

_FILTER_KEYS = (
    Binding("enter", "", "Keep the filter and go back to the table"),
    Binding("escape", "", "Clear the filter and go back to the table"),
)
_DIALOG_KEYS = (
    Binding("enter", "", "Confirm (y also says yes)"),
    Binding("escape", "", "Cancel (n also says no)"),
)
_MOVING_KEYS = (
    Binding("tab", "", "Next panel (grants, requests, events)"),
    Binding("shift+tab", "", "Previous panel"),
    Binding("ctrl+p", "", "Command palette: every action by name"),
)


class HelpScreen(ModalScreen[None]):
    """All keys, grouped by where they work; escape or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close", id="help.close"),
        lockdown_binding("app.lockdown"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Label("keyturn console: keys", classes="dialog-title")
            yield Static(self._table(), id="help-keys")
        yield Footer()

    def action_close(self) -> None:
        """Go back to the console."""
        self.dismiss(None)

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        sections: list[tuple[str, Iterable[BindingType]]] = [
            ("Everywhere", APP_BINDINGS),
            ("Moving around", _MOVING_KEYS),
            ("Grants table", GrantsTable.BINDINGS),
            ("Pending requests", RequestsTable.BINDINGS),
            ("In either table", LineTable.BINDINGS),
            ("Filter box", _FILTER_KEYS),
            ("Dialogs", _DIALOG_KEYS),
        ]
        for title, bindings in sections:
            table.add_row(Text(title, style="bold underline"), "")
            for binding in bindings:
                if isinstance(binding, Binding):
                    table.add_row(self._keys(binding), self._words(binding))
            table.add_row("", "")
        return table

    def _keys(self, binding: Binding) -> str:
        keys = [key.strip() for key in binding.key.split(",")]
        shown = [self.app.get_key_display(binding.with_key(key)) for key in keys]
        return " / ".join(shown)

    @staticmethod
    def _words(binding: Binding) -> str:
        if binding.tooltip:
            return f"{binding.description}: {binding.tooltip}"
        return binding.description
