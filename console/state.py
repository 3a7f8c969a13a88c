"""The console's live copy of the daemon's state: pure data, no sockets, no Textual.

:class:`LiveState` is loaded from a ``snapshot`` reply and then changed only by
the records the :class:`~keyturn.console.sync.Sequencer` lets through, so it
equals the daemon's state at its ``seq``. On top of that it keeps what only a
screen needs: when a grant appeared (to highlight it), when it ended (it stays
visible a few seconds as expired, revoked or released, then leaves), the
latest records for the event panel, and sorted indexes for the two tables.
Every method takes the current time as an argument, so tests and snapshots
decide what "now" is.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from keyturn.console.index import SortedIndex, SortKey
from keyturn.shared.model import Grant, GrantState, Request, RequestState

__all__ = [
    "ENDED_LINGER_S",
    "EVENT_LOG_SIZE",
    "GRANT_ORDERS",
    "REQUEST_ORDERS",
    "SPAWN_GLOW_S",
    "Counts",
    "LiveState",
    "Lockdown",
    "ParsedRecord",
    "PreparedSnapshot",
    "StateChange",
    "grant_text",
    "parse_records",
    "request_text",
]

logger = logging.getLogger(__name__)

Model = TypeVar("Model", Grant, Request)

ENDED_LINGER_S = 5.0
"""An ended grant stays in the table this long, showing how it ended."""
SPAWN_GLOW_S = 3.0
"""A new grant is highlighted this long after it appeared."""
EVENT_LOG_SIZE = 200
"""Records kept for the event panel."""


@dataclass(frozen=True, slots=True)
class Lockdown:
    """Whether lockdown is engaged, since when, by whom and why."""

    engaged: bool = False
    since: float = 0.0
    by: str = ""
    reason: str = ""

    @classmethod
    def from_wire(cls, data: Any) -> Lockdown:
        """Read the ``lockdown`` map of a snapshot; anything else means not engaged."""
        if not isinstance(data, dict) or not data.get("engaged"):
            return cls()
        return cls(
            engaged=True,
            since=float(data.get("since") or 0.0),
            by=str(data.get("by") or ""),
            reason=str(data.get("reason") or ""),
        )


@dataclass(frozen=True, slots=True)
class Counts:
    """How many grants and requests there are, for the status line."""

    active: int
    revoking: int
    ending: int
    pending: int


@dataclass(slots=True)
class StateChange:
    """What one batch of records changed, so views repaint only what they must."""

    grants: bool = False
    requests: bool = False
    lockdown: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)
    """The records applied, oldest first."""


def grant_text(grant: Grant) -> str:
    """The text a grant filter searches: vendor, scopes, state, ids and people."""
    people = " ".join((grant.requested_by, *grant.approved_by))
    scopes = " ".join(grant.scopes)
    return f"{grant.vendor} {scopes} {grant.state.value} {grant.grant_id} {people}"


def request_text(request: Request) -> str:
    """The text a request filter searches."""
    scopes = " ".join(request.scopes)
    return (
        f"{request.vendor} {scopes} {request.reason} {request.requested_by} "
        f"{request.request_id} {request.ticket}"
    )


_STATE_RANK = {
    GrantState.ACTIVE: 0,
    GrantState.REVOKING: 1,
    GrantState.EXPIRED: 2,
    GrantState.REVOKED: 3,
    GrantState.RELEASED: 4,
}

GRANT_ORDERS: dict[str, Callable[[Grant], SortKey]] = {
    "left": lambda grant: (grant.expires_at,),
    "vendor": lambda grant: (grant.vendor, grant.expires_at),
    "state": lambda grant: (_STATE_RANK[grant.state], grant.expires_at),
    "by": lambda grant: (grant.requested_by, grant.expires_at),
}
"""The orders the grants table offers: time left first, then by column."""

REQUEST_ORDERS: dict[str, Callable[[Request], SortKey]] = {
    "age": lambda request: (request.requested_at,),
    "vendor": lambda request: (request.vendor, request.requested_at),
    "by": lambda request: (request.requested_by, request.requested_at),
}
"""The orders of the pending requests: oldest first, then by column."""


def grant_index() -> SortedIndex[Grant]:
    """An empty index of grants in every order."""
    return SortedIndex(GRANT_ORDERS, grant_text, "left")


def request_index() -> SortedIndex[Request]:
    """An empty index of pending requests in every order."""
    return SortedIndex(REQUEST_ORDERS, request_text, "age")


@dataclass(slots=True)
class PreparedSnapshot:
    """A snapshot parsed and indexed, ready to replace a state in one step.

    Preparing costs about a second at 100,000 grants; the daemon link does it
    in its own thread so that the console stays responsive meanwhile.
    """

    snapshot: dict[str, Any]
    grants: dict[str, Grant]
    requests: dict[str, Request]
    grant_index: SortedIndex[Grant]
    request_index: SortedIndex[Request]

    @classmethod
    def build(cls, snapshot: dict[str, Any]) -> PreparedSnapshot:
        """Parse a ``snapshot`` reply and index its live grants and pending requests."""
        grants = _parse_all(snapshot.get("grants"), Grant.from_wire, "grant_id")
        requests = _parse_all(snapshot.get("requests"), Request.from_wire, "request_id")
        live = {gid: grant for gid, grant in grants.items() if grant.is_live}
        pending = {
            rid: r for rid, r in requests.items() if r.state is RequestState.PENDING
        }
        grants_in_order = grant_index()
        grants_in_order.rebuild(live)
        requests_in_order = request_index()
        requests_in_order.rebuild(pending)
        return cls(snapshot, live, pending, grants_in_order, requests_in_order)


@dataclass(frozen=True, slots=True)
class ParsedRecord:
    """A record with its grant and request already built from their wire maps."""

    record: dict[str, Any]
    grant: Grant | None
    """The record's grant, or None (none, or malformed)."""
    request: Request | None


