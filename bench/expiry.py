"""Expiry punctuality: many active grants with deadlines spread over a window.

A ``request`` asks for a whole number of seconds, counted from the moment
the daemon activates it, so a grant meant to end at instant ``t`` asks for
``round(t - now)`` and ends within half a second of ``t``. The grants are
all made before the first deadline (the lead time is taken from the
throughput measured in the same run), in shuffled deadline order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.events import Collected, EventCollector
from bench.homes import BENCH_IDENTITY, DaemonProc, make_home
from bench.plan import Plan
from bench.stats import Summary, combine, summarize
from bench.wire import Endpoint, LoadResult, Pipeliner, TtlFor

__all__ = [
    "TargetsFor",
    "lead_time_s",
    "measure_spread",
    "run_keyturn_deadlines",
    "summarize_lateness",
]

LEAD_FACTOR = 1.5
"""Lead time over the expected loading time, for a slower run."""
READY_TIMEOUT_S = 15.0
"""A subscriber must see its subscription in place within this long."""
LOAD_TIME_LIMIT_S = 600.0
RANDOM_SEED = 20_240_601
"""Deadline order is shuffled, the same way every run."""

TargetsFor = Callable[[float], TtlFor]
"""Given the wall time of the first deadline, the ttl function for the loader."""


def lead_time_s(count: int, rate_per_s: float, pad_s: float) -> float:
    """Seconds to leave before the first deadline so that loading is done by then."""
    return count / rate_per_s * LEAD_FACTOR + pad_s


def summarize_lateness(collected: Collected, expected: int) -> dict[str, Any]:
    """Lateness of one run in ms, with what arrived and when."""
    lateness = summarize(collected.lateness_ms())
    figures: dict[str, Any] = {
        "lateness_ms": lateness.to_json(),
        "received": len(collected.arrivals),
        "expected": expected,
        "subscriber_ready": collected.ready,
    }
    if collected.noticed:
        figures["noticed_ms"] = summarize(collected.noticed_ms()).to_json()
    if collected.deadlines:
        first, last = min(collected.deadlines), max(collected.deadlines)
        figures["deadline_spread_s"] = last - first
        figures["done_after_first_deadline_s"] = max(collected.arrivals) - first
        figures["done_after_last_deadline_s"] = max(collected.arrivals) - last
    return figures


def run_keyturn_deadlines(
    home: Path,
    plan: Plan,
    count: int,
    targets_for: TargetsFor,
    span_s: float,
    rate_per_s: float,
    profile: Path | None,
) -> tuple[dict[str, Any], Collected]:
    """Start a daemon, make ``count`` grants with the deadlines asked for, collect.

    ``span_s`` is how far past the first deadline the last one may fall.
    """
    lead = lead_time_s(count, rate_per_s, plan.lead_pad_s)
    end_by = time.time() + READY_TIMEOUT_S + lead + span_s + 1.0 + plan.grace_s
    out = home.parent / f"{home.name}.events"
    with DaemonProc(home, profile=profile) as daemon:
        daemon.start()
        collector = EventCollector("keyturn", home, count, end_by, out)
        try:
            if not collector.wait_ready(READY_TIMEOUT_S):
                raise RuntimeError("the subscriber saw no heartbeat")
            first = time.time() + lead
            load = _load(daemon, plan, count, targets_for(first))
            loaded_at = time.time()
            collected = collector.result()
        finally:
            collector.close()
        rss = daemon.rss_kib()
    figures = summarize_lateness(collected, count)
    figures.update(_load_figures(load, loaded_at, first, rss))
    return figures, collected


def _load(daemon: DaemonProc, plan: Plan, count: int, ttl_for: TtlFor) -> LoadResult:
    loader = Pipeliner(
        Endpoint.from_home(daemon.home, BENCH_IDENTITY), plan.clients, plan.window
    )
    try:
        result = loader.run(count, ttl_for, LOAD_TIME_LIMIT_S)
    finally:
        loader.close()
    if result.errors or result.ok != count:
        raise RuntimeError(
            f"loading {count} grants: {result.ok} ok, {dict(result.errors)}"
        )
    return result


def _load_figures(
    load: LoadResult, loaded_at: float, first: float, rss_kib: int
) -> dict[str, Any]:
    return {
        "load_s": load.elapsed_s,
        "loaded_before_first_deadline": loaded_at <= first,
        "rss_mib_after": rss_kib / 1024,
    }


def _spread_targets(count: int, window_s: float) -> TargetsFor:
    offsets = [window_s * index / count for index in range(count)]
    random.Random(RANDOM_SEED).shuffle(offsets)

    def targets_for(first: float) -> TtlFor:
        return lambda index: max(1, round(first + offsets[index] - time.time()))

    return targets_for


def measure_spread(
    folder: Path, plan: Plan, rate_per_s: float, profile_dir: Path | None
) -> tuple[dict[str, Any], list[float]]:
    """Lateness of ``grant.expired`` with deadlines spread over the window, repeated.

    Returns the figures and the deadlines of the first run (for Redis).
    """
    runs: list[dict[str, Any]] = []
    deadlines: list[float] = []
    for index in range(plan.long_repeats):
        home = make_home(folder, f"spread{index}")
        profile = profile_dir / f"expiry{index}.txt" if profile_dir else None
        targets = _spread_targets(plan.expiry_grants, plan.expiry_window_s)
        figures, collected = run_keyturn_deadlines(
            home,
            plan,
            plan.expiry_grants,
            targets,
            plan.expiry_window_s,
            rate_per_s,
            profile,
        )
        runs.append(figures)
        deadlines = deadlines or collected.deadlines
    return _combine_runs(runs, plan.expiry_window_s), deadlines


def _combine_runs(runs: list[dict[str, Any]], window_s: float) -> dict[str, Any]:
    summaries = [Summary(**run["lateness_ms"]) for run in runs]
    return {
        "lateness_ms": combine(summaries),
        "window_s": window_s,
        "runs": runs,
    }
