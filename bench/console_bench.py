"""How the console keeps up with 10,000 and 100,000 live grants.

Runs the real console headless (Textual still composes every screen update
and calls each visible line's ``render_line``; only the terminal write is
skipped), feeds its state store directly with daemon-shaped objects (no
daemon needed), and prints:

- key-to-screen latency: from a key press until the screen update it caused
  has been rendered (cursor moves, paging, sorting, filtering);
- CPU per countdown tick: process CPU time over an idle window divided by the
  ticks in it (the app's only work while idle is the once-a-second tick);
- the cost of loading a snapshot and of applying a burst of records.

    python bench/console_bench.py            # 10,000 and 100,000 grants
    python bench/console_bench.py 20000      # other sizes
    python -m bench.console_bench --quick    # 10,000 grants, short windows

The benchmark runner (``python -m bench``) calls :func:`run`; the last line
printed is the same figures as one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from textual.pilot import Pilot

from keyturn.console.app import KeyturnConsole
from keyturn.console.link import BATCH_MAX
from keyturn.console.messages import (
    DaemonConnected,
    EventsArrived,
    IdentityKnown,
    SnapshotTaken,
)
from keyturn.console.state import PreparedSnapshot, parse_records

logger = logging.getLogger(__name__)

SIZES = (10_000, 100_000)
"""Live grants in each run, unless given on the command line."""
QUICK_SIZES = (10_000,)
"""Live grants in a quick run."""
TERMINAL = (160, 50)
"""Terminal size, as in DESIGN.md's figures."""
KEY_PRESSES = 40
"""Presses per measured key (a quarter in a quick run)."""
IDLE_WINDOW_S = 10.0
"""Length of the idle window over which tick CPU is measured (3 s quick)."""
SETTLE_S = 0.05
"""Pause after each measured key, so presses do not queue behind each other."""
BURST_RECORDS = 20_000
"""Records in the burst (C-07's 20,000 events; 5,000 in a quick run)."""
VENDORS = ("braintree", "segment", "model-host", "zendesk", "customer-io", "datadog")
SCOPES = (("payments:read",), ("events:write", "events:read"), ("prompts:read",))


def grant(number: int, now: float, rng: random.Random) -> dict[str, Any]:
    """A live grant as the daemon sends it."""
    life = rng.choice((300.0, 900.0, 1800.0, 3600.0))
    expires = now + rng.uniform(5.0, life)
    return {
        "grant_id": f"grt_{number:012x}",
        "request_id": f"req_{number:012x}",
        "vendor": VENDORS[number % len(VENDORS)],
        "scopes": list(SCOPES[number % len(SCOPES)]),
        "state": "active",
        "requested_by": VENDORS[number % len(VENDORS)],
        "approved_by": ["policy"],
        "activated_at": expires - life,
        "expires_at": expires,
        "max_expires_at": expires + 600.0,
        "key_id": "k0",
        "ended_at": 0.0,
        "ended_by": "",
        "end_reason": "",
        "ending": "",
    }


def snapshot(count: int, now: float) -> dict[str, Any]:
    """A snapshot with ``count`` live grants."""
    rng = random.Random(count)
    grants = [grant(number, now, rng) for number in range(count)]
    return {
        "seq": count,
        "boot_id": "bench",
        "lockdown": {"engaged": False, "since": 0.0, "by": "", "reason": ""},
        "grants": grants,
        "requests": [],
        "now": now,
    }


def burst(first: int, count: int, seq: int, now: float) -> list[dict[str, Any]]:
    """``count`` grant.active records for new grants, in seq order."""
    rng = random.Random(first)
    return [
        {
            "seq": seq + n + 1,
            "type": "grant.active",
            "at": now,
            "actor": "policy",
            "grant": grant(first + n, now, rng),
        }
        for n in range(count)
    ]


