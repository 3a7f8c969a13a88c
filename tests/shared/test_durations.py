"""Durations as operators type them."""

from __future__ import annotations

import pytest

from keyturn.shared.durations import MAX_DURATION_S, format_duration, parse_duration
from keyturn.shared.errors import BadInput


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d", 86400),
        (" 90s ", 90),
        (30, 30),
    ],
)
def test_parses_what_people_write(text: str | int, seconds: int) -> None:
    """The forms in the docs mean what they say."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    [
        "0s",
        "0",
        "",
        "-5m",
        "5",
        "5x",
        "1.5h",
        "30m1h",
        "1h1h",
        "m",
        "1h 30m",
        0,
        -3,
        True,
        2.5,
        b"15m",
        None,
        [15],
        "9" * 40 + "s",
    ],
)
def test_refuses_bad_durations(bad: object) -> None:
    """Zero, negative, unparsable and wrongly typed durations get bad_duration."""
    with pytest.raises(BadInput) as caught:
        parse_duration(bad)
    assert caught.value.code == "bad_duration"


def test_refuses_absurd_durations() -> None:
    """Nothing longer than a year is accepted."""
    with pytest.raises(BadInput, match="limit"):
        parse_duration(MAX_DURATION_S + 1)
    with pytest.raises(BadInput, match="limit"):
        parse_duration("999999999d")


@pytest.mark.parametrize("seconds", [1, 59, 60, 61, 3599, 3600, 5400, 90061])
def test_format_round_trips(seconds: int) -> None:
    """What keyturn prints can be typed back in."""
    assert parse_duration(format_duration(seconds)) == seconds
