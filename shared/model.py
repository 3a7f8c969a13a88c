"""The domain model: scopes, requests, grants, and the only transitions between states.

Requests and grants are immutable values. A change makes a new value with
:func:`dataclasses.replace`, so a shallow copy of the ledger is a consistent
picture that the snapshot writer can serialise in the background.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from keyturn.shared.errors import BadInput, Refused

__all__ = [
    "GRANT_TERMINAL",
    "Grant",
    "GrantState",
    "Request",
    "RequestState",
    "Role",
    "check_grant_transition",
    "check_request_transition",
    "parse_scope",
    "scope_matches",
    "validate_pattern",
]

MAX_SCOPES = 32
"""A request names at most this many scopes."""

_PART = r"[a-z0-9][a-z0-9_.-]{0,62}"
_SCOPE = re.compile(rf"({_PART}):({_PART})")
_PATTERN_PART = re.compile(rf"\*|{_PART}")


class Role(Enum):
    """What an identity may do (see ARCHITECTURE.md for the table of ops)."""

    ADMIN = "admin"
    APPROVER = "approver"
    AUDITOR = "auditor"
    VIEWER = "viewer"
    REQUESTER = "requester"


class RequestState(Enum):
    """Where a request stands; only ``pending`` is not final."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class GrantState(Enum):
    """Where a grant stands; ``revoking`` waits for a provisioner to finish."""

    ACTIVE = "active"
    REVOKING = "revoking"
    EXPIRED = "expired"
    REVOKED = "revoked"
    RELEASED = "released"


_REQUEST_NEXT: dict[RequestState, frozenset[RequestState]] = {
    RequestState.PENDING: frozenset(
        {
            RequestState.APPROVED,
            RequestState.DENIED,
            RequestState.CANCELLED,
            RequestState.EXPIRED,
        }
    ),
}

GRANT_TERMINAL = frozenset(
    {GrantState.EXPIRED, GrantState.REVOKED, GrantState.RELEASED}
)
"""States a grant never leaves."""

_GRANT_NEXT: dict[GrantState, frozenset[GrantState]] = {
    GrantState.ACTIVE: frozenset(
        {
            GrantState.REVOKING,
            GrantState.EXPIRED,
            GrantState.REVOKED,
            GrantState.RELEASED,
        }
    ),
    GrantState.REVOKING: frozenset(
        {GrantState.EXPIRED, GrantState.REVOKED, GrantState.RELEASED}
    ),
}


def check_request_transition(current: RequestState, target: RequestState) -> None:
    """Refuse a request transition the model does not allow.

    Raises:
        Refused: ``invalid_state``, naming both states.
    """
    if target not in _REQUEST_NEXT.get(current, frozenset()):
        raise Refused("invalid_state", f"the request is {current.value}, not pending")


def check_grant_transition(current: GrantState, target: GrantState) -> None:
    """Refuse a grant transition the model does not allow.

    Raises:
        Refused: ``invalid_state``, naming the grant's state.
    """
    if target not in _GRANT_NEXT.get(current, frozenset()):
        raise Refused("invalid_state", f"the grant is already {current.value}")


