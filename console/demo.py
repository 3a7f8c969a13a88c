"""``keyturn demo``: the daemon, demo traffic and the console, in one go.

The demo makes a home from the example configuration when it has none, starts
``keyturn daemon`` and ``keyturn simulate`` as child processes (their output
goes to ``daemon.log`` and ``simulate.log`` in the home), and runs the console
in the foreground as the on-call approver. When the console quits, on Ctrl-C,
on SIGTERM or SIGHUP, and on any error, both children are stopped: SIGTERM
first, SIGKILL if one outlives a timeout. On Linux each child also gets
SIGTERM from the kernel if the demo itself dies without a chance to clean up.

A stop signal that arrives while the console runs ends the demo at once, after
the children are stopped and the terminal is given back in its normal mode:
unwinding the console from inside a signal handler can leave it waiting for
its own threads.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from keyturn.console.cli import EXIT_REFUSED
from keyturn.console.homes import init_home
from keyturn.shared.client import Client
from keyturn.shared.errors import KeyturnError

__all__ = ["DEMO_IDENTITY", "Children", "demo_home", "run_demo"]

logger = logging.getLogger(__name__)

DEMO_IDENTITY = "oncall"
"""The console runs as this approver, so pending requests can be decided."""
DEMO_HOME_NAME = "keyturn-demo"
"""The demo home's folder under the user's state folder."""
START_TIMEOUT_S = 20.0
"""A daemon that does not answer within this long after start has failed."""
READY_POLL_S = 0.1
READY_CALL_TIMEOUT_S = 0.5
STOP_TIMEOUT_S = 10.0
"""A child still running this long after SIGTERM gets SIGKILL."""
LOG_TAIL_LINES = 20
"""Lines of a failed daemon's log shown to the user."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
TERMINAL_RESET = (
    "\x1b[<u"  # the kitty keyboard protocol off
    "\x1b[?1000l\x1b[?1003l\x1b[?1006l\x1b[?1015l"  # mouse reports off
    "\x1b[?2004l\x1b[?1004l"  # bracketed paste and focus reports off
    "\x1b[?7h\x1b[?1049l\x1b[?25h"  # wrap lines, main screen, show cursor
)
"""What gives a terminal back after a full-screen app that could not clean up."""
_PR_SET_PDEATHSIG = 1


def demo_home() -> Path:
    """The demo's default home: ``keyturn-demo`` in the user's state folder.

    The state folder is ``$XDG_STATE_HOME``, else ``~/.local/state``, as for the
    usual home, so the demo never touches a real one.
    """
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / DEMO_HOME_NAME


class Children:
    """The demo's child processes, stopped together whatever happens."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._preexec = _death_signal_setter()

    def start(
        self, name: str, args: list[str], log_path: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``keyturn ARGS`` with its output appended to a log file.

        Args:
            name: What to call the child in messages.
            args: The ``keyturn`` command line after the program name.
            log_path: Where its stdout and stderr go.

        Returns:
            The running process.
        """
        command = [sys.executable, "-m", "keyturn.console.cli", *args]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=self._preexec,
            )
        self._procs.append((name, proc))
        logger.info("started %s: pid %d", name, proc.pid)
        return proc

    def stop_all(self) -> list[str]:
        """Stop every child, newest first: SIGTERM, then SIGKILL after a timeout.

        Returns:
            The names of the children stopped, newest first.
        """
        stopped = []
        while self._procs:
            name, proc = self._procs.pop()
            _stop(name, proc)
            stopped.append(name)
        return stopped


class Terminal:
    """The controlling terminal's mode, saved to be given back after a signal."""

    def __init__(self) -> None:
        self.in_app = False
        """Set while the console owns the screen."""
        try:
            self._attrs: list[Any] | None = termios.tcgetattr(sys.stdin.fileno())
        except (termios.error, OSError, ValueError):
            self._attrs = None

    def give_back(self) -> None:
        """Restore the saved mode and leave the console's screen, if it has one."""
        if not self.in_app:
            return
        try:
            if self._attrs is not None:
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, self._attrs)
            _say(TERMINAL_RESET, end="")
        except (termios.error, OSError, ValueError):
            pass  # the terminal is gone (SIGHUP): nothing to give back


def _say(text: str, end: str = "\n") -> None:
    """Write to the real standard output, which the console may have replaced."""
    print(text, end=end, file=sys.__stdout__, flush=True)


def _stop(name: str, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, proc.pid)
        proc.kill()
        proc.wait()


def _death_signal_setter() -> Callable[[], None] | None:
    """Return a pre-exec hook that makes the kernel SIGTERM a child if we die."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def set_death_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_death_signal


def run_demo(home: Path) -> int:
    """Run the whole demo on a home and leave no process behind.

    Args:
        home: The demo's state folder; made from the example when missing.

    Returns:
        The console's exit status, or 1 when the daemon did not start.
    """
    made = _ensure_home(home)
    print(f"keyturn demo: {'made' if made else 'using'} home {home}", flush=True)
    children = Children()
    terminal = Terminal()
    atexit.register(children.stop_all)
    previous = _trap_stop_signals(children, terminal)
    try:
        if not _start_services(home, children):
            return EXIT_REFUSED
        from keyturn.console.app import run_console

        terminal.in_app = True
        return int(run_console(home, DEMO_IDENTITY))
    finally:
        stopped = children.stop_all()
        _restore(previous)
        atexit.unregister(children.stop_all)
        if stopped:
            print(f"keyturn demo: stopped {' and '.join(stopped)}", flush=True)


def _ensure_home(home: Path) -> bool:
    """Make the home from the example configuration unless it has one."""
    if (home / "keyturn.toml").exists():
        return False
    init_home(home)
    return True


def _start_services(home: Path, children: Children) -> bool:
    """Start the daemon (unless one already serves the home) and the traffic."""
    if _answers(home):
        print("keyturn demo: a daemon already serves this home; using it", flush=True)
    else:
        log = home / "daemon.log"
        daemon = children.start("the daemon", ["daemon", "--home", str(home)], log)
        if not _wait_ready(home, daemon):
            print(_failure(log), file=sys.stderr, flush=True)
            return False
    children.start(
        "the demo traffic", ["simulate", "--home", str(home)], home / "simulate.log"
    )
    return True


def _answers(home: Path) -> bool:
    try:
        with Client.from_home(home, "admin", timeout_s=READY_CALL_TIMEOUT_S) as client:
            client.status()
    except KeyturnError:
        return False
    return True


def _wait_ready(home: Path, daemon: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and daemon.poll() is None:
        if _answers(home):
            return True
        time.sleep(READY_POLL_S)
    return False


def _failure(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return "keyturn demo: the daemon did not start; its log ends:\n" + "\n".join(lines)


def _trap_stop_signals(children: Children, terminal: Terminal) -> dict[int, Any]:
    """Make SIGTERM and SIGHUP stop the children, then end the demo by the signal."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopped = children.stop_all()
        terminal.give_back()
        name = signal.Signals(signum).name
        _say(f"keyturn demo: {name}: stopped {' and '.join(stopped) or 'nothing'}")
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
