"""Recovery: from spawning the daemon until it answers, with a large journal.

The journal is written directly (``bench.journal_gen``): a daemon making a
million records through the API would take minutes, and the file is the
same. Three starts are timed, each repeated: an empty home (the cost of the
interpreter, imports and sockets), a cold start with no snapshot (the whole
journal is replayed), and a warm start from the snapshot the daemon itself
wrote at its previous clean stop.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.homes import DaemonProc, make_home
from bench.journal_gen import write_recovery_journal
from bench.plan import Plan
from bench.stats import median_of
from keyturn.shared.client import Client
from keyturn.shared.keys import Home

__all__ = ["measure_recovery"]

REPLAY_LINE = re.compile(r"(\d+) journal records replayed in ([0-9.]+)s")
"""The daemon's INFO line after recovery."""
SNAPSHOT_REFUSED = "snapshot unreadable"
"""The daemon's WARNING when it cannot use its snapshot."""


def _start_once(home: Path) -> dict[str, Any]:
    daemon = DaemonProc(home, log_level="info")
    log_before = daemon.log_path.stat().st_size if daemon.log_path.exists() else 0
    with daemon:
        start_s = daemon.start()
        rss_kib = daemon.rss_kib()
        with Client.from_home(home, "admin") as client:
            active = client.status()["counts"]["active"]
        stop_s = daemon.stop()
    log = daemon.log_path.read_text(errors="replace")[log_before:]
    return {
        "start_s": start_s,
        "stop_s": stop_s,
        "active": active,
        "rss_mib": rss_kib / 1024,
        **_log_figures(log),
    }


def _log_figures(log: str) -> dict[str, Any]:
    match = REPLAY_LINE.search(log)
    return {
        "replayed_records": int(match.group(1)) if match else None,
        "replay_s": float(match.group(2)) if match else None,
        "snapshot_refused": SNAPSHOT_REFUSED in log,
    }


def _starts(home: Path, plan: Plan, *, keep_snapshot: bool) -> dict[str, Any]:
    runs = []
    for _ in range(plan.long_repeats):
        if not keep_snapshot:
            Home(home).snapshot.unlink(missing_ok=True)
        runs.append(_start_once(home))
    return {
        "start_s": median_of([run["start_s"] for run in runs]),
        "stop_s": median_of([run["stop_s"] for run in runs]),
        "runs": runs,
    }


def measure_recovery(folder: Path, plan: Plan) -> dict[str, Any]:
    """Start-to-serving times: empty home, cold (no snapshot), warm (snapshot).

    Each start is repeated ``long_repeats`` times: a cold start of a million
    records takes as long as a long measurement.
    """
    empty = _starts(make_home(folder, "rec-empty"), plan, keep_snapshot=False)
    home = make_home(folder, "rec")
    stats = write_recovery_journal(home, plan.recovery_grants, plan.recovery_records)
    cold = _starts(home, plan, keep_snapshot=False)
    # The last cold start ended with a clean stop, which wrote a snapshot.
    warm = _starts(home, plan, keep_snapshot=True)
    return {
        "journal": {
            "records": stats.records,
            "grants_active": stats.grants_active,
            "grants_ended": stats.grants_ended,
            "bytes": stats.bytes,
            "written_s": stats.seconds,
            "how": "written directly in the daemon's journal format (bench.journal_gen)",
        },
        "empty": empty,
        "cold": cold,
        "warm": warm,
    }
