"""The keyturn console: a live view of the daemon's grants for the on-call engineer.

:class:`KeyturnConsole` owns the live state and the daemon link. The link's
threads post messages (:mod:`keyturn.console.messages`); the app applies them
to the state and tells the main screen what to repaint. One timer ticks once
a second for the countdowns. The lockdown key is a priority binding of the
app, so it works on every screen whatever has focus.

    keyturn console --home /var/lib/keyturn --as oncall
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import ClassVar

from rich.console import RenderableType
from textual.app import App, SystemCommand
from textual.binding import BindingType
from textual.css.query import NoMatches
from textual.screen import Screen

from keyturn.console.bindings import APP_BINDINGS, LIFT_KEY
from keyturn.console.dialogs import ConfirmDialog
from keyturn.console.help_screen import HelpScreen
from keyturn.console.link import Command, DaemonLink
from keyturn.console.main_screen import SORT_WORDS, MainScreen
from keyturn.console.messages import (
    ActionRefused,
    ActionSucceeded,
    DaemonConnected,
    DaemonLost,
    EventsArrived,
    HeartbeatSeen,
    IdentityKnown,
    LinkFailed,
    SnapshotTaken,
)
from keyturn.console.state import LiveState
from keyturn.console.status_line import Connection
from keyturn.console.wording import clock_time
from keyturn.shared.config import ConfigError, load_config
from keyturn.shared.keys import Home, KeyFileError, load_curve_secret

__all__ = ["KeyturnConsole", "run_console"]

logger = logging.getLogger(__name__)

TICK_S = 1.0
"""The countdown's period."""
LOCKDOWN_ROLES = frozenset({"admin", "approver"})
"""Roles that may engage lockdown (the daemon checks too)."""
LIFT_ROLES = frozenset({"admin"})
"""Roles that may lift it."""
GC_FREEZE_MIN_GRANTS = 10_000
"""From this many grants on, a snapshot's objects are frozen for the collector."""
EXIT_USAGE = 2
"""Exit status when the console cannot start (no such identity or home)."""

Clock = Callable[[], float]


