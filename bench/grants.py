"""Grant round trip at several counts of active grants, memory, and throughput."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.homes import BENCH_IDENTITY, BENCH_SCOPE, BENCH_VENDOR, DaemonProc, make_home
from bench.plan import Plan
from bench.stats import combine, summarize
from bench.wire import Endpoint, LoadResult, Pipeliner, dealer, round_trips
from keyturn.shared.client import Client

__all__ = ["load_grants", "measure_round_trips", "measure_throughput"]

LONG_TTL_S = 6 * 3600
"""Grants made only to be there never expire during a benchmark."""
WARMUP_REQUESTS = 50
"""Round trips before measuring (handshake, caches, first allocations)."""
LOAD_TIME_LIMIT_S = 600.0
"""Loading grants gives up after this long."""
MAX_RATE_PER_S = 200_000
"""Bounds the request count of a timed run; no run gets near it."""


def _profile(profile_dir: Path | None, name: str) -> Path | None:
    return profile_dir / f"{name}.txt" if profile_dir else None


def load_grants(loader: Pipeliner, count: int, ttl_s: int = LONG_TTL_S) -> LoadResult:
    """Make ``count`` grants with one ttl through the pipelining clients."""
    if count <= 0:
        return LoadResult()
    result = loader.run(count, lambda _index: ttl_s, LOAD_TIME_LIMIT_S)
    if result.errors or result.ok != count:
        raise RuntimeError(
            f"loading {count} grants: {result.ok} ok, {dict(result.errors)}"
        )
    return result


def _client_round_trips(home: Path, count: int) -> list[float]:
    with Client.from_home(home, BENCH_IDENTITY) as client:
        samples = []
        for _ in range(count + 1):
            began = time.perf_counter()
            client.request(
                BENCH_VENDOR, [BENCH_SCOPE], ttl=LONG_TTL_S, reason="benchmark"
            )
            samples.append((time.perf_counter() - began) * 1000.0)
    return samples[1:]  # the first pays for the CurveZMQ handshake


def _one_level(daemon: DaemonProc, endpoint: Endpoint, plan: Plan) -> dict[str, Any]:
    sock = dealer(endpoint)
    try:
        round_trips(sock, WARMUP_REQUESTS, LONG_TTL_S)
        runs = [
            summarize(round_trips(sock, plan.rt_samples, LONG_TTL_S))
            for _ in range(plan.repeats)
        ]
    finally:
        sock.close(linger=0)
    client = summarize(_client_round_trips(daemon.home, plan.client_rt_samples))
    return {"wire_ms": combine(runs), "client_ms": client.to_json()}


def measure_round_trips(
    folder: Path, plan: Plan, profile_dir: Path | None
) -> dict[str, Any]:
    """Sequential grant round trips from one DEALER at each level of active grants.

    Each level also records the daemon's RSS; the grants the measurement
    itself makes are counted in ``active_after``.
    """
    home = make_home(folder, "rt")
    levels: dict[str, Any] = {}
    with DaemonProc(home, profile=_profile(profile_dir, "roundtrip")) as daemon:
        daemon.start()
        endpoint = Endpoint.from_home(home, BENCH_IDENTITY)
        loader = Pipeliner(endpoint, plan.clients, plan.window)
        active = 0
        try:
            for level in plan.rt_levels:
                load_grants(loader, level - active)
                active = max(active, level)
                rss_loaded = daemon.rss_kib()
                entry = _one_level(daemon, endpoint, plan)
                active += WARMUP_REQUESTS + plan.repeats * plan.rt_samples
                active += plan.client_rt_samples + 1
                entry.update(active_after=active, rss_loaded_kib=rss_loaded)
                entry["rss_kib"] = daemon.rss_kib()
                levels[str(level)] = entry
        finally:
            loader.close()
    return {"levels": levels, "memory": _memory(levels)}


def _memory(levels: dict[str, Any]) -> dict[str, Any]:
    """RSS at the largest level, and what each further grant costs."""
    keys = sorted(levels, key=int)
    low, high = levels[keys[0]], levels[keys[-1]]
    grants = high["active_after"] - low["active_after"]
    per_grant = (high["rss_kib"] - low["rss_kib"]) * 1024 / grants if grants else 0.0
    return {
        "active": int(keys[-1]),
        "rss_mb": high["rss_kib"] * 1024 / 1e6,
        "rss_base_mb": low["rss_kib"] * 1024 / 1e6,
        "bytes_per_grant": per_grant,
    }


def measure_throughput(
    folder: Path, plan: Plan, profile_dir: Path | None
) -> dict[str, Any]:
    """Auto-approved grants per second from many pipelining clients, repeated."""
    home = make_home(folder, "tp")
    with DaemonProc(home, profile=_profile(profile_dir, "throughput")) as daemon:
        daemon.start()
        loader = Pipeliner(
            Endpoint.from_home(home, BENCH_IDENTITY), plan.clients, plan.window
        )
        try:
            load_grants(loader, plan.clients * plan.window * 4)
            count = int(plan.throughput_s * MAX_RATE_PER_S)
            runs = [
                loader.run(count, lambda _i: LONG_TTL_S, plan.throughput_s)
                for _ in range(plan.repeats)
            ]
        finally:
            loader.close()
        rss = daemon.rss_kib()
    return _throughput_figures(runs, plan, rss)


def _throughput_figures(
    runs: list[LoadResult], plan: Plan, rss_kib: int
) -> dict[str, Any]:
    rates = [run.rate for run in runs]
    errors = sum(sum(run.errors.values()) for run in runs)
    return {
        "grants_per_s": statistics.median(rates),
        "runs_per_s": rates,
        "latency_ms": combine([summarize(run.latencies_ms) for run in runs]),
        "clients": plan.clients,
        "window": plan.window,
        "errors": errors,
        "rss_mib_after": rss_kib / 1024,
    }
