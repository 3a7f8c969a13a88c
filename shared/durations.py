"""Durations as people write them: ``45s``, ``15m``, ``2h``, ``1h30m``, ``1d``."""

from __future__ import annotations

import re

from keyturn.shared.errors import BadInput

__all__ = ["MAX_DURATION_S", "format_duration", "parse_duration"]

MAX_DURATION_S = 366 * 24 * 3600
"""No duration anywhere may exceed a year; longer is a typo or an attack."""

_UNITS_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d{1,9})([dhms])")
_WHOLE = re.compile(r"(?:\d{1,9}[dhms])+")
_MAX_TEXT_CHARS = 32


def parse_duration(value: object, *, what: str = "duration") -> int:
    """Parse a duration into whole seconds.

    Args:
        value: ``"45s"``, ``"15m"``, ``"1h30m"`` (units d, h, m, s, largest
            first, each at most once) or a whole number of seconds.
        what: How the value is named in an error message.

    Returns:
        The duration in seconds, at least 1 and at most :data:`MAX_DURATION_S`.

    Raises:
        BadInput: ``bad_duration`` when the value is not a positive, sane duration.
    """
    if isinstance(value, bool):
        raise BadInput(
            "bad_duration", f"{what} must be a duration such as 15m, not {value!r}"
        )
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        seconds = _parse_text(value.strip(), what)
    else:
        raise BadInput(
            "bad_duration",
            f"{what} must be a string such as 15m or whole seconds, not {type(value).__name__}",
        )
    if seconds <= 0:
        raise BadInput("bad_duration", f"{what} must be longer than zero")
    if seconds > MAX_DURATION_S:
        raise BadInput(
            "bad_duration", f"{what} {value!r} is longer than the limit of 366d"
        )
    return seconds


def _parse_text(text: str, what: str) -> int:
    if len(text) > _MAX_TEXT_CHARS or not _WHOLE.fullmatch(text):
        raise BadInput(
            "bad_duration",
            f"{what} {text[:_MAX_TEXT_CHARS]!r} is not a duration; write e.g. 45s, 15m, 2h, 1h30m",
        )
    parts = _PART.findall(text)
    units = [unit for _, unit in parts]
    order = list(_UNITS_S)
    if len(set(units)) != len(units) or units != sorted(units, key=order.index):
        raise BadInput(
            "bad_duration",
            f"{what} {text!r}: give each unit once, largest first (1h30m)",
        )
    return sum(int(number) * _UNITS_S[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """Write seconds the way :func:`parse_duration` reads them (``1h30m``, ``45s``)."""
    remaining = max(0, int(round(seconds)))
    if remaining == 0:
        return "0s"
    out = []
    for unit, size in _UNITS_S.items():
        count, remaining = divmod(remaining, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
