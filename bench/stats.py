"""Percentiles and summaries of repeated measurements."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Summary", "combine", "median_of", "percentile", "summarize"]


@dataclass(frozen=True)
class Summary:
    """One run's samples, reduced (same unit as the samples)."""

    n: int
    p50: float
    p99: float
    max: float
    mean: float

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready map."""
        return asdict(self)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted samples (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def summarize(samples: Sequence[float]) -> Summary:
    """Reduce one run's samples to n, p50, p99, max and mean."""
    ordered = sorted(samples)
    if not ordered:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    return Summary(
        n=len(ordered),
        p50=percentile(ordered, 0.50),
        p99=percentile(ordered, 0.99),
        max=float(ordered[-1]),
        mean=statistics.fmean(ordered),
    )


def combine(runs: Sequence[Summary]) -> dict[str, Any]:
    """Medians over repeated runs of each run's p50, p99 and max, plus every run.

    The worst ``max`` of any run is kept as ``worst`` beside the median ``max``.
    """
    if not runs:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "runs": []}
    return {
        "p50": statistics.median(run.p50 for run in runs),
        "p99": statistics.median(run.p99 for run in runs),
        "max": statistics.median(run.max for run in runs),
        "worst": max(run.max for run in runs),
        "n": sum(run.n for run in runs),
        "runs": [run.to_json() for run in runs],
    }


def median_of(values: Sequence[float]) -> float:
    """The median, NaN when there is nothing."""
    return statistics.median(values) if values else math.nan