def parse_records(records: Iterable[dict[str, Any]]) -> list[ParsedRecord]:
    """Build the objects records carry; the daemon link does it off the UI thread."""
    parsed = []
    for record in records:
        grant = record.get("grant")
        request = record.get("request")
        parsed.append(
            ParsedRecord(
                record,
                _parse(grant, Grant.from_wire) if isinstance(grant, dict) else None,
                _parse(request, Request.from_wire)
                if isinstance(request, dict)
                else None,
            )
        )
    return parsed


class LiveState:
    """The daemon's grants, pending requests and lockdown, as of :attr:`seq`.

    Attributes:
        grants: Live grants by id, plus ended ones still lingering on screen.
        requests: Pending requests by id.
        lockdown: The lockdown state.
        seq: The last applied record's ``seq`` (0 before the first snapshot).
        boot_id: The daemon boot the state comes from.
        loaded: Whether a snapshot was loaded at least once.
        grant_index: The grants in table order.
        request_index: The pending requests in table order.
        recent: The latest records, newest first, for the event panel.
    """

    def __init__(self) -> None:
        self.grants: dict[str, Grant] = {}
        self.requests: dict[str, Request] = {}
        self.lockdown = Lockdown()
        self.seq = 0
        self.boot_id = ""
        self.loaded = False
        self.grant_index = grant_index()
        self.request_index = request_index()
        self.recent: deque[dict[str, Any]] = deque(maxlen=EVENT_LOG_SIZE)
        self._spawned: dict[str, float] = {}
        self._spawn_order: deque[tuple[float, str]] = deque()
        self._ended: dict[str, float] = {}
        self._end_order: deque[tuple[float, str]] = deque()
        self._revoking: set[str] = set()

    def load(self, snapshot: dict[str, Any], now: float) -> None:
        """Replace everything with a ``snapshot`` reply (see :meth:`install`)."""
        self.install(PreparedSnapshot.build(snapshot), now)

    def install(self, prepared: PreparedSnapshot, now: float) -> None:
        """Replace everything with a prepared snapshot.

        Grants that appear in it but were not in the previous copy are
        highlighted as new; grants that are missing from it are dropped at
        once, so a copy never shows a grant the daemon no longer has. The
        tables keep their order, direction and filter.
        """
        self._reset_marks(prepared.grants, now)
        prepared.grant_index.adopt_view(self.grant_index)
        prepared.request_index.adopt_view(self.request_index)
        self.grants = prepared.grants
        self.requests = prepared.requests
        self.grant_index = prepared.grant_index
        self.request_index = prepared.request_index
        self._revoking = {
            gid for gid, g in self.grants.items() if g.state is GrantState.REVOKING
        }
        snapshot = prepared.snapshot
        self.lockdown = Lockdown.from_wire(snapshot.get("lockdown"))
        self.seq = int(snapshot.get("seq") or 0)
        self.boot_id = str(snapshot.get("boot_id") or "")
        self.loaded = True

    def apply(self, records: Iterable[dict[str, Any]], now: float) -> StateChange:
        """Apply records in order (the sequencer already checked their ``seq``)."""
        return self.apply_parsed(parse_records(records), now)

    def apply_parsed(self, parsed: Iterable[ParsedRecord], now: float) -> StateChange:
        """Apply records whose objects were already built (see :func:`parse_records`)."""
        change = StateChange()
        for item in parsed:
            self._apply_one(item, now, change)
        return change

    def sweep(self, now: float) -> bool:
        """Remove ended grants that lingered long enough; True when any left."""
        while self._spawn_order and now - self._spawn_order[0][0] >= SPAWN_GLOW_S:
            at, gid = self._spawn_order.popleft()
            if self._spawned.get(gid) == at:
                del self._spawned[gid]
        gone: list[str] = []
        while self._end_order and now - self._end_order[0][0] >= ENDED_LINGER_S:
            at, gid = self._end_order.popleft()
            if self._ended.get(gid) == at:
                gone.append(gid)
        leaving = [(gid, self.grants.pop(gid)) for gid in gone if gid in self.grants]
        for gid in gone:
            del self._ended[gid]
        self.grant_index.remove_many(leaving)
        return bool(gone)

    def is_new(self, grant_id: str) -> bool:
        """Whether a grant appeared within the last :data:`SPAWN_GLOW_S`."""
        return grant_id in self._spawned

    def ended_at(self, grant_id: str) -> float | None:
        """When (local time) a lingering grant was seen to end, or None."""
        return self._ended.get(grant_id)

    def counts(self) -> Counts:
        """Live grants by state, ended ones still shown, and pending requests."""
        ending = len(self._ended)
        revoking = len(self._revoking)
        return Counts(
            active=len(self.grants) - ending - revoking,
            revoking=revoking,
            ending=ending,
            pending=len(self.requests),
        )

    def _reset_marks(self, grants: dict[str, Grant], now: float) -> None:
        known = self.grants if self.loaded else grants
        self._spawned = {gid: at for gid, at in self._spawned.items() if gid in grants}
        for gid in grants.keys() - known.keys():
            self._mark_spawned(gid, now)
        self._ended.clear()
        self._end_order.clear()

    def _apply_one(self, item: ParsedRecord, now: float, change: StateChange) -> None:
        record = item.record
        seq = record.get("seq")
        if isinstance(seq, int):
            self.seq = max(self.seq, seq)
        self.recent.appendleft(record)
        change.records.append(record)
        if item.request is not None:
            change.requests |= self._put_request(item.request)
        if item.grant is not None:
            change.grants |= self._put_grant(item.grant, now)
        kind = record.get("type")
        if kind == "lockdown.engaged":
            self.lockdown = Lockdown(
                engaged=True,
                since=float(record.get("at") or now),
                by=str(record.get("actor") or ""),
                reason=str(record.get("reason") or ""),
            )
            change.lockdown = True
        elif kind == "lockdown.lifted":
            self.lockdown = Lockdown()
            change.lockdown = True

    def _put_request(self, request: Request) -> bool:
        rid = request.request_id
        old = self.requests.get(rid)
        if request.state is RequestState.PENDING:
            self.requests[rid] = request
            self.request_index.put(rid, request, old)
            return True
        if old is None:
            return False
        del self.requests[rid]
        self.request_index.remove(rid, old)
        return True

    def _put_grant(self, grant: Grant, now: float) -> bool:
        gid = grant.grant_id
        known = self.grants.get(gid)
        if not grant.is_live:
            return self._end_grant(grant, known, now)
        if known is None:
            self._mark_spawned(gid, now)
        elif not known.is_live:
            return False
        self._set_revoking(gid, grant.state is GrantState.REVOKING)
        self.grants[gid] = grant
        self.grant_index.put(gid, grant, known)
        return True

    def _end_grant(self, grant: Grant, known: Grant | None, now: float) -> bool:
        if known is None or not known.is_live:
            return False
        gid = grant.grant_id
        self._set_revoking(gid, False)
        self.grants[gid] = grant
        self._ended[gid] = now
        self._end_order.append((now, gid))
        self.grant_index.put(gid, grant, known)
        return True

    def _mark_spawned(self, gid: str, now: float) -> None:
        self._spawned[gid] = now
        self._spawn_order.append((now, gid))

    def _set_revoking(self, gid: str, revoking: bool) -> None:
        if revoking:
            self._revoking.add(gid)
        else:
            self._revoking.discard(gid)


def _parse(
    data: dict[str, Any], build: Callable[[dict[str, Any]], Model]
) -> Model | None:
    """Build a model object from its wire map, or None (logged) when it is malformed."""
    try:
        return build(data)
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("ignored a malformed object from the daemon: %r", exc)
        return None


def _parse_all(
    items: Any, build: Callable[[dict[str, Any]], Model], id_field: str
) -> dict[str, Model]:
    """Build the objects of a snapshot list (or map) by id, skipping malformed ones."""
    out: dict[str, Model] = {}
    if isinstance(items, dict):
        items = list(items.values())
    if not isinstance(items, list):
        return out
    for data in items:
        if isinstance(data, dict):
            parsed = _parse(data, build)
            if parsed is not None:
                out[getattr(parsed, id_field)] = parsed
    return out
