"""The console's app-wide key bindings, as data.

Each binding has an id, so a keymap can move it, and a description and a
tooltip, so the footer, the help screen and the command palette say the same
thing. The lockdown key is a priority binding: it works on every screen,
whatever has focus, and it is never a plain letter.
"""

from __future__ import annotations

from textual.binding import Binding

__all__ = [
    "APP_BINDINGS",
    "LIFT_KEY",
    "LOCKDOWN_KEY",
    "lockdown_binding",
]

LOCKDOWN_KEY = "ctrl+o"
"""Not a letter, not an editing key of Textual's inputs (ctrl+k deletes to the
end of an input line), not a terminal control key (ctrl+c, ctrl+s, ctrl+q,
ctrl+z) and not a tmux prefix."""
LIFT_KEY = "L"
"""Shift+l; lifting asks for confirmation, so a slip costs nothing."""

_LOCKDOWN_TOOLTIP = (
    "Revoke every grant now and refuse new requests until an admin lifts it."
)


def lockdown_binding(action: str = "lockdown") -> Binding:
    """The lockdown binding; dialogs show a copy that runs the app's action."""
    return Binding(
        LOCKDOWN_KEY,
        action,
        "LOCKDOWN",
        priority=True,
        tooltip=_LOCKDOWN_TOOLTIP,
        id="app.lockdown",
    )


APP_BINDINGS: list[Binding] = [
    lockdown_binding(),
    Binding(
        LIFT_KEY,
        "lift",
        "Lift lockdown",
        tooltip="End the lockdown (admins only; asks for confirmation).",
        id="app.lift",
    ),
    Binding(
        "question_mark,f1",
        "help",
        "Help",
        key_display="?",
        tooltip="Show every key.",
        id="app.help",
    ),
    Binding(
        "q",
        "quit",
        "Quit",
        tooltip="Close the console (the daemon keeps running).",
        id="app.quit",
    ),
]
"""Bindings of the app, in the order the footer shows them."""
