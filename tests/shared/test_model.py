"""The model's states and the only transitions between them."""

from __future__ import annotations

import pytest

from keyturn.shared.errors import BadInput, Refused
from keyturn.shared.model import (
    GRANT_TERMINAL,
    Grant,
    GrantState,
    Request,
    RequestState,
    check_grant_transition,
    check_request_transition,
    parse_scope,
    scope_matches,
    validate_pattern,
)


def test_pending_request_may_end_every_way() -> None:
    """A pending request can be approved, denied, cancelled or time out."""
    for target in (
        RequestState.APPROVED,
        RequestState.DENIED,
        RequestState.CANCELLED,
        RequestState.EXPIRED,
    ):
        check_request_transition(RequestState.PENDING, target)


@pytest.mark.parametrize(
    "done", [s for s in RequestState if s is not RequestState.PENDING]
)
def test_decided_request_never_changes(done: RequestState) -> None:
    """A decided request stays decided."""
    for target in RequestState:
        with pytest.raises(Refused) as caught:
            check_request_transition(done, target)
        assert caught.value.code == "invalid_state"


@pytest.mark.parametrize("terminal", sorted(GRANT_TERMINAL, key=lambda s: s.value))
def test_terminal_grant_never_becomes_active_again(terminal: GrantState) -> None:
    """C-02: an ended grant never comes back, whatever is asked."""
    for target in GrantState:
        with pytest.raises(Refused):
            check_grant_transition(terminal, target)


def test_revoking_grant_never_becomes_active_again() -> None:
    """A grant whose provisioner is undoing it can only end."""
    for end in GRANT_TERMINAL:
        check_grant_transition(GrantState.REVOKING, end)
    for other in (GrantState.ACTIVE, GrantState.REVOKING):
        with pytest.raises(Refused):
            check_grant_transition(GrantState.REVOKING, other)


@pytest.mark.parametrize(
    "scope", ["payments:read", "a:b", "storage.v2:read-only", "x_1:y_2"]
)
def test_valid_scopes(scope: str) -> None:
    """Scopes are resource:action."""
    assert parse_scope(scope) == scope


@pytest.mark.parametrize(
    "scope",
    [
        "payments",
        "payments:*",
        "*:read",
        "Payments:read",
        "a:b:c",
        ":read",
        "a:",
        "",
        7,
        None,
        ["a:b"],
        "a :b",
    ],
)
def test_invalid_scopes(scope: object) -> None:
    """Anything else, wildcards included, is invalid_scope."""
    with pytest.raises(BadInput) as caught:
        parse_scope(scope)
    assert caught.value.code == "invalid_scope"


def test_patterns_match_parts() -> None:
    """Wildcards stand for a whole part of a scope."""
    assert scope_matches("payments:*", "payments:refund")
    assert scope_matches("*:admin", "models:admin")
    assert not scope_matches("*:admin", "models:administer")
    assert not scope_matches("payments:read", "payments:refund")
    with pytest.raises(ValueError):
        validate_pattern("payments")
    with pytest.raises(ValueError):
        validate_pattern("pay*:read")


def test_objects_round_trip_the_wire() -> None:
    """Requests and grants survive to_wire/from_wire unchanged."""
    request = Request(
        "req_1", "braintree", ("payments:read",), 60, "why", "oncall", 1.0, 2.0, 1
    )
    grant = Grant(
        "grt_1",
        "req_1",
        "braintree",
        ("payments:read",),
        "oncall",
        ("oncall2",),
        1.0,
        61.0,
        901.0,
    )
    assert Request.from_wire(request.to_wire()) == request
    assert Grant.from_wire(grant.to_wire()) == grant
