"""The benchmark runner, end to end, in its quick mode."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
QUICK_BUDGET_S = 60.0
"""``python -m bench --quick`` must finish within this."""
KILL_AFTER_S = 100.0
"""A runner still going by then is stopped, with every process it started."""


def _run_quick(out: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    command = [sys.executable, "-m", "bench", "--quick", "--out", str(out)]
    began = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    took = time.monotonic() - began
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), took


def _number(document: dict[str, Any], *path: str) -> float:
    value: Any = document
    for key in path:
        assert isinstance(value, dict) and key in value, f"missing {'.'.join(path)}"
        value = value[key]
    assert isinstance(value, int | float) and not isinstance(value, bool), path
    assert math.isfinite(value), f"{'.'.join(path)} is {value}"
    return float(value)


def _check_keyturn(doc: dict[str, Any]) -> None:
    for part in ("echo_ms", "fsync_ms", "floor_ms"):
        assert _number(doc, "floor", part, "p50") > 0
    levels = doc["round_trip"]["levels"]
    assert len(levels) == 3
    for level in levels:
        for key in ("p50", "p99"):
            assert _number(doc, "round_trip", "levels", level, "wire_ms", key) > 0
    assert _number(doc, "round_trip", "memory", "rss_mb") > 0
    assert _number(doc, "throughput", "grants_per_s") > 0
    for key in ("p50", "p99", "max"):
        _number(doc, "expiry", "lateness_ms", key)
    assert all(run["received"] == run["expected"] for run in doc["expiry"]["runs"])
    _number(doc, "storm_api", "done_after_first_deadline_s")
    _number(doc, "storm_journal", "done_after_first_deadline_s")
    for kind in ("empty", "cold", "warm"):
        assert _number(doc, "recovery", kind, "start_s") > 0


def _check_redis(doc: dict[str, Any]) -> None:
    if "skipped" in doc["redis"]:
        return
    for part in ("spread", "storm"):
        _number(doc, "redis", part, "lateness_ms", "p99")
    assert _number(doc, "redis", "throughput", "sets_per_s") > 0


@pytest.mark.slow
@pytest.mark.timeout(KILL_AFTER_S + 20)
def test_quick_bench_measures_everything(tmp_path: Path) -> None:
    """`python -m bench --quick` finishes within a minute with a figure for every measurement."""
    out = tmp_path / "quick.json"
    done, took = _run_quick(out)

    assert done.returncode == 0, done.stderr[-4000:]
    assert took < QUICK_BUDGET_S, f"quick mode took {took:.1f}s"
    assert f"figures written to {out}" in done.stdout
    doc = json.loads(out.read_text("utf-8"))
    assert doc["errors"] == {}
    _check_keyturn(doc)
    _check_redis(doc)
    assert {"figures", "text", "absent", "skipped"} & set(doc["console"]), doc[
        "console"
    ]
    for target in doc["targets"]:
        if "skipped" not in doc["redis"] or "Redis" not in target["name"]:
            assert isinstance(target["value"], int | float), target