Figures = dict[str, float]
"""Named measurements in milliseconds (and counts), JSON-ready."""


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    presses: int = KEY_PRESSES
    idle_window_s: float = IDLE_WINDOW_S
    burst_records: int = BURST_RECORDS

    @classmethod
    def quick(cls) -> Plan:
        """A short run for the benchmark runner's quick mode."""
        return cls(KEY_PRESSES // 4, 3.0, BURST_RECORDS // 4)


def spread(name: str, samples: list[float]) -> Figures:
    """p50, p99 and max of samples in seconds, as milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        f"{name}_p50_ms": round(statistics.median(ordered) * 1000, 2),
        f"{name}_p99_ms": round(p99 * 1000, 2),
        f"{name}_max_ms": round(ordered[-1] * 1000, 2),
    }


async def timed_keys(pilot: Pilot[int], keys: list[str]) -> list[float]:
    """Seconds from each key press until the first screen update after it.

    The screen's compositor refresh is wrapped to note when each update has
    been rendered; the pilot's own waiting (which adds tens of milliseconds
    of polling) is not counted.
    """
    screen = pilot.app.screen
    rendered: list[float] = []
    original = screen._compositor_refresh

    def noting() -> None:
        original()
        rendered.append(time.perf_counter())

    screen._compositor_refresh = noting  # type: ignore[method-assign]
    samples = []
    try:
        for key in keys:
            start = time.perf_counter()
            await pilot.press(key)
            await pilot.pause(SETTLE_S)
            after = [moment for moment in rendered if moment > start]
            samples.append(after[0] - start if after else float("nan"))
    finally:
        screen._compositor_refresh = original  # type: ignore[method-assign]
    return samples


class MeasuredConsole(KeyturnConsole):
    """The console, noting the process CPU time at the start of each tick."""

    tick_started: list[float]

    def tick(self) -> None:
        """Note the time, then tick as usual."""
        self.tick_started.append(time.process_time())
        super().tick()


async def load(pilot: Pilot[int], app: KeyturnConsole, count: int) -> Figures:
    """Give the app a snapshot of ``count`` grants, as the daemon link does.

    The link parses and indexes a snapshot in its own thread; the app's
    thread only swaps the prepared state in. Both times are measured.
    """
    data = snapshot(count, time.time())
    start = time.perf_counter()
    prepared = await asyncio.to_thread(PreparedSnapshot.build, data)
    built = time.perf_counter()
    app.post_message(SnapshotTaken(prepared))
    while len(app.state.grants) < count:
        await pilot.pause(0.001)
    await pilot.pause(0)
    shown = time.perf_counter()
    return {
        "snapshot_prepare_ms": round((built - start) * 1000, 1),
        "snapshot_install_ms": round((shown - built) * 1000, 1),
    }


async def measure_keys(pilot: Pilot[int], app: KeyturnConsole, plan: Plan) -> Figures:
    """Key-to-screen latency for the keys an operator uses most."""
    presses = plan.presses
    scenarios: list[tuple[str, list[str]]] = [
        ("key_down", ["down"] * presses),
        ("key_pagedown", ["pagedown"] * presses),
        ("key_end_home", ["end", "home"] * (presses // 2)),
        ("key_sort", ["s"] * 8),
        ("key_tab", ["tab"] * 9),
    ]
    figures: Figures = {}
    for name, keys in scenarios:
        figures |= spread(name, await timed_keys(pilot, keys))
    app.main.grants.focus()
    await pilot.press("slash")
    figures |= spread("key_filter_letter", await timed_keys(pilot, list("braintree")))
    await pilot.press("escape")
    return figures | measure_search(app)


def measure_search(app: KeyturnConsole) -> Figures:
    """What the filter search costs (it runs once the typed letter is shown)."""
    index = app.state.grant_index
    figures: Figures = {}
    for needle in ("b", "br", "bra"):
        start = time.perf_counter()
        index.set_filter(needle)
        figures[f"filter_search_{needle}_ms"] = round(
            (time.perf_counter() - start) * 1000, 2
        )
    index.set_filter("")
    return figures


async def measure_ticks(pilot: Pilot[int], label: str, plan: Plan) -> Figures:
    """The CPU the once-a-second countdown costs.

    Two views: the process CPU over an idle window divided by the ticks in
    it (everything the app did, garbage collection included), and each
    tick's own CPU from the timer firing until its screen update was
    rendered (p50 and max).
    """
    app = pilot.app
    assert isinstance(app, MeasuredConsole)
    screen = app.screen
    per_tick: list[float] = []
    refresh = screen._compositor_refresh

    def timed_refresh() -> None:
        refresh()
        if app.tick_started:
            per_tick.append(time.process_time() - app.tick_started.pop())

    screen._compositor_refresh = timed_refresh  # type: ignore[method-assign]
    try:
        await pilot.pause(1.0)
        per_tick.clear()
        cpu = time.process_time()
        wall = time.perf_counter()
        await pilot.pause(plan.idle_window_s)
        cpu = time.process_time() - cpu
        ticks = time.perf_counter() - wall
    finally:
        screen._compositor_refresh = refresh  # type: ignore[method-assign]
    return {
        f"tick_cpu_{label}_window_ms": round(cpu / ticks * 1000, 2),
        f"tick_cpu_{label}_p50_ms": round(statistics.median(per_tick) * 1000, 2),
        f"tick_cpu_{label}_max_ms": round(max(per_tick) * 1000, 2),
    }


async def measure_burst(
    pilot: Pilot[int], app: KeyturnConsole, count: int, plan: Plan
) -> Figures:
    """What a burst of records costs the UI thread per batch, and keys after it."""
    records = burst(count + 1, plan.burst_records, app.state.seq, time.time())
    batches = [
        parse_records(records[i : i + BATCH_MAX])
        for i in range(0, len(records), BATCH_MAX)
    ]
    samples = []
    for batch in batches:
        start = time.perf_counter()
        app.post_message(EventsArrived(batch))
        await pilot.pause(0)
        samples.append(time.perf_counter() - start)
    figures = spread(f"burst_batch_{BATCH_MAX}", samples)
    return figures | spread(
        "key_down_after_burst", await timed_keys(pilot, ["down"] * 10)
    )


async def measure_size(count: int, plan: Plan) -> Figures:
    """Every figure for one number of live grants."""
    app = MeasuredConsole(None, "oncall")
    app.tick_started = []
    async with app.run_test(size=TERMINAL) as pilot:
        app.post_message(IdentityKnown("oncall", "approver", ""))
        app.post_message(DaemonConnected(time.time(), restarted=False))
        figures = await load(pilot, app, count)
        figures |= await measure_ticks(pilot, "idle", plan)
        figures |= await measure_keys(pilot, app, plan)
        figures |= await measure_burst(pilot, app, count, plan)
        figures |= await measure_ticks(pilot, "after_burst", plan)
    return figures


def run(quick: bool = False, sizes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Measure the console; the benchmark runner's entry point.

    Returns:
        ``{"terminal": "160x50", "grants_10000": {figure: value, ...}, ...}``.
    """
    plan = Plan.quick() if quick else Plan()
    chosen = sizes or (QUICK_SIZES if quick else SIZES)
    result: dict[str, Any] = {"terminal": f"{TERMINAL[0]}x{TERMINAL[1]}"}
    for count in chosen:
        result[f"grants_{count}"] = asyncio.run(measure_size(count, plan))
    return result


def report(result: dict[str, Any]) -> None:
    """Print the figures for people, one per line."""
    print(f"terminal {result['terminal']}")
    for key, figures in result.items():
        if isinstance(figures, dict):
            print(f"{key.removeprefix('grants_')} live grants")
            for name, value in figures.items():
                print(f"  {name:<34} {value:>9}")


def main(argv: list[str]) -> int:
    """Measure the sizes given (default 10,000 and 100,000), or a quick run."""
    quick = "--quick" in argv
    sizes = tuple(int(arg) for arg in argv if arg != "--quick") or None
    result = run(quick=quick, sizes=sizes)
    report(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
