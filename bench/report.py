"""The table, the ratios and the targets, from the figures of one run."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Row", "build_rows", "format_table", "ratios", "targets", "write_json"]

RSS_TARGET_MB = 200.0
RT_P50_TARGET_MS = 0.5
RT_P99_TARGET_MS = 2.0
RT_FLOOR_TARGET_X = 3.0
THROUGHPUT_TARGET_PER_S = 10_000.0
LATENESS_P99_TARGET_MS = 2.0
LATENESS_MAX_TARGET_MS = 20.0
LATENESS_VS_REDIS_TARGET_X = 10.0
STORM_TARGET_S = 1.0
RECOVERY_TARGET_S = 3.0
TARGET_LEVEL = "10000"
"""The round-trip targets apply at 10,000 active grants (the full run's level);
a quick run is judged at its middle level instead."""

Figures = dict[str, Any]


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    measurement: str
    keyturn: str = ""
    reference: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


def _get(figures: Figures, *path: str) -> Any:
    value: Any = figures
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _ms(summary: Any, keys: tuple[str, ...] = ("p50", "p99")) -> str:
    if not isinstance(summary, dict):
        return "-"
    return " / ".join(f"{summary[key]:.3f}" for key in keys) + " ms"


def _x(numerator: Any, denominator: Any) -> float:
    if (
        not numerator
        or not denominator
        or math.isnan(numerator)
        or math.isnan(denominator)
    ):
        return math.nan
    return float(numerator) / float(denominator)


def _mark(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def target_level(figures: Figures) -> str:
    """The level of active grants the round-trip targets are judged at."""
    levels = sorted(_get(figures, "round_trip", "levels") or {}, key=int)
    if TARGET_LEVEL in levels or not levels:
        return TARGET_LEVEL
    return levels[len(levels) // 2]


def ratios(figures: Figures) -> Figures:
    """keyturn against its floor and against Redis, as multiples."""
    floor = _get(figures, "floor", "floor_ms") or {}
    out: Figures = {"round_trip_vs_floor": {}}
    for level, entry in (_get(figures, "round_trip", "levels") or {}).items():
        wire = entry["wire_ms"]
        out["round_trip_vs_floor"][level] = {
            key: _x(wire[key], floor.get(key)) for key in ("p50", "p99")
        }
    keyturn_rate = _get(figures, "throughput", "grants_per_s")
    out["throughput_keyturn_over_redis"] = _x(
        keyturn_rate, _get(figures, "redis", "throughput", "sets_per_s")
    )
    out["lateness_redis_over_keyturn"] = {
        key: _x(
            _get(figures, "redis", "spread", "lateness_ms", key),
            _get(figures, "expiry", "lateness_ms", key),
        )
        for key in ("p50", "p99", "max")
    }
    out["storm_redis_over_keyturn"] = _x(
        _get(figures, "redis", "storm", "done_after_first_deadline_s"),
        _get(figures, "storm_api", "done_after_first_deadline_s"),
    )
    return out


def _target(
    name: str, want: str, value: Any, check: Callable[[float], bool]
) -> Figures:
    ok = None if value is None or math.isnan(value) else bool(check(value))
    return {"name": name, "target": want, "value": value, "met": ok}


def targets(figures: Figures, ratio: Figures) -> list[Figures]:
    """Each target with the figure it is judged on, and whether it is met."""
    level = target_level(figures)
    wire = _get(figures, "round_trip", "levels", level, "wire_ms") or {}
    vs_floor = _get(ratio, "round_trip_vs_floor", level) or {}
    at = f"at {int(level):,} active"
    lateness = _get(figures, "expiry", "lateness_ms") or {}
    return [
        _target(
            f"round trip p50 {at}",
            "<= 0.5 ms",
            wire.get("p50"),
            lambda v: v <= RT_P50_TARGET_MS,
        ),
        _target(
            f"round trip p99 {at}",
            "<= 2 ms",
            wire.get("p99"),
            lambda v: v <= RT_P99_TARGET_MS,
        ),
        _target(
            "round trip p50 / floor",
            "<= 3x",
            vs_floor.get("p50"),
            lambda v: v <= RT_FLOOR_TARGET_X,
        ),
        _target(
            "throughput",
            ">= 10,000 grants/s",
            _get(figures, "throughput", "grants_per_s"),
            lambda v: v >= THROUGHPUT_TARGET_PER_S,
        ),
        _target(
            "expiry lateness p99",
            "<= 2 ms",
            lateness.get("p99"),
            lambda v: v <= LATENESS_P99_TARGET_MS,
        ),
        _target(
            "expiry lateness max",
            "<= 20 ms",
            lateness.get("max"),
            lambda v: v <= LATENESS_MAX_TARGET_MS,
        ),
        _target(
            "lateness p99 vs Redis",
            ">= 10x better",
            _get(ratio, "lateness_redis_over_keyturn", "p99"),
            lambda v: v >= LATENESS_VS_REDIS_TARGET_X,
        ),
        _target(
            "storm, one deadline",
            "<= 1 s",
            _get(figures, "storm_journal", "done_after_first_deadline_s"),
            lambda v: v <= STORM_TARGET_S,
        ),
        _target(
            "storm, API (1 s window)",
            "<= 1 s after last deadline",
            _get(figures, "storm_api", "done_after_last_deadline_s"),
            lambda v: v <= STORM_TARGET_S,
        ),
        _target(
            "RSS at the largest level",
            "<= 200 MB",
            _get(figures, "round_trip", "memory", "rss_mb"),
            lambda v: v <= RSS_TARGET_MB,
        ),
        _target(
            "recovery, cold (no snapshot)",
            "<= 3 s",
            _get(figures, "recovery", "cold", "start_s"),
            lambda v: v <= RECOVERY_TARGET_S,
        ),
        _target(
            "recovery, warm (snapshot)",
            "<= 3 s",
            _get(figures, "recovery", "warm", "start_s"),
            lambda v: v <= RECOVERY_TARGET_S,
        ),
    ]


def _floor_rows(figures: Figures) -> list[Row]:
    floor = _get(figures, "floor")
    if not floor:
        return []
    return [
        Row("floor: CurveZMQ ROUTER echo, p50 / p99", reference=_ms(floor["echo_ms"])),
        Row(
            "floor: append + fsync one grant, p50 / p99",
            reference=_ms(floor["fsync_ms"]),
        ),
        Row("floor: echo + fsync, p50 / p99", reference=_ms(floor["floor_ms"])),
    ]


def _round_trip_rows(figures: Figures, ratio: Figures) -> list[Row]:
    rows = []
    floor = _ms(_get(figures, "floor", "floor_ms"))
    for level, entry in (_get(figures, "round_trip", "levels") or {}).items():
        x = _get(ratio, "round_trip_vs_floor", level) or {}
        judged = level == target_level(figures)
        target = "0.5 / 2 ms, 3x" if judged else ""
        met = _round_trip_met(entry["wire_ms"], x) if judged else ""
        rows.append(
            Row(
                f"grant round trip, {int(level):,} active, p50 / p99",
                _ms(entry["wire_ms"]),
                floor,
                f"{x.get('p50', math.nan):.1f}x / {x.get('p99', math.nan):.1f}x",
                target,
                met,
            )
        )
        rows.append(
            Row(
                f"  same through Client, {int(level):,} active", _ms(entry["client_ms"])
            )
        )
    return rows


def _round_trip_met(wire: Figures, x: Figures) -> str:
    met = (
        wire["p50"] <= RT_P50_TARGET_MS
        and wire["p99"] <= RT_P99_TARGET_MS
        and x.get("p50", math.inf) <= RT_FLOOR_TARGET_X
    )
    return _mark(met)


def _throughput_rows(figures: Figures, ratio: Figures) -> list[Row]:
    tp = _get(figures, "throughput")
    if not tp:
        return []
    redis_rate = _get(figures, "redis", "throughput", "sets_per_s")
    rate = tp["grants_per_s"]
    return [
        Row(
            f"throughput, {tp['clients']} clients x {tp['window']} in flight",
            f"{rate:,.0f} grants/s",
            f"Redis SET PX {redis_rate:,.0f}/s" if redis_rate else "-",
            f"{ratio['throughput_keyturn_over_redis']:.2f}x",
            ">= 10,000/s",
            _mark(rate >= THROUGHPUT_TARGET_PER_S),
        ),
        Row("  latency under that load, p50 / p99", _ms(tp["latency_ms"])),
    ]


def _expiry_rows(figures: Figures, ratio: Figures) -> list[Row]:
    expiry = _get(figures, "expiry")
    if not expiry:
        return []
    keys = ("p50", "p99", "max")
    late = expiry["lateness_ms"]
    x = ratio["lateness_redis_over_keyturn"]
    count = expiry["runs"][0]["expected"]
    met = (
        late["p99"] <= LATENESS_P99_TARGET_MS and late["max"] <= LATENESS_MAX_TARGET_MS
    )
    met = met and x["p99"] >= LATENESS_VS_REDIS_TARGET_X
    return [
        Row(
            f"expiry lateness, {count:,} over {expiry['window_s']:g} s, p50/p99/max",
            _ms(late, keys),
            "Redis " + _ms(_get(figures, "redis", "spread", "lateness_ms"), keys),
            f"Redis {x['p99']:.0f}x later (p99)",
            "p99 2, max 20 ms, 10x",
            _mark(met),
        ),
        Row("  daemon noticed, p50 / p99", _ms(expiry["runs"][0].get("noticed_ms"))),
    ]


def _storm_rows(figures: Figures, ratio: Figures) -> list[Row]:
    rows = []
    api = _get(figures, "storm_api")
    redis_storm = _get(figures, "redis", "storm", "done_after_first_deadline_s")
    if api:
        rows.append(
            Row(
                "storm via API (deadlines in 1 s): last event after",
                f"{api['done_after_first_deadline_s']:.3f} s first / "
                f"{api['done_after_last_deadline_s']:.3f} s last",
                f"Redis {redis_storm:.3f} s (one deadline)" if redis_storm else "-",
                "",
                "<= 1 s after last",
                _mark(api["done_after_last_deadline_s"] <= STORM_TARGET_S),
            )
        )
    journal = _get(figures, "storm_journal")
    if journal:
        done = journal["done_after_first_deadline_s"]
        rows.append(
            Row(
                "storm, one deadline (journal): last event after",
                f"{done:.3f} s",
                f"Redis {redis_storm:.3f} s" if redis_storm else "-",
                f"{_x(redis_storm, done):.2f}x" if redis_storm else "",
                "<= 1 s",
                _mark(done <= STORM_TARGET_S),
            )
        )
    return rows


def _memory_rows(figures: Figures) -> list[Row]:
    memory = _get(figures, "round_trip", "memory")
    if not memory:
        return []
    redis_rss = _get(figures, "redis", "spread", "runs")
    reference = (
        f"Redis {redis_rss[0]['rss_mib_loaded'] * 2**20 / 1e6:.0f} MB"
        if redis_rss
        else ""
    )
    return [
        Row(
            f"daemon RSS, {memory['active']:,} active",
            f"{memory['rss_mb']:.0f} MB ({memory['bytes_per_grant']:,.0f} B/grant)",
            reference,
            "",
            "<= 200 MB",
            _mark(memory["rss_mb"] <= RSS_TARGET_MB),
        )
    ]


def _recovery_rows(figures: Figures) -> list[Row]:
    recovery = _get(figures, "recovery")
    if not recovery:
        return []
    journal = recovery["journal"]
    size = f"{journal['grants_active']:,} grants / {journal['records']:,} records"
    rows = [
        Row("start to serving, empty home", f"{recovery['empty']['start_s']:.3f} s")
    ]
    for kind in ("cold", "warm"):
        start = recovery[kind]["start_s"]
        replay = recovery[kind]["runs"][0].get("replay_s")
        detail = (
            f"{start:.3f} s (replay {replay:.2f} s)"
            if replay is not None
            else f"{start:.3f} s"
        )
        rows.append(
            Row(
                f"start to serving, {kind}, {size}",
                detail,
                "",
                "",
                "<= 3 s",
                _mark(start <= RECOVERY_TARGET_S),
            )
        )
    return rows


def _console_rows(figures: Figures) -> list[Row]:
    console = _get(figures, "console") or {}
    if "text" in console:
        return [Row(f"console: {line.strip()}") for line in console["text"]]
    if "figures" not in console:
        reason = console.get("absent") or console.get("skipped") or console.get("error")
        return [Row("console (bench/console_bench.py)", str(reason or "not run")[:70])]
    return [
        Row(f"console: {name}", _plain(value))
        for name, value in _flatten(console["figures"])
    ]


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(value, dict):
        return [(prefix, value)]
    out: list[tuple[str, Any]] = []
    for key, item in value.items():
        out += _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    return out


def _plain(value: Any) -> str:
    return f"{value:,.3f}" if isinstance(value, float) else str(value)


def build_rows(figures: Figures, ratio: Figures) -> list[Row]:
    """Every line of the table, in reading order."""
    rows = _floor_rows(figures)
    rows += _round_trip_rows(figures, ratio)
    rows += _throughput_rows(figures, ratio)
    rows += _expiry_rows(figures, ratio)
    rows += _storm_rows(figures, ratio)
    rows += _memory_rows(figures)
    rows += _recovery_rows(figures)
    rows += _console_rows(figures)
    skipped = _get(figures, "redis", "skipped")
    if skipped:
        rows.append(Row("Redis comparison skipped", str(skipped)))
    for section, message in (figures.get("errors") or {}).items():
        rows.append(Row(f"FAILED: {section}", str(message)[:80]))
    return rows


def format_table(rows: list[Row]) -> str:
    """The rows as a plain-text table."""
    header = Row("measurement", "keyturn", "reference", "ratio", "target", "met")
    table = [header, *rows]
    columns = list(zip(*(_cells(row) for row in table), strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    lines = []
    for index, row in enumerate(table):
        lines.append(
            "  ".join(
                cell.ljust(width)
                for cell, width in zip(_cells(row), widths, strict=True)
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cells(row: Row) -> tuple[str, ...]:
    return (row.measurement, row.keyturn, row.reference, row.ratio, row.target, row.met)


def write_json(path: Path, document: Figures) -> None:
    """Write the figures (NaN as null), making the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_no_nan(document), indent=2) + "\n", "utf-8")


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(item) for item in value]
    return value
