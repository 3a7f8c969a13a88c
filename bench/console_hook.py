"""Runs the console engineer's ``bench/console_bench.py``, when there is one.

The contract: ``bench.console_bench`` defines ``run(quick: bool) -> dict``
returning JSON-ready figures (numbers, or maps of numbers). It runs in a
child process, so the console's framework never shares the runner's
interpreter; ``python -m bench.console_hook`` is that child. A module without
``run`` is started as ``python -m bench.console_bench`` (with ``--quick`` in
quick mode, and only if its source mentions ``--quick``); when its last line
is a JSON object that is its figures, otherwise its printed lines are kept
as text.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_console_bench"]

CONSOLE_BENCH = Path(__file__).with_name("console_bench.py")
QUICK_TIMEOUT_S = 45.0
FULL_TIMEOUT_S = 900.0
TEXT_LINES = 40
"""Printed lines kept from a console bench that prints no JSON."""


def _command(quick: bool, source: str) -> list[str]:
    module = "bench.console_hook" if "def run(" in source else "bench.console_bench"
    return [sys.executable, "-m", module, *(["--quick"] if quick else [])]


def _figures(stdout: str) -> dict[str, Any]:
    try:
        return {"figures": _last_json(stdout)}
    except ValueError:
        lines = [line.rstrip() for line in stdout.splitlines() if line.strip()]
        return {"text": lines[-TEXT_LINES:], "note": "printed no JSON object"}


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("printed no JSON object")


def run_console_bench(quick: bool, cwd: Path) -> dict[str, Any]:
    """``figures``, ``text``, ``absent``, ``skipped`` or ``error``; never raises."""
    if not CONSOLE_BENCH.exists():
        return {"absent": f"{CONSOLE_BENCH.name} does not exist yet"}
    source = CONSOLE_BENCH.read_text("utf-8", errors="replace")
    if quick and "def run(" not in source and "--quick" not in source:
        return {
            "skipped": f"{CONSOLE_BENCH.name} has no quick mode (run(quick) or --quick)"
        }
    timeout = QUICK_TIMEOUT_S if quick else FULL_TIMEOUT_S
    command = _command(quick, source)
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            return {"error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
        return _figures(done.stdout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    """Child process: call ``bench.console_bench.run`` and print its figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.console_hook")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    console_bench = importlib.import_module("bench.console_bench")
    print(json.dumps(console_bench.run(quick=args.quick)))


if __name__ == "__main__":
    main()