def parse_scope(value: object) -> str:
    """Check one concrete scope, written ``resource:action``.

    Raises:
        BadInput: ``invalid_scope`` for anything else, wildcards included.
    """
    if not isinstance(value, str) or not _SCOPE.fullmatch(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise BadInput(
            "invalid_scope",
            f"scope {shown!r} is not resource:action (lower-case letters, digits, _ . -)",
        )
    return value


def validate_pattern(pattern: str) -> str:
    """Check a scope pattern such as ``payments:*`` or ``*:admin``.

    Raises:
        ValueError: when the pattern is not ``part:part`` with ``*`` or a name.
    """
    parts = pattern.split(":")
    if len(parts) != 2 or not all(_PATTERN_PART.fullmatch(part) for part in parts):
        raise ValueError(
            f"{pattern!r} is not a scope pattern such as payments:read or payments:*"
        )
    return pattern


def scope_matches(pattern: str, scope: str) -> bool:
    """Return whether a concrete scope falls under a pattern."""
    p_resource, p_action = pattern.split(":", 1)
    resource, action = scope.split(":", 1)
    return p_resource in ("*", resource) and p_action in ("*", action)


@dataclass(frozen=True, slots=True)
class Request:
    """An ask for scopes of one vendor for a duration, before it becomes a grant."""

    request_id: str
    """Daemon-assigned id, ``req_`` and 12 hex digits."""
    vendor: str
    """The vendor id the access is for."""
    scopes: tuple[str, ...]
    """Concrete scopes, sorted, no duplicates."""
    ttl_s: int
    """How long the grant lives once active."""
    reason: str
    """Why the access is needed, as the requester wrote it."""
    requested_by: str
    """Identity that asked."""
    requested_at: float
    """Unix seconds."""
    expires_at: float
    """When a still-pending request times out."""
    approvals_needed: int
    """Distinct approvals needed; 0 when policy decided at once."""
    ticket: str = ""
    """An optional ticket reference."""
    state: RequestState = RequestState.PENDING
    approvals: tuple[str, ...] = ()
    """Identities that approved so far."""
    decided_by: str = ""
    decided_at: float = 0.0
    decision_reason: str = ""
    grant_id: str = ""
    """The grant this request became, once approved."""
    cap_s: int = 0
    """Longest lifetime a grant from this request may reach by extension."""

    def to_wire(self) -> dict[str, Any]:
        """Return the request as the plain map of the wire protocol."""
        out = {name: getattr(self, name) for name in _REQUEST_FIELDS}
        out["scopes"] = list(self.scopes)
        out["approvals"] = list(self.approvals)
        out["state"] = self.state.value
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Request:
        """Rebuild a request from :meth:`to_wire` output."""
        values = {name: data[name] for name in _REQUEST_FIELDS if name in data}
        values["scopes"] = tuple(values["scopes"])
        values["approvals"] = tuple(values.get("approvals", ()))
        values["state"] = RequestState(values["state"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Grant:
    """Scopes a vendor holds until ``expires_at``, unless revoked or released first."""

    grant_id: str
    """Daemon-assigned id, ``grt_`` and 12 hex digits."""
    request_id: str
    vendor: str
    scopes: tuple[str, ...]
    requested_by: str
    approved_by: tuple[str, ...]
    """Approvers, or ``("policy",)`` when a rule approved it at once."""
    activated_at: float
    """Unix seconds; the grant's time counts from here."""
    expires_at: float
    max_expires_at: float
    """No extension goes past this."""
    key_id: str = ""
    """Signing key of the token."""
    state: GrantState = GrantState.ACTIVE
    ended_at: float = 0.0
    ended_by: str = ""
    end_reason: str = ""
    ending: str = ""
    """While ``revoking``: the state the grant takes once its provisioner has undone it."""

    @property
    def is_live(self) -> bool:
        """Whether the grant still gives access (active or still being revoked)."""
        return self.state in (GrantState.ACTIVE, GrantState.REVOKING)

    def to_wire(self) -> dict[str, Any]:
        """Return the grant as the plain map of the wire protocol."""
        out = {name: getattr(self, name) for name in _GRANT_FIELDS}
        out["scopes"] = list(self.scopes)
        out["approved_by"] = list(self.approved_by)
        out["state"] = self.state.value
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Grant:
        """Rebuild a grant from :meth:`to_wire` output."""
        values = {name: data[name] for name in _GRANT_FIELDS if name in data}
        values["scopes"] = tuple(values["scopes"])
        values["approved_by"] = tuple(values["approved_by"])
        values["state"] = GrantState(values["state"])
        return cls(**values)


_REQUEST_FIELDS = tuple(field.name for field in fields(Request))
_GRANT_FIELDS = tuple(field.name for field in fields(Grant))
