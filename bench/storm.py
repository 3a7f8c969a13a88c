"""Expiry storms: many grants that end at the same moment.

Through the API a grant's deadline is its activation time plus a whole
number of seconds, and activations are spread over the time loading takes,
so asking each grant for ``ceil(T - now)`` seconds puts every deadline in
``[T, T + 1 s)``: the closest the API allows. A second storm has one
deadline exactly: a journal written directly (``bench.journal_gen``) holds
the grants, all expiring at ``T``, and the daemon recovers them before ``T``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.events import EventCollector
from bench.expiry import TargetsFor, run_keyturn_deadlines, summarize_lateness
from bench.homes import DaemonProc, make_home
from bench.journal_gen import JournalWriter, home_signer, write_storm_journal
from bench.plan import Plan
from bench.stats import median_of
from bench.wire import TtlFor

__all__ = ["measure_api_storm", "measure_journal_storm"]

READY_TIMEOUT_S = 15.0
CALIBRATION_GRANTS = 300
"""Grants written to time the journal writer before the real journal."""
START_S_PER_GRANT = 60e-6
"""A generous guess of the daemon's replay time per recovered grant."""
START_PADS = 2.0
"""Plus this many lead pads for the interpreter, the subscriber and a heartbeat."""
MARGIN_FACTOR = 2.0
"""Time left before the deadline over what writing and starting should take."""
BEFORE_DEADLINE_S = 0.5
"""The daemon must serve at least this long before the storm's deadline."""


def _storm_targets() -> TargetsFor:
    def targets_for(first: float) -> TtlFor:
        return lambda _index: max(1, math.ceil(first - time.time()))

    return targets_for


def _storm_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return median_of([run[key] for run in runs if key in run])

    return {
        "done_after_first_deadline_s": med("done_after_first_deadline_s"),
        "done_after_last_deadline_s": med("done_after_last_deadline_s"),
        "deadline_spread_s": med("deadline_spread_s"),
        "lateness_p99_ms": median_of([run["lateness_ms"]["p99"] for run in runs]),
        "runs": runs,
    }


def measure_api_storm(
    folder: Path, plan: Plan, rate_per_s: float, profile_dir: Path | None
) -> dict[str, Any]:
    """Grants made through the API with deadlines as close as it allows."""
    runs = []
    for index in range(plan.long_repeats):
        home = make_home(folder, f"storm{index}")
        profile = profile_dir / f"storm{index}.txt" if profile_dir else None
        figures, _ = run_keyturn_deadlines(
            home, plan, plan.storm_grants, _storm_targets(), 1.0, rate_per_s, profile
        )
        runs.append(figures)
    return _storm_figures(runs)


def _writer_seconds_per_grant(folder: Path) -> float:
    home = make_home(folder, "calibrate")
    writer = JournalWriter(home / "journal.ktj", home_signer(home), 1000)
    began = time.perf_counter()
    for index in range(CALIBRATION_GRANTS):
        writer.grant(index, time.time(), 60, expired=False)
    writer.close(time.time())
    return (time.perf_counter() - began) / CALIBRATION_GRANTS


def _journal_storm_once(
    home: Path, plan: Plan, margin_s: float, profile: Path | None
) -> dict[str, Any]:
    count = plan.storm_grants
    deadline = time.time() + margin_s
    stats = write_storm_journal(home, count, deadline)
    end_by = deadline + plan.grace_s + 1.0
    out = home.parent / f"{home.name}.events"
    collector = EventCollector("keyturn", home, count, end_by, out)
    try:
        with DaemonProc(home, profile=profile) as daemon:
            start_s = daemon.start()
            serving_at = time.time()
            collector.wait_ready(READY_TIMEOUT_S)
            collected = collector.result()
    finally:
        collector.close()
    figures = summarize_lateness(collected, count)
    figures.update(
        written_s=stats.seconds,
        start_s=start_s,
        served_before_deadline_s=deadline - serving_at,
        valid=deadline - serving_at >= BEFORE_DEADLINE_S,
    )
    return figures


def measure_journal_storm(
    folder: Path, plan: Plan, profile_dir: Path | None
) -> dict[str, Any]:
    """Grants that all share one deadline, recovered from a written journal."""
    per_grant = _writer_seconds_per_grant(folder)
    margin = (
        MARGIN_FACTOR * plan.storm_grants * (per_grant + START_S_PER_GRANT)
        + START_PADS * plan.lead_pad_s
    )
    runs = []
    for index in range(plan.long_repeats):
        home = make_home(folder, f"jstorm{index}")
        profile = profile_dir / f"jstorm{index}.txt" if profile_dir else None
        figures = _journal_storm_once(home, plan, margin, profile)
        if not figures["valid"]:
            margin *= 2
        runs.append(figures)
    result = _storm_figures([run for run in runs if run["valid"]] or runs)
    result["margin_s"] = margin
    return result
