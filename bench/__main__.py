"""``python -m bench [--quick]``: run every benchmark, print a table, write JSON.

Run it from the repository root. Each section starts what it measures under
one temporary folder in /tmp and stops it again; a section that fails is
reported in the table and the JSON, and the others still run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench.console_hook import run_console_bench
from bench.expiry import measure_spread
from bench.floor import measure_floor
from bench.grants import measure_round_trips, measure_throughput
from bench.homes import scratch_folder
from bench.plan import FULL, QUICK, Plan
from bench.recovery import measure_recovery
from bench.redis_side import measure_redis
from bench.report import build_rows, format_table, ratios, targets, write_json
from bench.storm import measure_api_storm, measure_journal_storm

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "latest.json"
SECTIONS = (
    "floor",
    "round_trip",
    "throughput",
    "expiry",
    "storm_api",
    "storm_journal",
    "recovery",
    "redis",
    "console",
)
DEFAULT_RATE_PER_S = 2000.0
"""Grants per second assumed for lead times when throughput was not measured."""


class Run:
    """One benchmark run: its plan, its folder, and the figures so far."""

    def __init__(self, plan: Plan, folder: Path, profile_dir: Path | None) -> None:
        self.plan = plan
        self.folder = folder
        self.profile_dir = profile_dir
        self.figures: dict[str, Any] = {"errors": {}, "timings_s": {}}
        self.spread_deadlines: list[float] = []

    @property
    def rate(self) -> float:
        """The measured throughput, for lead times."""
        measured = self.figures.get("throughput", {}).get("grants_per_s")
        return float(measured) if measured else DEFAULT_RATE_PER_S

    def section(self, name: str, measure: Callable[[], Any]) -> None:
        """Run one section, keep its figures or its failure, and say how long it took."""
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        try:
            self.figures[name] = measure()
        except Exception as exc:  # noqa: BLE001 - one failed section must not hide the rest
            traceback.print_exc(file=sys.stderr)
            self.figures["errors"][name] = f"{type(exc).__name__}: {exc}"
        took = time.perf_counter() - began
        self.figures["timings_s"][name] = took
        print(f"[bench] {name} done in {took:.1f} s", file=sys.stderr, flush=True)

    def spread(self) -> dict[str, Any]:
        """The expiry section, keeping its deadlines for Redis."""
        figures, self.spread_deadlines = measure_spread(
            self.folder, self.plan, self.rate, self.profile_dir
        )
        return figures


def _measures(run: Run) -> dict[str, Callable[[], Any]]:
    plan, folder, profile = run.plan, run.folder, run.profile_dir
    return {
        "floor": lambda: measure_floor(folder, plan),
        "round_trip": lambda: measure_round_trips(folder, plan, profile),
        "throughput": lambda: measure_throughput(folder, plan, profile),
        "expiry": run.spread,
        "storm_api": lambda: measure_api_storm(folder, plan, run.rate, profile),
        "storm_journal": lambda: measure_journal_storm(folder, plan, profile),
        "recovery": lambda: measure_recovery(folder, plan),
        "redis": lambda: measure_redis(folder, plan, run.spread_deadlines),
        "console": lambda: run_console_bench(plan.quick, REPO_ROOT),
    }


def _version_of(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def _meta(plan: Plan, argv: list[str]) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m bench", *argv]),
        "plan": asdict(plan),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
        "redis_server": _version_of(["redis-server", "--version"])
        if shutil.which("redis-server")
        else "",
        "commit": _version_of(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]
        ),
    }


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small counts; under a minute"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="override the repeats of short measurements",
    )
    parser.add_argument(
        "--long-repeats",
        type=int,
        default=0,
        help="override the repeats of long measurements",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="folder for py-spy flame graphs of the daemon",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.repeats > 0:
        plan = replace(plan, repeats=args.repeats)
    if args.long_repeats > 0:
        plan = replace(plan, long_repeats=args.long_repeats)
    return plan


def _chosen(only: str) -> list[str]:
    names = [name.strip() for name in only.split(",") if name.strip()] or list(SECTIONS)
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise SystemExit(
            f"unknown sections: {', '.join(unknown)}; known: {', '.join(SECTIONS)}"
        )
    return [name for name in SECTIONS if name in names]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; exit 1 when a section failed."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    plan = _plan(args)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    folder = scratch_folder()
    run = Run(plan, folder, args.profile)
    try:
        measures = _measures(run)
        for name in _chosen(args.only):
            run.section(name, measures[name])
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    document = _finish(run, _meta(plan, argv), time.perf_counter() - began)
    print(format_table(build_rows(run.figures, document["ratios"])))
    write_json(args.out, document)
    print(f"\nfigures written to {args.out}  ({document['meta']['duration_s']:.1f} s)")
    return 1 if run.figures["errors"] else 0


def _finish(run: Run, meta: dict[str, Any], duration_s: float) -> dict[str, Any]:
    meta["duration_s"] = duration_s
    meta["loadavg_end"] = os.getloadavg()
    ratio = ratios(run.figures)
    return {
        "meta": meta,
        **run.figures,
        "ratios": ratio,
        "targets": targets(run.figures, ratio),
    }


if __name__ == "__main__":
    sys.exit(main())
