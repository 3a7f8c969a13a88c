"""The console's live state: the daemon's state at its seq, plus screen marks."""

from __future__ import annotations

import pytest
from console_wire import T0, Wire

from keyturn.console.state import ENDED_LINGER_S, SPAWN_GLOW_S, LiveState
from keyturn.shared.model import GrantState


@pytest.fixture
def wire() -> Wire:
    return Wire()


def loaded(wire: Wire, grants: int = 3, requests: int = 1) -> LiveState:
    state = LiveState()
    snapshot = wire.snapshot(
        [wire.grant(left_s=100.0 * (n + 1)) for n in range(grants)],
        [wire.request() for _ in range(requests)],
    )
    state.load(snapshot, T0)
    return state


def test_snapshot_loads_live_grants_and_pending_requests(wire: Wire) -> None:
    """After a snapshot the console holds exactly the daemon's live objects."""
    state = loaded(wire, grants=3, requests=2)

    assert len(state.grants) == 3
    assert len(state.requests) == 2
    assert state.counts().active == 3
    assert not any(state.is_new(gid) for gid in state.grants)
    times = [state.grants[gid].expires_at for gid in state.grant_index.ids(0, 3)]
    assert times == sorted(times)


def test_new_grant_is_highlighted_then_not(wire: Wire) -> None:
    """A grant that appears is highlighted as it spawns, for a few seconds only."""
    state = loaded(wire)
    grant = wire.grant(left_s=50.0)

    change = state.apply([wire.record("grant.active", grant=grant)], T0)

    assert change.grants
    assert state.is_new(grant["grant_id"])
    assert state.grant_index.id_at(0) == grant["grant_id"]
    state.sweep(T0 + SPAWN_GLOW_S)
    assert not state.is_new(grant["grant_id"])


def test_ended_grant_lingers_then_leaves(wire: Wire) -> None:
    """An ended grant shows how it ended for a few seconds, then leaves the table."""
    state = loaded(wire, grants=0)
    grant = wire.grant()
    state.apply([wire.record("grant.active", grant=grant)], T0)

    state.apply(
        [wire.record("grant.revoked", grant=wire.ended(grant, "revoked"))], T0 + 1
    )

    gid = grant["grant_id"]
    assert state.grants[gid].state is GrantState.REVOKED
    assert state.counts().active == 0
    assert not state.sweep(T0 + 1 + ENDED_LINGER_S - 0.1)
    assert state.sweep(T0 + 1 + ENDED_LINGER_S)
    assert gid not in state.grants
    assert len(state.grant_index) == 0


def test_a_grant_never_comes_back_from_the_end(wire: Wire) -> None:
    """A late 'active' copy of an ended grant does not revive it (C-02)."""
    state = loaded(wire, grants=0)
    grant = wire.grant()
    state.apply([wire.record("grant.active", grant=grant)], T0)
    state.apply([wire.record("grant.expired", grant=wire.ended(grant, "expired"))], T0)

    state.apply([wire.record("grant.extended", grant=grant)], T0)

    assert state.grants[grant["grant_id"]].state is GrantState.EXPIRED


def test_extension_moves_the_grant_in_time_order(wire: Wire) -> None:
    """An extended grant moves to where its new expiry sorts."""
    state = loaded(wire, grants=3)
    first = state.grant_index.id_at(0)
    longer = {**state.grants[first].to_wire(), "expires_at": T0 + 10_000.0}

    state.apply([wire.record("grant.extended", grant=longer)], T0)

    assert state.grant_index.id_at(2) == first
    assert state.grants[first].expires_at == T0 + 10_000.0


def test_requests_leave_when_decided(wire: Wire) -> None:
    """Approved, denied, cancelled or expired requests leave the pending list."""
    state = loaded(wire, requests=0)
    pending = wire.request()
    state.apply([wire.record("request.created", request=pending)], T0)
    assert list(state.requests) == [pending["request_id"]]

    decided = {**pending, "state": "denied", "decision_reason": "no"}
    state.apply([wire.record("request.denied", request=decided)], T0)

    assert state.requests == {}
    assert len(state.request_index) == 0


def test_lockdown_engaged_and_lifted(wire: Wire) -> None:
    """The banner's data comes from the lockdown records."""
    state = loaded(wire)

    state.apply([wire.record("lockdown.engaged", actor="oncall", reason="breach")], T0)
    assert state.lockdown.engaged
    assert (state.lockdown.by, state.lockdown.reason) == ("oncall", "breach")

    state.apply([wire.record("lockdown.lifted", actor="admin")], T0)
    assert not state.lockdown.engaged


def test_resnapshot_drops_ghost_grants(wire: Wire) -> None:
    """After a restart or a gap, grants the daemon lost vanish at once (C-07)."""
    state = loaded(wire, grants=3)
    keep = state.grants[state.grant_index.id_at(1)].to_wire()
    newcomer = wire.grant()

    state.load(wire.snapshot([keep, newcomer], [], boot_id="boot-2"), T0)

    assert set(state.grants) == {keep["grant_id"], newcomer["grant_id"]}
    assert state.is_new(newcomer["grant_id"])
    assert not state.is_new(keep["grant_id"])
    assert state.boot_id == "boot-2"


def test_recent_records_newest_first_and_bounded(wire: Wire) -> None:
    """The event panel gets the latest records, newest first."""
    state = loaded(wire)
    records = [wire.record("audit.checkpoint") for _ in range(500)]

    state.apply(records, T0)

    assert state.recent[0]["seq"] == records[-1]["seq"]
    assert len(state.recent) < 500
    assert state.seq == records[-1]["seq"]


def test_malformed_objects_are_skipped(wire: Wire) -> None:
    """A malformed grant from the wire is ignored instead of crashing the console."""
    state = loaded(wire, grants=1)

    state.apply([wire.record("grant.active", grant={"grant_id": "grt_x"})], T0)

    assert "grt_x" not in state.grants
    assert len(state.grants) == 1


def test_revoking_counts_separately(wire: Wire) -> None:
    """A grant whose revocation is still running counts as revoking, not active."""
    state = loaded(wire, grants=2)
    gid = state.grant_index.id_at(0)
    revoking = {**state.grants[gid].to_wire(), "state": "revoking", "ending": "revoked"}

    state.apply([wire.record("grant.revoked", grant=revoking)], T0)

    counts = state.counts()
    assert (counts.active, counts.revoking) == (1, 1)
