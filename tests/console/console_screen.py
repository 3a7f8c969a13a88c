"""Console test helpers: wait for a condition, read what the screen shows."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.pilot import Pilot

from keyturn.console.line_table import LineTable

POLL_S = 0.02
"""How often a waiting test looks again."""


async def until(
    pilot: Pilot[int], condition: Callable[[], object], timeout_s: float, what: str
) -> float:
    """Let the app run until ``condition()`` is true; return how long it took.

    Raises:
        AssertionError: naming ``what`` when the timeout passes first.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"no {what} within {timeout_s}s")
        await pilot.pause(POLL_S)
    return time.monotonic() - start


def screen_text(pilot: Pilot[int]) -> str:
    """The characters on the whole screen, one line per row (dialogs included)."""
    strips = pilot.app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


def table_lines(table: LineTable[object]) -> list[str]:
    """The lines a table shows right now, titles first."""
    return [table.render_line(y).text for y in range(table.size.height)]
