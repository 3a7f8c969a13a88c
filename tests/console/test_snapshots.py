"""What the main screen looks like, at 80x24 and 160x48, compared with saved SVGs.

The state comes in through the same messages the daemon link posts, built
from daemon-shaped objects at a fixed time, and the console's clock is fixed
too, so every countdown, age and time of day is the same on every run.
Update the saved screens with ``pytest --snapshot-update`` after a deliberate
change, and look at them before committing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from console_screen import screen_text
from console_wire import T0, Wire
from textual.pilot import Pilot

from keyturn.console.app import KeyturnConsole
from keyturn.console.messages import (
    DaemonConnected,
    DaemonLost,
    EventsArrived,
    IdentityKnown,
    SnapshotTaken,
)
from keyturn.console.state import PreparedSnapshot, parse_records

SIZES = [(80, 24), (160, 48)]


def busy_state(wire: Wire) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A snapshot with grants at every stage of life, requests, and new records."""
    grants = [
        wire.grant("braintree", ("payments:read",), life_s=900, left_s=725),
        wire.grant("segment", ("events:write", "events:read"), life_s=600, left_s=95),
        wire.grant("model-host", ("prompts:read",), life_s=300, left_s=12),
        wire.grant("zendesk", ("tickets:read",), life_s=3600, left_s=3000),
        wire.grant("customer-io", ("email:send",), life_s=900, left_s=400),
    ]
    revoking = wire.grant("datadog", ("logs:read",), left_s=200, state="revoking")
    requests = [
        wire.request("model-host", ("prompts:read",), age_s=75),
        wire.request(
            "zendesk",
            ("tickets:write",),
            requested_by="oncall",
            age_s=10,
            reason="customer escalation 5521",
        ),  # fmt: skip
    ]
    wire.seq = 120
    snapshot = wire.snapshot([*grants, revoking], requests)
    spawned = wire.grant("braintree", ("payments:refund",), life_s=120, left_s=120)
    expired = wire.ended(grants[2], "expired")
    records = [
        wire.record("grant.active", actor="policy", grant=spawned),
        wire.record("grant.expired", actor="system", grant=expired),
    ]
    return snapshot, records


def console(
    snapshot: dict[str, Any],
    records: list[dict[str, Any]],
    *,
    role: str = "approver",
    lost: bool = False,
) -> tuple[KeyturnConsole, Any]:
    """A console at a fixed time, and the step that feeds it its state."""
    app = KeyturnConsole(None, "oncall", clock=lambda: T0)

    async def feed(pilot: Pilot[int]) -> None:
        app.post_message(IdentityKnown("oncall", role, ""))
        app.post_message(SnapshotTaken(PreparedSnapshot.build(snapshot)))
        app.post_message(DaemonConnected(T0 - 3600, restarted=False))
        app.post_message(EventsArrived(parse_records(records)))
        if lost:
            app.post_message(DaemonLost(T0 - 4, "no heartbeat for 2.1s"))
        await pilot.pause(0.2)
        app.clear_notifications()
        await pilot.pause(0.1)

    return app, feed


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_main_screen_with_grants_and_requests(snap_compare: Any, size: Any) -> None:
    """The operator sees countdowns, new and ended grants, and pending requests."""
    snapshot, records = busy_state(Wire())
    app, feed = console(snapshot, records)

    assert snap_compare(app, terminal_size=size, run_before=feed)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_main_screen_in_lockdown(snap_compare: Any, size: Any) -> None:
    """A lockdown banner stays at the top, and the admin is offered the lift key."""
    wire = Wire()
    snapshot, _ = busy_state(wire)
    revoked = [wire.ended(grant, "revoked", "oncall") for grant in snapshot["grants"]]
    records = [
        wire.record("lockdown.engaged", actor="oncall", reason="suspected breach"),
        *(wire.record("grant.revoked", grant=grant) for grant in revoked),
    ]
    app, feed = console(snapshot, records, role="admin")

    assert snap_compare(app, terminal_size=size, run_before=feed)


def test_main_screen_while_disconnected(snap_compare: Any) -> None:
    """When the daemon is gone the last state stays, greyed, with the reason shown."""
    snapshot, records = busy_state(Wire())
    app, feed = console(snapshot, records, lost=True)

    assert snap_compare(app, terminal_size=(80, 24), run_before=feed)


def test_resizing_keeps_the_lockdown_key_and_the_columns() -> None:
    """Shrinking the terminal to 80x24 and growing it again keeps everything usable."""

    async def scenario() -> None:
        snapshot, records = busy_state(Wire())
        app, feed = console(snapshot, records)
        async with app.run_test(size=(160, 48)) as pilot:
            await feed(pilot)
            assert "asked by" in screen_text(pilot)
            await pilot.resize_terminal(80, 24)
            await pilot.pause(0.2)
            small = screen_text(pilot)
            assert "^o LOCKDOWN" in small and "time left" in small
            assert "asked by  grant" not in small
            assert max(len(line.rstrip()) for line in small.splitlines()) <= 80
            await pilot.press("down", "down")
            assert app.main.grants.cursor_row == 2
            await pilot.resize_terminal(120, 40)
            await pilot.pause(0.2)
            assert "Pending requests" in screen_text(pilot)

    asyncio.run(scenario())
