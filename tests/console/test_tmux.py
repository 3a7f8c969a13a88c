"""End to end: ``keyturn console`` in a real terminal (tmux), driven by keystrokes.

The test starts its own tmux server (``-L``, so it never touches anyone's
sessions), runs the real command in a 120x40 window next to a real daemon,
types with ``send-keys`` and reads the screen with ``capture-pane``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DaemonProcess, cli_json

WIDTH, HEIGHT = 120, 40
WAIT_S = 10.0
"""Longest wait for something to show on the terminal."""
PAUSED_GRANTS = 10_000
"""Grants made while the console is stopped: 20,000 events (approval and grant)."""

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Terminal:
    """One tmux window on a private tmux server."""

    def __init__(self, server: str) -> None:
        self.server = server

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.server, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout

    def start(self, command: str) -> None:
        size = ["-x", str(WIDTH), "-y", str(HEIGHT)]
        self.tmux("new-session", "-d", "-s", "console", *size, command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "console")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "console", *keys)

    def wait_for(self, *texts: str, timeout_s: float = WAIT_S) -> str:
        """Wait until every text is on the screen at once; return the screen."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(text in screen for text in texts):
                return screen
            time.sleep(0.1)
        size = self.tmux(
            "display", "-p", "-t", "console", "#{pane_width}x#{pane_height}"
        )
        raise AssertionError(f"{texts!r} never showed on {size}:\n{self.screen()}")


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    """A private tmux server, killed (with everything in it) after the test."""
    term = Terminal(f"kt-test-{os.getpid()}")
    yield term
    term.tmux("kill-server")


def console_command(home: Path) -> str:
    python = sys.executable
    run = f"{python} -m keyturn.console.cli console --home {home} --as oncall"
    # tmux may create the window at 80x24 and resize it a moment later; the
    # pause lets the console start at the final size.
    return f"sleep 0.5; env -u KEYTURN_HOME {run}; echo CONSOLE-EXIT=$?; sleep 30"


def cli(daemon: DaemonProcess, *args: str) -> dict[str, object]:
    code, out = cli_json(daemon.home, *args)
    assert code == 0, out
    return dict(out)


@pytest.mark.slow
def test_operator_session_in_a_real_terminal(
    daemon: DaemonProcess, terminal: Terminal
) -> None:
    """An on-call engineer sees grants live, approves with one key, locks down, quits."""
    terminal.start(console_command(daemon.home))
    terminal.wait_for("connected since")
    terminal.wait_for("^o LOCKDOWN")

    grant = cli(
        daemon, "request", "braintree", "payments:read", "--ttl", "10m",
        "--reason", "tmux test", "--as", "braintree",
    )  # fmt: skip
    terminal.wait_for("payments:read", timeout_s=2)
    pending = cli(
        daemon, "request", "model-host", "prompts:read", "--ttl", "5m",
        "--reason", "needs review", "--as", "model-host",
    )  # fmt: skip
    terminal.wait_for("needs review", timeout_s=2)

    terminal.keys("Tab", "a")
    terminal.wait_for("oncall approved model-host")

    terminal.keys("C-o")
    screen = terminal.wait_for("LOCKDOWN since")
    assert "Every grant revoked" in " ".join(screen.split())
    with daemon.client() as client:
        assert client.list()["grants"] == []
        assert client.get(str(grant["grant_id"]))["grant"]["state"] == "revoked"
        assert client.get(str(pending["request_id"]))["request"]["state"] == "approved"

    terminal.keys("q")
    terminal.wait_for("CONSOLE-EXIT=0")


@pytest.mark.slow
def test_paused_console_catches_up_with_every_event(
    daemon: DaemonProcess, terminal: Terminal
) -> None:
    """C-07: a console stopped (SIGSTOP) while 20,000 events go out ends equal to ls."""
    terminal.start(console_command(daemon.home))
    terminal.wait_for("connected since")
    console = console_pid(terminal)

    os.kill(console, signal.SIGSTOP)
    try:
        with daemon.client("braintree", timeout_s=10) as client:
            for n in range(PAUSED_GRANTS):
                ttl = 600 + n % 200
                client.request("braintree", ["payments:read"], ttl=ttl, reason="load")
    finally:
        os.kill(console, signal.SIGCONT)

    with daemon.client() as client:
        live = len(client.list()["grants"])
    assert live == PAUSED_GRANTS
    terminal.wait_for(f"Grants: {live} active", timeout_s=30)


def console_pid(terminal: Terminal) -> int:
    """The console's process: the child of the shell that tmux started."""
    shell = terminal.tmux("display", "-p", "-t", "console", "#{pane_pid}").strip()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["pgrep", "-P", shell, "-f", "keyturn.console.cli"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.stdout.strip():
            return int(done.stdout.split()[0])
        time.sleep(0.1)
    raise AssertionError("the console process was not found")