class KeyturnConsole(App[int]):
    """The operator console.

    Args:
        home: The state folder; None runs without a daemon (the state is fed
            through the same messages the link posts, e.g. in snapshots tests).
        identity: Whose keys the console uses.
        clock: Wall-clock time; tests pass a fixed one.
    """

    CSS_PATH = Path(__file__).with_name("console.tcss")
    TITLE = "keyturn console"
    BINDINGS: ClassVar[list[BindingType]] = list(APP_BINDINGS)

    def __init__(
        self, home: Path | None, identity: str, *, clock: Clock = time.time
    ) -> None:
        super().__init__()
        self.home = home
        self.identity = identity
        self.clock = clock
        self.role = _role_from_config(home, identity)
        self.state = LiveState()
        self.connection = Connection()
        self.daemon_seq = 0
        """The latest ``seq`` the daemon announced in a heartbeat."""
        self.link = (
            DaemonLink(home, identity, self.post_message, clock) if home else None
        )
        self._main = MainScreen(self.state, identity, self.send)
        self._leaving = False

    @property
    def main(self) -> MainScreen:
        """The main screen."""
        return self._main

    async def on_mount(self) -> None:
        """Show the main screen, start the link threads and the countdown."""
        await self.push_screen(self._main)
        if self.link is not None:
            self.run_worker(self.link.run_feed, thread=True, name="feed")
            self.run_worker(self.link.run_commands, thread=True, name="commands")
        self.set_interval(TICK_S, self.tick)
        self.tick()

    def exit(
        self,
        result: int | None = None,
        return_code: int = 0,
        message: RenderableType | None = None,
    ) -> None:
        """Stop the link before the screens close; late messages are ignored."""
        self._leaving = True
        if self.link is not None:
            self.link.stop()
        super().exit(result, return_code, message)

    def on_unmount(self) -> None:
        """Stop the link threads (each closes its own sockets)."""
        if self.link is not None:
            self.link.stop()

    def tick(self) -> None:
        """Once a second: drop grants that lingered, repaint countdowns and status."""
        if self._leaving:
            return
        now = self.clock()
        swept = self.state.sweep(now)
        self._on_screen(lambda: self._main.tick(now, swept))
        self._show_status(now)

    def send(self, command: Command) -> bool:
        """Hand a command to the link; refused while the daemon is not connected.

        Lockdown is sent even then: if the daemon is back before the call
        times out, the operator wanted it.
        """
        if self.link is None:
            self.notify("No daemon link.", severity="error")
            return False
        if not self.connection.connected and command.action != "lockdown":
            self.notify(
                f"Not connected to the daemon: {command.summary} was not sent.",
                title="Not sent",
                severity="error",
            )
            return False
        self.link.submit(command)
        return True

    def action_lockdown(self) -> None:
        """Engage lockdown now: every grant revoked, new requests refused."""
        reason = f"console lockdown key, {self.identity}"
        summary = "engage lockdown"
        self.send(Command("lockdown", "lockdown", {"reason": reason}, summary))

    def action_lift(self) -> None:
        """Ask, then lift the lockdown."""
        lockdown = self.state.lockdown
        dialog = ConfirmDialog(
            "Lift the lockdown?",
            f"Engaged {clock_time(lockdown.since)} UTC by {lockdown.by}"
            f"{': ' + lockdown.reason if lockdown.reason else ''}.\n"
            "New requests will be accepted again.",
        )
        self.push_screen(dialog, self._lift)

    def action_help(self) -> None:
        """Show every key."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer lockdown to admins and approvers, lifting to admins in lockdown."""
        if action == "lockdown":
            return self.role in LOCKDOWN_ROLES
        if action == "lift":
            return self.role in LIFT_ROLES and self.state.lockdown.engaged
        return True

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every console action, by name, in the command palette."""
        yield from super().get_system_commands(screen)
        for title, words, callback in self._palette():
            yield SystemCommand(title, words, callback)

    def _palette(self) -> list[tuple[str, str, Callable[[], object]]]:
        main = self._main
        entries: list[tuple[str, str, Callable[[], object]]] = []
        if self.check_action("lockdown", ()):
            entries.append(("LOCKDOWN", "Revoke every grant now", self.action_lockdown))
        if self.check_action("lift", ()):
            entries.append(("Lift lockdown", "Accept requests again", self.action_lift))
        entries += [
            ("Revoke grant", "End the selected grant", main.ask_revoke),
            ("Extend grant", "More time for the selected grant", main.ask_extend),
            ("Approve request", "Approve the selected request", main.approve),
            ("Deny request", "Deny the selected request", main.ask_deny),
            ("Filter grants", "Type to filter", lambda: main.open_filter("grants")),
            ("Filter requests", "Type to filter", lambda: main.open_filter("requests")),
            ("Keys", "Show every key", self.action_help),
        ]
        for order in self.state.grant_index.orders:
            words = SORT_WORDS.get(order, order)
            sort = partial(main.grants.sort_by, order, descending=False)
            entries.append(
                (f"Sort grants by {words}", "Order of the grants table", sort)
            )
        return entries

    def on_snapshot_taken(self, message: SnapshotTaken) -> None:
        """A snapshot replaces the whole state."""
        if self._leaving:
            return
        now = self.clock()
        self.state.install(message.prepared, now)
        _settle_memory(len(self.state.grants))
        self._on_screen(lambda: self._main.reloaded(now))
        self._lockdown_changed()
        self._show_status(now)

    def on_events_arrived(self, message: EventsArrived) -> None:
        """Apply records in order and repaint what they changed."""
        if self._leaving:
            return
        now = self.clock()
        change = self.state.apply_parsed(message.records, now)
        self._on_screen(lambda: self._main.state_changed(change, now))
        if change.lockdown:
            self._lockdown_changed()
            self._announce_lockdown()
        self._show_status(now)

    def on_heartbeat_seen(self, message: HeartbeatSeen) -> None:
        """Remember the daemon's latest ``seq``; the next tick shows it."""
        self.daemon_seq = message.seq

    def on_daemon_connected(self, message: DaemonConnected) -> None:
        """Show the link as up; say so if it had been lost."""
        if self._leaving:
            return
        was_lost = self.connection.ever and not self.connection.connected
        self.connection = Connection(True, message.since, "", True)
        if was_lost:
            words = "restarted and reconnected" if message.restarted else "reconnected"
            self.notify(f"Daemon {words}; state refreshed.", title="Connected")
        self._show_status(self.clock())

    def on_daemon_lost(self, message: DaemonLost) -> None:
        """Grey the state, say the daemon is gone; the link keeps trying."""
        if self._leaving:
            return
        ever = self.connection.ever
        self.connection = Connection(False, message.since, message.reason, ever)
        if ever:
            self.notify(
                f"Lost the daemon ({message.reason}). Showing the last known state;"
                " reconnecting by itself.",
                title="Disconnected",
                severity="error",
            )
        self._show_status(self.clock())

    def on_identity_known(self, message: IdentityKnown) -> None:
        """The daemon confirmed who we are and what we may do."""
        if self._leaving:
            return
        self.role = message.role or self.role
        self.refresh_bindings()
        self._show_status(self.clock())

    def on_link_failed(self, message: LinkFailed) -> None:
        """The link cannot work: say why, and keep saying it."""
        if self._leaving:
            return
        self.notify(message.message, title="Cannot reach the daemon", severity="error")

    def on_action_succeeded(self, message: ActionSucceeded) -> None:
        """Confirm what the daemon did."""
        if self._leaving:
            return
        words = message.summary[:1].upper() + message.summary[1:]
        result = message.result
        if message.action == "lockdown":
            words = (
                f"Lockdown engaged: {result.get('revoked', 0)} grants revoked,"
                f" {result.get('denied', 0)} requests denied."
            )
        elif result.get("capped"):
            words += " (capped at the grant's maximum)"
        self.notify(words, title="Done")

    def on_action_refused(self, message: ActionRefused) -> None:
        """Show the daemon's reason for refusing an action."""
        if self._leaving:
            return
        self.notify(
            f"{message.summary}: {message.reason}",
            title=f"Refused ({message.code})",
            severity="error",
            timeout=8,
        )

    def _lift(self, confirmed: bool | None) -> None:
        if confirmed:
            reason = f"lifted from the console by {self.identity}"
            self.send(Command("lift", "lift", {"reason": reason}, "lift the lockdown"))

    def _lockdown_changed(self) -> None:
        lift_key = self.get_key_display_for("lift")
        self._on_screen(lambda: self._main.show_lockdown(lift_key))
        self.refresh_bindings()

    def _announce_lockdown(self) -> None:
        lockdown = self.state.lockdown
        if lockdown.by == self.identity:
            return
        if lockdown.engaged:
            self.notify(
                f"Lockdown engaged by {lockdown.by}.",
                title="LOCKDOWN",
                severity="error",
            )
        else:
            self.notify("Lockdown lifted.", title="Lockdown")

    def get_key_display_for(self, action: str) -> str:
        """How the key of an app action is shown (after any keymap)."""
        for _key, binding in self._bindings:
            if binding.action == action:
                return self.get_key_display(binding)
        return LIFT_KEY

    def _show_status(self, now: float) -> None:
        who = f"{self.identity}/{self.role or 'role unknown'}"
        connection, daemon_seq = self.connection, self.daemon_seq
        self._on_screen(
            lambda: self._main.show_status(connection, who, daemon_seq, now)
        )

    def _on_screen(self, update: Callable[[], None]) -> None:
        """Run a screen update, unless the screen is being taken down.

        The link's threads may post a message just as the app closes; its
        widgets are then already gone, and there is nothing left to update.
        """
        try:
            update()
        except NoMatches:
            logger.debug("screen update skipped: the screen is closing")


