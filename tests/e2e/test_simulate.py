"""Demo traffic from ``keyturn simulate`` against a real daemon."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
from conftest import DaemonProcess, run_cli

SIMULATE_S = 4
RATE_PER_S = 10
"""Forty steps: two shuffled rounds, so every kind of step happens."""
MIN_TTL_S = 10
MAX_TTL_S = 45
DOWN_S = 4.0
"""Longer than simulate's call timeout, so a call in flight at the stop fails."""
WAIT_LINE_S = 30.0
"""How long a line of simulate's output may take to come."""


def _everything(daemon: DaemonProcess) -> dict[str, Any]:
    with daemon.client() as client:
        return client.list(all=True)


def test_simulate_makes_a_plausible_mix(daemon: DaemonProcess) -> None:
    """Several vendors get grants, some requests wait, an :admin ask is denied."""
    done = run_cli(
        daemon.home,
        "simulate",
        "--rate",
        str(RATE_PER_S),
        "--duration",
        f"{SIMULATE_S}s",
        "--seed",
        "7",
        timeout=SIMULATE_S + 20,
    )
    assert done.returncode == 0, done.stderr

    state = _everything(daemon)
    grants, requests = state["grants"], state["requests"]
    assert len({grant["vendor"] for grant in grants}) >= 3
    assert Counter(r["state"] for r in requests)["pending"] >= 1
    denied = [r for r in requests if r["state"] == "denied"]
    assert denied and all(
        any(scope.endswith(":admin") for scope in r["scopes"]) for r in denied
    )
    assert all(r["requested_by"] == r["vendor"] for r in requests)
    assert all(MIN_TTL_S <= r["ttl_s"] <= MAX_TTL_S for r in requests)
    assert all(r["reason"] and r["ticket"] for r in requests)
    assert "simulated:" in done.stdout


def test_simulate_stops_cleanly_on_sigterm(daemon: DaemonProcess) -> None:
    """SIGTERM ends an open-ended simulation with exit 0 and a summary."""
    command = [sys.executable, "-m", "keyturn.console.cli", "simulate"]
    proc = subprocess.Popen(
        [*command, "--home", str(daemon.home), "--rate", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)

    assert proc.returncode == 0, err
    assert "simulated:" in out and "Traceback" not in err


def test_simulate_waits_for_a_daemon_that_went_away(daemon: DaemonProcess) -> None:
    """A daemon that stops and comes back is waited for, not a crash."""
    command = [sys.executable, "-m", "keyturn.console.cli", "simulate"]
    proc = subprocess.Popen(
        [*command, "--home", str(daemon.home), "--rate", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = _Lines(proc)
    try:
        lines.wait_for(": active")
        daemon.stop()
        time.sleep(DOWN_S)
        daemon.start()
        restarted_at = time.time()
        lines.wait_for("daemon is back")
        lines.wait_for(": active")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        lines.close()

    assert proc.returncode == 0, lines.seen
    assert any("waiting for it" in line for line in lines.seen)
    assert not any("Traceback" in line for line in lines.seen)
    made_after = [
        r for r in _everything(daemon)["requests"] if r["requested_at"] > restarted_at
    ]
    assert made_after


class _Lines:
    """A child's output lines, read in the background so waits can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.seen: list[str] = []
        self._stdout = proc.stdout
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stdout:
            self._queue.put(line)

    def wait_for(self, text: str) -> str:
        """Return the next line holding ``text``; fail after WAIT_LINE_S."""
        deadline = time.monotonic() + WAIT_LINE_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return line
        pytest.fail(f"no line with {text!r} within {WAIT_LINE_S}s: {self.seen[-5:]}")

    def close(self) -> None:
        """Read what is left (the child has exited) and close the pipe."""
        self._reader.join(timeout=WAIT_LINE_S)
        self._stdout.close()
        while not self._queue.empty():
            self.seen.append(self._queue.get())
