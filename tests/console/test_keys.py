"""Keyboard-first: every action has a key, a palette entry and a line in the help.

These run the console without a daemon: its state arrives through the same
messages the daemon link posts, at a fixed time. What is checked is what the
keyboard reaches, not what the daemon does (``test_live.py`` covers that).
"""

from __future__ import annotations

import asyncio
from typing import Any

from console_screen import screen_text, until
from console_wire import T0, Wire
from textual.pilot import Pilot

from keyturn.console.app import KeyturnConsole
from keyturn.console.bindings import LOCKDOWN_KEY
from keyturn.console.help_screen import HelpScreen
from keyturn.console.messages import (
    DaemonConnected,
    EventsArrived,
    IdentityKnown,
    SnapshotTaken,
)
from keyturn.console.state import PreparedSnapshot, parse_records

SIZE = (100, 30)


def run(scenario: Any) -> None:
    asyncio.run(scenario)


async def fed(pilot: Pilot[int], role: str = "approver", grants: int = 30) -> None:
    wire = Wire()
    snapshot = wire.snapshot(
        [wire.grant(left_s=60.0 + n) for n in range(grants)],
        [wire.request(), wire.request(requested_by="oncall", age_s=5)],
    )
    app = pilot.app
    app.post_message(IdentityKnown("oncall", role, ""))
    app.post_message(SnapshotTaken(PreparedSnapshot.build(snapshot)))
    app.post_message(DaemonConnected(T0, restarted=False))
    await pilot.pause(0.2)


def console() -> KeyturnConsole:
    return KeyturnConsole(None, "oncall", clock=lambda: T0)


def test_lockdown_key_works_inside_a_dialog() -> None:
    """The lockdown key fires even while a revoke dialog has the keyboard."""

    async def scenario() -> None:
        app = console()
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await fed(pilot)
            await pilot.press("r")
            assert "Revoke grant" in screen_text(pilot)
            assert "^o LOCKDOWN" in screen_text(pilot)
            await pilot.press(LOCKDOWN_KEY)
            await until(pilot, lambda: "No daemon link" in screen_text(pilot), 2, "try")

    run(scenario())


def test_lockdown_is_offered_only_to_approvers_and_admins() -> None:
    """An auditor's console shows no lockdown key and ignores it."""

    async def scenario() -> None:
        app = console()
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await fed(pilot, role="auditor")
            await until(pilot, lambda: "Help" in screen_text(pilot), 2, "footer")
            assert "LOCKDOWN" not in screen_text(pilot)
            await pilot.press(LOCKDOWN_KEY)
            await pilot.pause(0.2)
            assert "No daemon link" not in screen_text(pilot)

    run(scenario())


def test_every_action_is_in_the_command_palette() -> None:
    """The palette lists the console's actions by name."""

    async def scenario() -> None:
        app = console()
        async with app.run_test(size=SIZE) as pilot:
            await fed(pilot)
            titles = {command.title for command in app.get_system_commands(app.screen)}
            for title in (
                "LOCKDOWN",
                "Revoke grant",
                "Extend grant",
                "Approve request",
                "Deny request",
                "Filter grants",
                "Sort grants by vendor",
                "Keys",
            ):
                assert title in titles
            await pilot.press("ctrl+p")
            await pilot.press(*"revoke")
            await until(pilot, lambda: "Revoke grant" in screen_text(pilot), 2, "entry")
            await pilot.press("enter")
            await until(
                pilot, lambda: "Revoke grant grt_" in screen_text(pilot), 2, "ask"
            )

    run(scenario())


def test_help_lists_every_key() -> None:
    """The help screen shows every binding, the lockdown key first."""

    async def scenario() -> None:
        app = console()
        async with app.run_test(size=(120, 60)) as pilot:
            await fed(pilot)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            text = screen_text(pilot)
            for words in ("LOCKDOWN", "Revoke", "Extend", "Approve", "Deny", "Filter"):
                assert words in text
            assert "Lift lockdown" in text
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)

    run(scenario())


def test_cursor_follows_its_grant_when_rows_move() -> None:
    """The highlighted grant stays highlighted when new grants sort above it (C-10)."""

    async def scenario() -> None:
        app = console()
        async with app.run_test(size=SIZE) as pilot:
            await fed(pilot)
            await pilot.press("down", "down", "down")
            chosen = app.main.grants.selected_id
            wire = Wire(seq=1000)
            records = [
                wire.record(
                    "grant.active",
                    grant=wire.grant(left_s=1.0 + n, grant_id=f"grt_new{n:08d}"),
                )
                for n in range(5)
            ]
            app.post_message(EventsArrived(parse_records(records)))
            await pilot.pause(0.2)
            assert app.main.grants.selected_id == chosen
            assert app.main.grants.cursor_row == 8

    run(scenario())


def test_filter_by_typing_and_sort_keys() -> None:
    """Typing after / narrows the grants; s changes the sort column."""

    async def scenario() -> None:
        app = console()
        async with app.run_test(size=SIZE) as pilot:
            await fed(pilot, grants=5)
            grants = app.main.grants
            target = grants.index.id_at(3)
            await pilot.press("slash", *target[-4:], "enter")
            await pilot.pause(0.1)
            assert len(grants.index) == 1 and grants.selected_id == target
            assert grants.has_focus
            await pilot.press("slash", "escape")
            assert len(grants.index) == 5
            await pilot.press("s")
            assert grants.sort_key == "vendor"
            assert "by vendor" in screen_text(pilot)

    run(scenario())
