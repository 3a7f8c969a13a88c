"""The ledger: requests, grants and lockdown, changed only by applying journal records.

The daemon makes a record, journals it, and applies it here; recovery applies
the same records again. Keeping one path for both means the state after a
restart is the state before it, by construction.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

from keyturn.shared.model import Grant, GrantState, Request, RequestState

__all__ = ["ENDED_RETENTION_S", "Ledger"]

ENDED_RETENTION_S = 3600
"""Ended grants and decided requests stay in memory (for ``get`` and ``ls --all``) this long."""
ENDED_MAX = 50_000
"""At most this many ended objects of each kind stay in memory."""

_NO_LOCKDOWN: dict[str, Any] = {"engaged": False, "since": 0.0, "by": "", "reason": ""}


class Ledger:
    """The daemon's state.

    Attributes:
        grants: Live grants (active or revoking) by id.
        requests: Pending requests by id.
        ended_grants: Recently ended grants, oldest first.
        decided_requests: Recently decided requests, oldest first.
        lockdown: ``{"engaged", "since", "by", "reason"}``.
        seq: The last applied record's ``seq``.
    """

    def __init__(self) -> None:
        self.grants: dict[str, Grant] = {}
        self.requests: dict[str, Request] = {}
        self.ended_grants: OrderedDict[str, Grant] = OrderedDict()
        self.decided_requests: OrderedDict[str, Request] = OrderedDict()
        self.lockdown: dict[str, Any] = dict(_NO_LOCKDOWN)
        self.seq = 0
        self._revoking: set[str] = set()
        self._pending_by: Counter[str] = Counter()

    def load(
        self,
        grants: Mapping[str, Grant],
        requests: Mapping[str, Request],
        lockdown: dict[str, Any],
        seq: int,
    ) -> None:
        """Start from a snapshot."""
        for grant in grants.values():
            self._put_grant(grant)
        for request in requests.values():
            self._put_request(request)
        self.lockdown = dict(lockdown)
        self.seq = seq

    def apply(self, record: dict[str, Any]) -> None:
        """Apply one journal record."""
        request = record.get("request")
        grant = record.get("grant")
        self.apply_live(
            record,
            Request.from_wire(request) if request is not None else None,
            Grant.from_wire(grant) if grant is not None else None,
        )

    def apply_live(
        self, record: dict[str, Any], request: Request | None, grant: Grant | None
    ) -> None:
        """Apply a record made just now, reusing its objects instead of rebuilding them."""
        self.seq = record["seq"]
        if request is not None:
            self._put_request(request)
        if grant is not None:
            self._put_grant(grant)
        kind = record["type"]
        if kind == "lockdown.engaged":
            self.lockdown = {
                "engaged": True,
                "since": record["at"],
                "by": record["actor"],
                "reason": record.get("reason", ""),
            }
        elif kind == "lockdown.lifted":
            self.lockdown = dict(_NO_LOCKDOWN)

    def _put_request(self, request: Request) -> None:
        if request.state is RequestState.PENDING:
            if request.request_id not in self.requests:
                self._pending_by[request.requested_by] += 1
            self.requests[request.request_id] = request
            return
        if self.requests.pop(request.request_id, None) is not None:
            self._pending_by[request.requested_by] -= 1
        self.decided_requests[request.request_id] = request
        self.decided_requests.move_to_end(request.request_id)
        _trim(self.decided_requests)

    def _put_grant(self, grant: Grant) -> None:
        if grant.state is GrantState.REVOKING:
            self._revoking.add(grant.grant_id)
        else:
            self._revoking.discard(grant.grant_id)
        if grant.is_live:
            self.grants[grant.grant_id] = grant
            return
        self.grants.pop(grant.grant_id, None)
        self.ended_grants[grant.grant_id] = grant
        self.ended_grants.move_to_end(grant.grant_id)
        _trim(self.ended_grants)

    def find_request(self, request_id: str) -> Request | None:
        """A pending or recently decided request."""
        return self.requests.get(request_id) or self.decided_requests.get(request_id)

    def find_grant(self, grant_id: str) -> Grant | None:
        """A live or recently ended grant."""
        return self.grants.get(grant_id) or self.ended_grants.get(grant_id)

    def forget_old(self, now: float | None = None) -> None:
        """Drop ended objects older than the retention from memory (the journal keeps them)."""
        cutoff = (now or time.time()) - ENDED_RETENTION_S
        while self.ended_grants:
            grant = next(iter(self.ended_grants.values()))
            if grant.ended_at >= cutoff:
                break
            self.ended_grants.popitem(last=False)
        while self.decided_requests:
            request = next(iter(self.decided_requests.values()))
            if request.decided_at >= cutoff:
                break
            self.decided_requests.popitem(last=False)

    def pending_of(self, identity: str) -> int:
        """How many requests of an identity wait for a decision."""
        return self._pending_by[identity]

    def counts(self) -> dict[str, int]:
        """Live grants by state, and pending requests."""
        return {
            "active": len(self.grants) - len(self._revoking),
            "revoking": len(self._revoking),
            "pending": len(self.requests),
        }


def _trim(objects: OrderedDict[str, Any]) -> None:
    while len(objects) > ENDED_MAX:
        objects.popitem(last=False)
