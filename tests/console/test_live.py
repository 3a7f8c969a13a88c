"""The console against a real daemon process: what the on-call engineer relies on.

Each test starts ``keyturn daemon`` on a fresh home (the ``daemon`` fixture of
``tests/conftest.py``), runs the real console headless with ``run_test`` and
drives it from the keyboard; changes are made with the real CLI or client,
and checked against the daemon itself.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from conftest import DaemonProcess, cli_json
from console_screen import screen_text, table_lines, until
from textual.pilot import Pilot

from keyturn.console.app import KeyturnConsole
from keyturn.console.link import LOST_AFTER_S
from keyturn.shared.errors import KeyturnError

SIZE = (120, 40)
"""Terminal size of the pilot tests."""
CONNECT_S = 5.0
"""How long the console may take to show its first snapshot."""


def run(scenario: Any) -> None:
    """Run an async scenario to the end (no asyncio plugin is needed)."""
    asyncio.run(scenario)


async def connected(pilot: Pilot[int]) -> KeyturnConsole:
    app = pilot.app
    assert isinstance(app, KeyturnConsole)
    await until(pilot, lambda: app.connection.connected, CONNECT_S, "connection")
    return app


async def cli(daemon: DaemonProcess, *args: str) -> Any:
    code, out = await asyncio.to_thread(cli_json, daemon.home, *args)
    assert code == 0, out
    return out


async def ask(daemon: DaemonProcess, identity: str, op: str, **args: Any) -> Any:
    def call() -> Any:
        with daemon.client(identity) as client:
            return client.call(op, args)

    return await asyncio.to_thread(call)


async def pending(daemon: DaemonProcess, vendor: str, scope: str, who: str) -> str:
    out = await cli(
        daemon, "request", vendor, scope, "--ttl", "5m", "--reason", "x", "--as", who
    )
    assert out["state"] == "pending", out
    return str(out["request_id"])


def grant_row(app: KeyturnConsole, grant_id: str) -> str:
    grant = app.state.grants[grant_id]
    position = app.state.grant_index.position_of(grant_id, grant)
    assert position is not None
    return table_lines(app.main.grants)[position + 1]


@pytest.mark.slow
def test_cli_grant_appears_counts_down_and_leaves(daemon: DaemonProcess) -> None:
    """A grant made with the CLI shows within 1 s, ticks down, shows expired, then goes."""

    async def scenario() -> None:
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            out = await cli(
                daemon, "request", "braintree", "payments:read", "--ttl", "3s",
                "--reason", "test", "--as", "braintree",
            )  # fmt: skip
            gid = out["grant_id"]
            await until(pilot, lambda: gid in app.state.grants, 1.0, "grant on screen")
            first = grant_row(app, gid)
            assert "braintree" in first and "active" in first
            await until(pilot, lambda: grant_row(app, gid) != first, 2.1, "a tick")
            assert "2s" in grant_row(app, gid) or "1s" in grant_row(app, gid)
            await until(pilot, lambda: "expired" in grant_row(app, gid), 4, "expired")
            await until(pilot, lambda: gid not in app.state.grants, 7, "grant leaving")
            assert "no live grants" in "\n".join(table_lines(app.main.grants))

    run(scenario())


def test_approve_from_the_keyboard(daemon: DaemonProcess) -> None:
    """One key approves the selected pending request in the daemon."""

    async def scenario() -> None:
        rid = await pending(daemon, "model-host", "prompts:read", "model-host")
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            await until(pilot, lambda: rid in app.state.requests, 2, "request")
            await pilot.press("tab", "a")
            await until(pilot, lambda: not app.state.requests, 3, "approval")
            assert len(app.state.grants) == 1
        result = await ask(daemon, "admin", "get", id=rid)
        assert result["request"]["state"] == "approved"
        assert result["request"]["decided_by"] == "oncall"

    run(scenario())


def test_deny_from_the_keyboard_with_a_reason(daemon: DaemonProcess) -> None:
    """One key and a short reason deny the selected request in the daemon."""

    async def scenario() -> None:
        rid = await pending(daemon, "model-host", "prompts:read", "model-host")
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            await until(pilot, lambda: rid in app.state.requests, 2, "request")
            await pilot.press("tab", "d")
            assert rid in screen_text(pilot)
            await pilot.press(*"not today", "enter")
            await until(pilot, lambda: not app.state.requests, 3, "denial")
        result = await ask(daemon, "admin", "get", id=rid)
        assert result["request"]["state"] == "denied"
        assert result["request"]["decision_reason"] == "not today"

    run(scenario())


def test_own_request_is_marked_and_not_approved(daemon: DaemonProcess) -> None:
    """An approver sees their own request starred and cannot approve it."""

    async def scenario() -> None:
        rid = await pending(daemon, "model-host", "prompts:read", "oncall")
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            await until(pilot, lambda: rid in app.state.requests, 2, "request")
            assert table_lines(app.main.requests)[1].startswith("★")
            await pilot.press("tab", "a")
            await until(
                pilot, lambda: "Not approved" in screen_text(pilot), 2, "refusal"
            )
            await pilot.pause(0.5)
            assert rid in app.state.requests
        result = await ask(daemon, "admin", "get", id=rid)
        assert result["request"]["state"] == "pending"

    run(scenario())


def test_lockdown_key_revokes_everything_from_any_screen(daemon: DaemonProcess) -> None:
    """The lockdown key works over the help screen and revokes every grant at once."""

    async def scenario() -> None:
        for _ in range(3):
            await cli(
                daemon, "request", "braintree", "payments:read", "--ttl", "10m",
                "--reason", "load", "--as", "braintree",
            )  # fmt: skip
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            await until(pilot, lambda: "^o LOCKDOWN" in screen_text(pilot), 2, "key")
            await pilot.press("question_mark")
            await until(pilot, lambda: "keys" in screen_text(pilot), 2, "help")
            await pilot.press("ctrl+o")
            await until(pilot, lambda: app.state.lockdown.engaged, 3, "lockdown")
            await until(pilot, lambda: app.state.counts().active == 0, 3, "revokes")
            await pilot.press("escape")
            assert "LOCKDOWN since" in screen_text(pilot)
        listing = await ask(daemon, "admin", "list")
        assert listing["grants"] == []
        with pytest.raises(KeyturnError) as refused:
            await ask(
                daemon, "braintree", "request", vendor="braintree",
                scopes=["payments:read"], ttl="1m", reason="after",
            )  # fmt: skip
        assert refused.value.code == "lockdown"

    run(scenario())


def test_lift_needs_an_admin_and_a_confirmation(daemon: DaemonProcess) -> None:
    """Only an admin is offered the lift key, and it asks before lifting."""

    async def scenario() -> None:
        await ask(daemon, "oncall", "lockdown", reason="drill")
        app = KeyturnConsole(daemon.home, "admin")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            await until(pilot, lambda: "Lift lockdown" in screen_text(pilot), 2, "key")
            await pilot.press("L")
            await until(
                pilot, lambda: "Lift the lockdown?" in screen_text(pilot), 2, "ask"
            )
            await pilot.press("y")
            await until(pilot, lambda: not app.state.lockdown.engaged, 3, "lift")
            assert "LOCKDOWN since" not in screen_text(pilot)
        status = await ask(daemon, "admin", "status")
        assert not status["lockdown"]["engaged"]

    run(scenario())


def test_revoke_targets_the_chosen_grant_while_rows_move(daemon: DaemonProcess) -> None:
    """C-10: the grant named in the confirmation is revoked, not the row that slid in."""

    async def scenario() -> None:
        await make_grants(daemon, 500, first_ttl_s=300)
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            await until(pilot, lambda: len(app.state.grants) == 500, 5, "500 grants")
            await pilot.press(*["down"] * 10)
            chosen = app.main.grants.selected_id
            assert chosen is not None
            await pilot.press("r")
            assert f"Revoke grant {chosen}?" in screen_text(pilot)
            await make_grants(daemon, 50, first_ttl_s=30)
            await until(pilot, lambda: len(app.state.grants) == 550, 5, "newcomers")
            chosen_grant = app.state.grants[chosen]
            assert app.state.grant_index.position_of(chosen, chosen_grant) != 10
            await pilot.press(*"c-10", "enter")
            await until(
                pilot, lambda: not app.state.grants[chosen].is_live, 3, "revoke"
            )
        listing = await ask(daemon, "admin", "list")
        live = {grant["grant_id"] for grant in listing["grants"]}
        assert chosen not in live and len(live) == 549
        ended = await ask(daemon, "admin", "get", id=chosen)
        assert ended["grant"]["state"] == "revoked"
        assert "c-10" in ended["grant"]["end_reason"]

    run(scenario())


def test_revoke_of_a_grant_that_expired_meanwhile_does_nothing(
    daemon: DaemonProcess,
) -> None:
    """C-10: if the chosen grant expired while the dialog was open, nothing is sent."""

    async def scenario() -> None:
        out = await cli(
            daemon, "request", "braintree", "payments:read", "--ttl", "2s",
            "--reason", "short", "--as", "braintree",
        )  # fmt: skip
        gid = out["grant_id"]
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            await pilot.press("r")
            assert f"Revoke grant {gid}?" in screen_text(pilot)
            await until(pilot, lambda: not app.state.grants[gid].is_live, 4, "expiry")
            await pilot.press("enter")
            await until(
                pilot, lambda: "Cannot revoke" in screen_text(pilot), 2, "message"
            )
        ended = await ask(daemon, "admin", "get", id=gid)
        assert ended["grant"]["state"] == "expired"

    run(scenario())


def test_extend_within_the_maximum(daemon: DaemonProcess) -> None:
    """The extend key adds time to the selected grant, capped by its maximum."""

    async def scenario() -> None:
        out = await cli(
            daemon, "request", "braintree", "payments:read", "--ttl", "1m",
            "--reason", "slow job", "--as", "braintree",
        )  # fmt: skip
        gid = out["grant_id"]
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            before = app.state.grants[gid].expires_at
            await pilot.press("e")
            assert f"Extend grant {gid}" in screen_text(pilot)
            await pilot.press(*["backspace"] * 8, *"2m", "enter")
            await until(
                pilot, lambda: app.state.grants[gid].expires_at > before, 3, "extension"
            )
            assert abs(app.state.grants[gid].expires_at - before - 120) < 1

    run(scenario())


def test_refused_action_shows_the_daemons_reason(daemon: DaemonProcess) -> None:
    """When the daemon refuses an action, the console shows its code and reason."""

    async def scenario() -> None:
        rid = await pending(daemon, "model-host", "prompts:read", "model-host")
        app = KeyturnConsole(daemon.home, "auditor")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            await until(pilot, lambda: "Help" in screen_text(pilot), 2, "footer")
            assert "LOCKDOWN" not in screen_text(pilot)
            await until(pilot, lambda: rid in app.state.requests, 2, "request")
            await pilot.press("tab", "a")
            await until(
                pilot, lambda: "Refused (forbidden)" in screen_text(pilot), 3, "refusal"
            )

    run(scenario())


def test_console_started_just_before_grants_shows_them_all(
    daemon: DaemonProcess,
) -> None:
    """C-07: a console started 10 ms before five grants are made shows all five."""

    async def scenario() -> None:
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await asyncio.sleep(0.01)
            await make_grants(daemon, 5, first_ttl_s=600)
            await until(pilot, lambda: len(app.state.grants) == 5, 3, "five grants")
            listing = await ask(daemon, "admin", "list")
            assert set(app.state.grants) == {g["grant_id"] for g in listing["grants"]}

    run(scenario())


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_daemon_restart_shows_disconnect_and_recovery(
    daemon: DaemonProcess, stop_signal: int
) -> None:
    """A stopped daemon is reported within 2 s, the state stays greyed, and it recovers."""

    async def scenario() -> None:
        out = await cli(
            daemon, "request", "braintree", "payments:read", "--ttl", "10m",
            "--reason", "before", "--as", "braintree",
        )  # fmt: skip
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await connected(pilot)
            await until(pilot, lambda: out["grant_id"] in app.state.grants, 2, "grant")
            await pilot.pause(0.5)
            await asyncio.to_thread(daemon.stop, stop_signal)
            lost_s = await until(
                pilot, lambda: not app.connection.connected, LOST_AFTER_S + 1, "loss"
            )
            if stop_signal == signal.SIGTERM:
                assert lost_s < LOST_AFTER_S
            assert "DISCONNECTED" in screen_text(pilot)
            assert app.main.has_class("-disconnected")
            assert out["grant_id"] in app.state.grants
            await asyncio.to_thread(daemon.start)
            await until(pilot, lambda: app.connection.connected, 5, "reconnection")
            assert "connected since" in screen_text(pilot)
            assert not app.main.has_class("-disconnected")
            again = await cli(
                daemon, "request", "braintree", "payments:read", "--ttl", "10m",
                "--reason", "after", "--as", "braintree",
            )  # fmt: skip
            await until(pilot, lambda: again["grant_id"] in app.state.grants, 2, "new")
            listing = await ask(daemon, "admin", "list")
            assert set(app.state.grants) == {g["grant_id"] for g in listing["grants"]}

    run(scenario())


def test_console_waits_for_a_daemon_that_is_not_up_yet(daemon: DaemonProcess) -> None:
    """A console started before its daemon says so, then connects by itself."""

    async def scenario() -> None:
        await asyncio.to_thread(daemon.stop)
        app = KeyturnConsole(daemon.home, "oncall")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(
                pilot, lambda: "not connected" in screen_text(pilot), 3, "waiting"
            )
            await asyncio.to_thread(daemon.start)
            await until(pilot, lambda: app.connection.connected, 5, "connection")
            assert "connected since" in screen_text(pilot)

    run(scenario())


async def make_grants(daemon: DaemonProcess, count: int, first_ttl_s: int) -> None:
    """Make ``count`` auto-approved braintree grants with distinct lifetimes."""

    def call() -> None:
        with daemon.client("braintree") as client:
            for n in range(count):
                ttl = first_ttl_s + n
                client.request("braintree", ["payments:read"], ttl=ttl, reason="load")

    await asyncio.to_thread(call)