def _settle_memory(grants: int) -> None:
    """After a large snapshot, keep the garbage collector off the live state.

    A full collection walks every object; at 100,000 grants that is a pause
    of about 100 ms, long enough to delay a key press. The state holds no
    reference cycles (its objects are freed by reference counting when they
    leave), so the objects alive now are moved out of the collector's sight.
    """
    if grants >= GC_FREEZE_MIN_GRANTS:
        gc.collect(1)
        gc.freeze()


def _role_from_config(home: Path | None, identity: str) -> str:
    """The identity's role as configured, until the daemon confirms it."""
    if home is None:
        return ""
    try:
        config = load_config(Home(home).config)
    except ConfigError:
        return ""
    found = config.identities.get(identity)
    return found.role.value if found is not None else ""


def run_console(home: Path, identity: str) -> int:
    """Run the console until the operator quits.

    Args:
        home: The state folder.
        identity: Whose keys to use (``--as``).

    Returns:
        The exit status: 0 after a normal quit, 2 when the home or the
        identity's keys cannot be read.
    """
    try:
        load_config(Home(home).config)
        load_curve_secret(Home(home), identity)
    except (ConfigError, KeyFileError) as exc:
        print(f"keyturn console: {exc}", file=sys.stderr)
        return EXIT_USAGE
    app = KeyturnConsole(home, identity)
    app.run()
    return app.return_code or 0
