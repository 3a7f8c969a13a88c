"""Console test helpers: daemon-shaped wire objects at a fixed time."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

T0 = 1_800_000_000.0
"""A fixed wall-clock time (2027-01-15T08:00:00Z) for deterministic screens."""


@dataclass
class Wire:
    """Builds grants, requests, records and snapshots as the daemon sends them."""

    now: float = T0
    seq: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def grant(
        self,
        vendor: str = "braintree",
        scopes: tuple[str, ...] = ("payments:read",),
        *,
        life_s: float = 900.0,
        left_s: float = 600.0,
        state: str = "active",
        requested_by: str = "braintree",
        grant_id: str | None = None,
    ) -> dict[str, Any]:
        number = next(self._ids)
        expires_at = self.now + left_s
        return {
            "grant_id": grant_id or f"grt_{number:012x}",
            "request_id": f"req_{number:012x}",
            "vendor": vendor,
            "scopes": list(scopes),
            "state": state,
            "requested_by": requested_by,
            "approved_by": ["policy"],
            "activated_at": expires_at - life_s,
            "expires_at": expires_at,
            "max_expires_at": expires_at + 600.0,
            "key_id": "k0",
            "ended_at": 0.0,
            "ended_by": "",
            "end_reason": "",
            "ending": "",
        }

    def request(
        self,
        vendor: str = "model-host",
        scopes: tuple[str, ...] = ("prompts:read",),
        *,
        requested_by: str = "model-host",
        age_s: float = 30.0,
        reason: str = "INC-4411 model outage",
        ttl_s: int = 300,
        state: str = "pending",
    ) -> dict[str, Any]:
        number = next(self._ids)
        return {
            "request_id": f"req_{number:012x}",
            "vendor": vendor,
            "scopes": list(scopes),
            "ttl_s": ttl_s,
            "reason": reason,
            "ticket": "",
            "requested_by": requested_by,
            "requested_at": self.now - age_s,
            "state": state,
            "approvals": [],
            "approvals_needed": 1,
            "decided_by": "",
            "decided_at": 0.0,
            "decision_reason": "",
            "expires_at": self.now + 900.0,
            "grant_id": "",
            "cap_s": 600,
        }

    def record(self, kind: str, actor: str = "oncall", **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {"seq": self.seq, "type": kind, "at": self.now, "actor": actor, **fields}

    def ended(
        self, grant: dict[str, Any], state: str, actor: str = "system"
    ) -> dict[str, Any]:
        return {**grant, "state": state, "ended_at": self.now, "ended_by": actor}

    def snapshot(
        self,
        grants: list[dict[str, Any]] = (),  # type: ignore[assignment]
        requests: list[dict[str, Any]] = (),  # type: ignore[assignment]
        *,
        lockdown: dict[str, Any] | None = None,
        boot_id: str = "boot-1",
    ) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "boot_id": boot_id,
            "lockdown": lockdown
            or {"engaged": False, "since": 0.0, "by": "", "reason": ""},
            "grants": list(grants),
            "requests": list(requests),
            "now": self.now,
        }
