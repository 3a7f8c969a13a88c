"""Benchmark homes and the real daemon as a child process.

A benchmark home has one vendor, ``loadgen``, whose only rule approves at
once up to a day, so every ``request`` becomes a grant with the ttl asked for.
The daemon runs as ``python -m keyturn.console.cli daemon`` exactly as users
start it, with the ``[daemon]`` settings of the example configuration.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from keyturn.console.homes import init_home
from keyturn.shared.client import Client
from keyturn.shared.errors import KeyturnError

__all__ = [
    "BENCH_IDENTITY",
    "BENCH_SCOPE",
    "BENCH_VENDOR",
    "DaemonProc",
    "make_home",
    "rss_kib",
    "scratch_folder",
]

BENCH_VENDOR = "loadgen"
BENCH_SCOPE = "load:run"
BENCH_IDENTITY = "loadgen"
"""The vendor's own requester identity, made by ``init_home``."""
CHECKPOINT_EVERY = 1000
"""Journal records between signed checkpoints, as in the example configuration."""
SNAPSHOT_INTERVAL_S = 5
"""Seconds between background snapshots, as in the example configuration."""
START_TIMEOUT_S = 120.0
"""A daemon that does not serve within this long has failed."""
STOP_TIMEOUT_S = 120.0
"""A stop may write a snapshot of every grant first."""
PROBE_TIMEOUT_S = 0.5
"""How long one readiness probe waits for ``status``."""
PROBE_PAUSE_S = 0.002
"""Pause between readiness probes."""
PROFILE_RATE_HZ = 250
"""py-spy samples per second when profiling."""

CONFIG = f"""\
[daemon]
pending_ttl = "15m"
checkpoint_every = {CHECKPOINT_EVERY}
snapshot_interval = "{SNAPSHOT_INTERVAL_S}s"

[policy]
default = "deny"
max_ttl = "24h"

[vendors.{BENCH_VENDOR}]
name = "Loadgen"
purpose = "Benchmark load."
scopes = ["{BENCH_SCOPE}"]
default_ttl = "1m"
max_ttl = "24h"

[[rules]]
name = "loadgen-auto"
vendors = ["{BENCH_VENDOR}"]
scopes = ["{BENCH_SCOPE}"]
max_ttl = "24h"
action = "approve"
"""


def scratch_folder() -> Path:
    """A fresh folder under /tmp with a short path (ipc paths are limited)."""
    return Path(tempfile.mkdtemp(prefix="ktb-", dir="/tmp"))


def make_home(parent: Path, name: str) -> Path:
    """Make a benchmark home ``parent/name`` with its keys and configuration."""
    config = parent / f"{name}.toml"
    config.write_text(CONFIG, "utf-8")
    root = parent / name
    init_home(root, config)
    return root


def rss_kib(pid: int) -> int:
    """A process's resident set size (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class DaemonProc:
    """The real ``keyturn daemon`` on a home, started and stopped here.

    Args:
        home: The home to serve.
        log_level: The daemon's ``--log-level``.
        profile: Where py-spy writes this daemon's sampled stacks (collapsed
            text, one ``stack count`` a line), if anywhere.
    """

    def __init__(
        self, home: Path, log_level: str = "warning", profile: Path | None = None
    ) -> None:
        self.home = home
        self.log_path = home.parent / f"{home.name}.daemon.log"
        self.log_level = log_level
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self._spy: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.proc is not None, "start() first"
        return self.proc.pid

    def start(self) -> float:
        """Start the daemon; return seconds from spawning it until it serves."""
        self._remove_stale_sockets()
        command = [sys.executable, "-m", "keyturn.console.cli", "daemon"]
        command += ["--home", str(self.home), "--log-level", self.log_level]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
        with open(self.log_path, "ab") as log:
            began = time.perf_counter()
            self.proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        self._wait_serving()
        ready = time.perf_counter() - began
        self._start_profiler()
        return ready

    def _remove_stale_sockets(self) -> None:
        for name in ("api.sock", "events.sock"):
            (self.home / name).unlink(missing_ok=True)

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        api = self.home / "api.sock"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited early:\n{self.log_tail()}")
            if api.exists() and self._probe():
                return
            time.sleep(PROBE_PAUSE_S)
        raise RuntimeError(
            f"daemon did not serve in {START_TIMEOUT_S}s:\n{self.log_tail()}"
        )

    def _probe(self) -> bool:
        try:
            with Client.from_home(
                self.home, "admin", timeout_s=PROBE_TIMEOUT_S
            ) as client:
                client.status()
        except KeyturnError:
            return False
        return True

    def _start_profiler(self) -> None:
        if self.profile is None:
            return
        command = ["py-spy", "record", "--pid", str(self.pid), "--nonblocking"]
        command += ["--threads", "--format", "raw", "--rate", str(PROFILE_RATE_HZ)]
        command += ["--output", str(self.profile)]
        self._spy = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def rss_kib(self) -> int:
        """The daemon's VmRSS in KiB."""
        return rss_kib(self.pid)

    def stop(self) -> float:
        """SIGTERM, wait for a clean exit; return the seconds the stop took."""
        self._stop_profiler()
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        began = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"daemon did not stop in {STOP_TIMEOUT_S}s") from None
        return time.perf_counter() - began

    def _stop_profiler(self) -> None:
        if self._spy is None:
            return
        self._spy.send_signal(signal.SIGINT)
        try:
            self._spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._spy.kill()
            self._spy.wait()
        self._spy = None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the daemon wrote."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> DaemonProc:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
