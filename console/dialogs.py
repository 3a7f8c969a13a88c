"""Dialogs that ask the operator before an action, each returning a typed answer.

- :class:`ConfirmDialog` returns ``True`` or ``False``.
- :class:`ReasonDialog` returns the reason typed, or ``None`` when cancelled.
- :class:`ExtendDialog` returns the seconds to add, or ``None``.

Every dialog is answered from the keyboard: Enter confirms, Escape cancels.
The lockdown key keeps working above them (it is a priority binding of the
app), and each dialog's footer shows it.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Static

from keyturn.console.bindings import lockdown_binding
from keyturn.console.wording import compact_duration
from keyturn.shared.durations import parse_duration
from keyturn.shared.errors import BadInput

__all__ = ["ConfirmDialog", "ExtendDialog", "ReasonDialog"]

Answer = TypeVar("Answer")

DEFAULT_EXTEND_S = 15 * 60
"""What the extend dialog offers first (or the maximum, when less)."""


class _Dialog(ModalScreen[Answer], Generic[Answer]):
    """A centred box with a title, a text and a hint line."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
        lockdown_binding("app.lockdown"),
    ]

    def __init__(self, title: str, body: str) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.body_text = body

    def compose_fields(self) -> ComposeResult:
        """The dialog's own inputs, between the text and the hint."""
        yield from ()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.body_text, classes="dialog-body")
            yield from self.compose_fields()
            yield Static(self.hint(), classes="dialog-hint")
        yield Footer()

    def hint(self) -> str:
        """The keys of this dialog, in words."""
        return "enter: confirm · escape: cancel"

    def cancelled(self) -> Answer:
        """The answer when the operator cancels."""
        raise NotImplementedError

    def action_cancel(self) -> None:
        """Close without doing anything."""
        self.dismiss(self.cancelled())

    def say(self, problem: str) -> None:
        """Show what is wrong with the input, in place of the hint."""
        hint = self.query_one(".dialog-hint", Static)
        hint.update(problem)
        hint.add_class("-error")


class ConfirmDialog(_Dialog[bool]):
    """Asks yes or no; ``y`` or Enter says yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "confirm", "Yes", id="dialog.yes"),
        Binding("n,escape", "cancel", "No", id="dialog.no"),
        lockdown_binding("app.lockdown"),
    ]

    def hint(self) -> str:
        """Yes and no keys."""
        return "y / enter: yes · n / escape: no"

    def action_confirm(self) -> None:
        """Answer yes."""
        self.dismiss(True)

    def cancelled(self) -> bool:
        """No."""
        return False


class ReasonDialog(_Dialog[str | None]):
    """Asks for a short reason before an action.

    Args:
        title: What is about to happen, e.g. "Revoke grant grt_…".
        body: The object it happens to, named in full.
        required: Whether an empty reason is refused.
    """

    def __init__(self, title: str, body: str, *, required: bool) -> None:
        super().__init__(title, body)
        self.required = required

    def cancelled(self) -> str | None:
        """No reason: nothing happens."""
        return None

    def compose_fields(self) -> ComposeResult:
        placeholder = "reason (required)" if self.required else "reason (optional)"
        yield Input(placeholder=placeholder, max_length=200, id="reason")

    @on(Input.Submitted, "#reason")
    def submitted(self, event: Input.Submitted) -> None:
        """Enter: answer with the reason, unless one is required and missing."""
        reason = event.value.strip()
        if self.required and not reason:
            self.say("a reason is required · escape: cancel")
            return
        self.dismiss(reason)


class ExtendDialog(_Dialog[int | None]):
    """Asks how much longer a grant should live, within its maximum.

    Args:
        title: "Extend grant grt_…".
        body: The grant named in full, with its current expiry and maximum.
        max_s: The most that can be added.
    """

    def __init__(self, title: str, body: str, *, max_s: int) -> None:
        super().__init__(title, body)
        self.max_s = max_s

    def cancelled(self) -> int | None:
        """No extension."""
        return None

    def compose_fields(self) -> ComposeResult:
        offer = compact_duration(min(DEFAULT_EXTEND_S, self.max_s)).replace("m00s", "m")
        yield Label(f"add (at most {compact_duration(self.max_s)}):")
        yield Input(value=offer, max_length=16, id="extend-by")

    @on(Input.Submitted, "#extend-by")
    def submitted(self, event: Input.Submitted) -> None:
        """Enter: answer with the seconds, if they parse and fit."""
        try:
            seconds = parse_duration(event.value, what="extension")
        except BadInput as exc:
            self.say(exc.message)
            return
        if seconds > self.max_s:
            self.say(f"at most {compact_duration(self.max_s)} more is allowed")
            return
        self.dismiss(seconds)
