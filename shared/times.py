"""Time as keyturn shows it: Unix seconds on the wire, RFC 3339 UTC for people."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["parse_rfc3339", "rfc3339"]


def rfc3339(ts: float) -> str:
    """Format Unix seconds as RFC 3339 UTC with milliseconds (``...T12:00:00.000Z``)."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 time (``Z`` or an offset) into Unix seconds.

    Raises:
        ValueError: when the text is not such a time.
    """
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
