"""The README's first command: the demo, headless in tmux, from start to quit."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyturn.shared.client import Client
from keyturn.shared.config import ConfigError
from keyturn.shared.errors import KeyturnError
from keyturn.shared.keys import KeyFileError

README = Path(__file__).parents[2] / "README.md"
LISTS = Path(__file__).parents[1] / "data" / "subprocessors"
PANE_COLUMNS, PANE_ROWS = 160, 48
EXPIRY_DEADLINE_S = 60.0
"""Grants must appear and expire within this long of the demo's start."""
QUIT_DEADLINE_S = 30.0
"""The demo must have stopped everything within this long of the quit key."""
POLL_S = 0.5
QUIT_KEY = "q"
EXITED = "demo exited with"
_BULLET_ID = re.compile(r"^\* \[([^\]]+)\]", re.MULTILINE)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(EXPIRY_DEADLINE_S + QUIT_DEADLINE_S + 60),
]


def _published_vendor_ids() -> set[str]:
    names = set()
    for path in LISTS.glob("*.md"):
        names |= set(_BULLET_ID.findall(path.read_text()))
    return {re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") for name in names}


def _readme_first_command() -> str:
    text = README.read_text()
    block = re.search(r"```(?:sh|bash|console)?\n(.*?)```", text, re.DOTALL)
    assert block, "README.md opens with no command block"
    return block.group(1).strip().splitlines()[0]


def _keyturn() -> str:
    script = Path(sys.executable).with_name("keyturn")
    return (
        str(script) if script.exists() else f"{sys.executable} -m keyturn.console.cli"
    )


class Tmux:
    """A private tmux server with one pane running a command."""

    def __init__(self, command: str) -> None:
        self.socket = f"kt-test-{secrets.token_hex(4)}"
        self._tmux(
            "new-session", "-d", "-x", str(PANE_COLUMNS), "-y", str(PANE_ROWS), command
        )

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout

    def screen(self) -> str:
        """What the pane shows now."""
        return self._tmux("capture-pane", "-p")

    def keys(self, *keys: str) -> None:
        """Type keys into the pane."""
        self._tmux("send-keys", *keys)

    def close(self) -> None:
        """Stop the tmux server and everything still in it; remove its socket."""
        self._tmux("kill-server")
        folder = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (folder / self.socket).unlink(missing_ok=True)


@pytest.fixture
def demo_home() -> Iterator[Path]:
    """A short path for the demo to make its home in."""
    root = Path(tempfile.mkdtemp(prefix="kt-", dir="/tmp"))
    root.rmdir()
    yield root
    for pid in _processes_naming(root):
        subprocess.run(["kill", "-KILL", str(pid)], check=False)
    shutil.rmtree(root, ignore_errors=True)


def _processes_naming(home: Path) -> list[int]:
    ps = subprocess.run(
        ["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True
    )
    found = []
    for line in ps.stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        if str(home) in args and "tmux" not in args and int(pid) != os.getpid():
            found.append(int(pid))
    return found


def _ended_grants(home: Path) -> list[dict[str, object]]:
    try:
        with Client.from_home(home, "admin", timeout_s=1.0) as client:
            grants: list[dict[str, object]] = client.list(all=True)["grants"]
    except (KeyturnError, ConfigError, KeyFileError):
        return []
    return grants


def _watch_until_expired(tmux: Tmux, home: Path, vendors: set[str]) -> set[str]:
    deadline = time.monotonic() + EXPIRY_DEADLINE_S
    seen_on_screen: set[str] = set()
    while time.monotonic() < deadline:
        screen = tmux.screen()
        seen_on_screen |= {v for v in vendors if re.search(rf"\b{v}\b", screen)}
        expired = [
            g
            for g in _ended_grants(home)
            if g["state"] == "expired" and g["vendor"] in vendors
        ]
        if expired and seen_on_screen and "expired" in screen:
            return seen_on_screen
        time.sleep(POLL_S)
    pytest.fail(f"no published vendor's grant expired on screen in time:\n{screen}")


def _quit(tmux: Tmux) -> str:
    tmux.keys(QUIT_KEY)
    deadline = time.monotonic() + QUIT_DEADLINE_S
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if EXITED in screen:
            return screen
        time.sleep(POLL_S)
    pytest.fail(f"the demo did not exit after {QUIT_KEY!r}:\n{tmux.screen()}")


def test_readme_first_command_runs_the_demo(demo_home: Path) -> None:
    """The demo shows published vendors' grants expiring, then quits leaving nothing."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    first = _readme_first_command()
    assert first.rstrip().endswith("keyturn demo"), first
    vendors = _published_vendor_ids()
    command = f"{_keyturn()} demo --home {demo_home}; echo {EXITED} $?; sleep 120"
    tmux = Tmux(command)
    try:
        seen = _watch_until_expired(tmux, demo_home, vendors)
        screen = _quit(tmux)
    finally:
        tmux.close()

    assert seen
    assert f"{EXITED} 0" in screen
    assert _processes_naming(demo_home) == []
    assert (demo_home / "daemon.log").exists()
