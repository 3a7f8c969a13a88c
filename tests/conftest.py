"""Fixtures shared by every test: real homes, a real daemon process, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyturn.console.homes import init_home
from keyturn.shared.client import Client, Subscriber

START_TIMEOUT_S = 15.0
"""A daemon that does not answer within this long after start has failed."""


def _scrubbed_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(autouse=True)
def _scrub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("KEYTURN_"):
            monkeypatch.delenv(key)


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh keyturn home made from the example configuration, on a short path."""
    root = Path(tempfile.mkdtemp(prefix="kt-", dir="/tmp"))
    shutil.rmtree(root)
    init_home(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_cli(
    home: Path, *args: str, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run ``keyturn ARGS --home HOME`` as a user would, and capture its output."""
    command = [sys.executable, "-m", "keyturn.console.cli", *args, "--home", str(home)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=_scrubbed_env()
    )


def cli_json(home: Path, *args: str) -> tuple[int, Any]:
    """Run a command with ``--json`` and return its exit status and parsed output."""
    done = run_cli(home, *args, "--json")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, json.loads(lines[-1]) if lines else None


class DaemonProcess:
    """A real ``keyturn daemon`` on a home, started and stopped by the test."""

    def __init__(self, home: Path, log_path: Path) -> None:
        self.home = home
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> None:
        """Start the daemon and wait until it answers."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        command = [
            sys.executable,
            "-m",
            "keyturn.console.cli",
            "daemon",
            "--home",
            str(self.home),
        ]
        self.proc = subprocess.Popen(
            command, stdout=log, stderr=log, env=_scrubbed_env()
        )
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until ``status`` answers, or fail with the daemon's log."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with Client.from_home(self.home, "admin", timeout_s=0.5) as client:
                    client.status()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.05)
        pytest.fail(f"daemon did not answer within {START_TIMEOUT_S}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send a signal and wait for the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        """Stop (SIGTERM) and start again."""
        self.stop()
        self.start()

    def client(self, identity: str = "admin", timeout_s: float = 5.0) -> Client:
        """A client of this daemon as an identity."""
        return Client.from_home(self.home, identity, timeout_s=timeout_s)

    def subscriber(self, identity: str = "admin") -> Subscriber:
        """A subscriber to this daemon's events."""
        return Subscriber.from_home(self.home, identity)

    def log(self) -> str:
        """What the daemon wrote to stderr."""
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )


@pytest.fixture
def daemon(home: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    """A running daemon on a fresh home; stopped (or killed) after the test."""
    process = DaemonProcess(home, tmp_path / "daemon.log")
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.send_signal(signal.SIGTERM)
        try:
            process.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.proc.kill()
            process.proc.wait()
