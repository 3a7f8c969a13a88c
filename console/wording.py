"""Records and times in words an operator reads at a glance.

Times on screen are UTC wall-clock times (``14:03:07``), like the command
line's RFC 3339 output; durations are compact (``4m05s``). Each record type has
one sentence; an unknown type is still shown, with its name in words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "clock_time",
    "compact_duration",
    "describe",
    "record_family",
    "scopes_text",
]

_MINUTE_S = 60
_HOUR_S = 3600
_DAY_S = 86400


def clock_time(ts: float) -> str:
    """UTC time of day, ``HH:MM:SS``; a date is not needed for live grants."""
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def compact_duration(seconds: float) -> str:
    """A short duration: ``45s``, ``4m05s``, ``2h07m``, ``3d04h``; never negative."""
    whole = max(0, int(seconds))
    if whole < _MINUTE_S:
        return f"{whole}s"
    if whole < _HOUR_S:
        return f"{whole // _MINUTE_S}m{whole % _MINUTE_S:02d}s"
    if whole < _DAY_S:
        return f"{whole // _HOUR_S}h{whole % _HOUR_S // _MINUTE_S:02d}m"
    return f"{whole // _DAY_S}d{whole % _DAY_S // _HOUR_S:02d}h"


def scopes_text(scopes: Any) -> str:
    """Scopes joined with commas, or a dash."""
    if isinstance(scopes, list | tuple) and scopes:
        return ", ".join(str(scope) for scope in scopes)
    return "-"


def record_family(record: dict[str, Any]) -> str:
    """The first part of a record's type (``grant``, ``request``, ``lockdown``...)."""
    return str(record.get("type") or "unknown").split(".", 1)[0]


def describe(record: dict[str, Any]) -> str:
    """One sentence for a record, for the event panel."""
    kind = str(record.get("type") or "unknown")
    words = _SENTENCES.get(kind)
    if words is not None:
        return words(record)
    return f"{kind.replace('.', ' ').replace('_', ' ')} by {_actor(record)}"


def _actor(record: dict[str, Any]) -> str:
    return str(record.get("actor") or "system")


def _what(obj: Any) -> str:
    if not isinstance(obj, dict):
        return "?"
    return f"{obj.get('vendor', '?')} {scopes_text(obj.get('scopes'))}"


def _because(text: Any) -> str:
    return f": {text}" if text else ""


def _request(record: dict[str, Any]) -> dict[str, Any]:
    value = record.get("request")
    return value if isinstance(value, dict) else {}


def _grant(record: dict[str, Any]) -> dict[str, Any]:
    value = record.get("grant")
    return value if isinstance(value, dict) else {}


def _created(record: dict[str, Any]) -> str:
    request = _request(record)
    ttl = compact_duration(float(request.get("ttl_s") or 0))
    return (
        f"{_actor(record)} asked for {_what(request)} for {ttl}"
        f"{_because(request.get('reason'))}"
    )


def _approval(record: dict[str, Any]) -> str:
    request = _request(record)
    got = len(request.get("approvals") or ())
    needed = request.get("approvals_needed") or "?"
    return f"{_actor(record)} approved {_what(request)} ({got} of {needed})"


def _approved(record: dict[str, Any]) -> str:
    return f"{_actor(record)} approved {_what(_request(record))}"


def _denied(record: dict[str, Any]) -> str:
    request = _request(record)
    why = _because(request.get("decision_reason") or record.get("reason"))
    return f"{_actor(record)} denied {_what(request)}{why}"


def _cancelled(record: dict[str, Any]) -> str:
    return f"{_actor(record)} withdrew the request for {_what(_request(record))}"


def _request_expired(record: dict[str, Any]) -> str:
    return f"request for {_what(_request(record))} timed out unanswered"


def _active(record: dict[str, Any]) -> str:
    grant = _grant(record)
    life = float(grant.get("expires_at") or 0) - float(grant.get("activated_at") or 0)
    return f"{_what(grant)} granted for {compact_duration(life)}"


def _extended(record: dict[str, Any]) -> str:
    grant = _grant(record)
    until = clock_time(float(grant.get("expires_at") or 0))
    return f"{_actor(record)} extended {_what(grant)} until {until}"


def _grant_expired(record: dict[str, Any]) -> str:
    return f"{_what(_grant(record))} expired"


def _revoked(record: dict[str, Any]) -> str:
    grant = _grant(record)
    why = _because(grant.get("end_reason") or record.get("reason"))
    return f"{_actor(record)} revoked {_what(grant)}{why}"


def _released(record: dict[str, Any]) -> str:
    return f"{_actor(record)} gave back {_what(_grant(record))}"


def _lockdown(record: dict[str, Any]) -> str:
    return f"LOCKDOWN engaged by {_actor(record)}{_because(record.get('reason'))}"


def _lifted(record: dict[str, Any]) -> str:
    return f"lockdown lifted by {_actor(record)}{_because(record.get('reason'))}"


def _refused(record: dict[str, Any]) -> str:
    why = record.get("reason") or record.get("code") or record.get("op") or ""
    return f"refused {_actor(record)}{_because(why)}"


_SENTENCES: dict[str, Callable[[dict[str, Any]], str]] = {
    "request.created": _created,
    "request.approval": _approval,
    "request.approved": _approved,
    "request.denied": _denied,
    "request.cancelled": _cancelled,
    "request.expired": _request_expired,
    "grant.active": _active,
    "grant.extended": _extended,
    "grant.expired": _grant_expired,
    "grant.revoked": _revoked,
    "grant.released": _released,
    "lockdown.engaged": _lockdown,
    "lockdown.lifted": _lifted,
    "access.refused": _refused,
    "daemon.started": lambda record: "daemon started",
    "daemon.stopped": lambda record: "daemon stopped",
    "journal.cut": lambda record: "journal: a torn last record was cut on start",
    "audit.checkpoint": lambda record: "audit checkpoint signed",
    "config.reloaded": lambda record: "configuration reloaded",
}
