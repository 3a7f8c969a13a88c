"""One handler per op. Each docstring is that op's protocol page.

A handler checks its caller's role and its arguments, then changes state
through :class:`~keyturn.daemon.core.Core`; it raises a
:class:`~keyturn.shared.errors.KeyturnError` before changing anything when it
refuses. The result map is the reply's ``result``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from keyturn.daemon.core import POLICY, Core
from keyturn.daemon.policy import check_request, decide
from keyturn.shared import __version__
from keyturn.shared.config import Identity
from keyturn.shared.durations import format_duration, parse_duration
from keyturn.shared.errors import BadInput, Refused
from keyturn.shared.model import (
    Grant,
    GrantState,
    Request,
    RequestState,
    Role,
    scope_matches,
)
from keyturn.shared.protocol import Args
from keyturn.shared.tokens import TokenInvalid, verify_token

__all__ = ["HANDLERS", "MUTATING_OPS", "Context"]

_DECIDERS = (Role.ADMIN, Role.APPROVER)
MAX_PENDING_PER_IDENTITY = 100
"""Requests one identity may have waiting at once; more would flood the approvers."""


@dataclass(frozen=True, slots=True)
class Context:
    """Who is calling, and the daemon they call."""

    core: Core
    identity: Identity

    @property
    def name(self) -> str:
        return self.identity.name

    def require(self, op: str, *roles: Role) -> None:
        """Refuse the op unless the caller has one of the roles."""
        if self.identity.role not in roles:
            raise Refused(
                "forbidden",
                f"identity {self.name!r} ({self.identity.role.value}) may not {op}",
            )

    def require_vendor(self, op: str, vendor: str) -> None:
        """A requester acts only for its own vendor."""
        if self.identity.role is Role.REQUESTER and self.identity.vendor != vendor:
            raise Refused(
                "forbidden",
                f"identity {self.name!r} may {op} only for vendor {self.identity.vendor!r}",
            )


Handler = Callable[[Context, Args], dict[str, Any]]


def _pending(ctx: Context, args: Args) -> Request:
    request_id = args.text("request_id")
    request = ctx.core.ledger.find_request(request_id)
    if request is None:
        raise Refused("not_found", f"no request {request_id[:40]!r}")
    if request.state is not RequestState.PENDING:
        raise Refused(
            "invalid_state", f"request {request_id} is already {request.state.value}"
        )
    if request.expires_at <= time.time():
        raise Refused(
            "expired", f"request {request_id} timed out waiting for a decision"
        )
    return request


def _grant_in(ctx: Context, args: Args, state: GrantState) -> Grant:
    """The grant named by ``grant_id``, refused unless it is in ``state``."""
    grant_id = args.text("grant_id")
    grant = ctx.core.ledger.find_grant(grant_id)
    if grant is None:
        raise Refused("not_found", f"no grant {grant_id[:40]!r}")
    if grant.state is not state:
        raise Refused(
            "invalid_state",
            f"grant {grant_id} is {grant.state.value}, not {state.value}",
        )
    return grant


def _live_grant(ctx: Context, args: Args) -> Grant:
    return _grant_in(ctx, args, GrantState.ACTIVE)


def _refuse_in_lockdown(ctx: Context, what: str) -> None:
    lockdown = ctx.core.ledger.lockdown
    if lockdown["engaged"]:
        raise Refused(
            "lockdown",
            f"lockdown is engaged ({lockdown['reason']}); no {what} until it is lifted",
        )


def _owns(ctx: Context, grant: Grant) -> bool:
    ident = ctx.identity
    if ident.role is Role.REQUESTER:
        return ident.vendor == grant.vendor
    return grant.requested_by == ident.name


def op_request(ctx: Context, args: Args) -> dict[str, Any]:
    """Ask for scopes of a vendor for a duration.

    Args: ``vendor``, ``scopes`` (list), ``ttl`` (duration; the vendor's default
    when absent), ``reason``, ``ticket`` (optional).

    Result: ``request``; when policy approved at once also ``grant`` and
    ``token``. A request that needs approval is ``pending``.

    Errors: ``forbidden`` (auditor, viewer, or another vendor's requester),
    ``unknown_vendor``, ``invalid_scope``, ``bad_duration``,
    ``scope_not_allowed``, ``duration_exceeds_max``, ``lockdown``,
    ``policy_denied`` (recorded; its ``request_id`` is in the error),
    ``too_many_pending``.
    """
    ctx.require("request", Role.ADMIN, Role.APPROVER, Role.REQUESTER)
    vendor_id = args.text("vendor")
    ctx.require_vendor("request", vendor_id)
    scopes = args.strings("scopes")
    reason = args.text("reason")
    ticket = args.text("ticket", required=False)
    config = ctx.core.config
    default = (
        config.vendors[vendor_id].default_ttl_s if vendor_id in config.vendors else 0
    )
    raw_ttl = args.raw("ttl")
    ttl_s = parse_duration(raw_ttl, what="ttl") if raw_ttl is not None else default
    vendor, clean = check_request(config, vendor_id, scopes, ttl_s or 1)
    _refuse_in_lockdown(ctx, "new requests")

    decision = decide(config, vendor, clean, ttl_s)
    now = time.time()
    request = Request(
        request_id=ctx.core.new_id("req"),
        vendor=vendor.id,
        scopes=clean,
        ttl_s=ttl_s,
        reason=reason,
        ticket=ticket,
        requested_by=ctx.name,
        requested_at=now,
        expires_at=now + config.daemon.pending_ttl_s,
        approvals_needed=decision.approvals if decision.action == "review" else 0,
        cap_s=decision.cap_s,
    )
    if decision.action == "deny":
        denied = ctx.core.decide_request(
            request, RequestState.DENIED, POLICY, f"rule {decision.rule}"
        )
        raise Refused(
            "policy_denied", f"denied by policy rule {decision.rule!r}"
        ).with_details(request_id=denied.request_id, rule=decision.rule)
    if decision.action == "approve":
        grant = ctx.core.activate(request, (POLICY,), POLICY)
        approved = ctx.core.ledger.find_request(request.request_id)
        assert approved is not None
        return {
            "request": approved.to_wire(),
            "grant": grant.to_wire(),
            "token": ctx.core.token(grant),
        }
    if ctx.core.ledger.pending_of(ctx.name) >= MAX_PENDING_PER_IDENTITY:
        raise Refused(
            "too_many_pending",
            f"{ctx.name} already has {MAX_PENDING_PER_IDENTITY} requests waiting for a "
            "decision; cancel some or wait",
        )
    ctx.core.emit("request.created", ctx.name, request=request, rule=decision.rule)
    ctx.core.scheduler.add("request", request.request_id, request.expires_at)
    return {"request": request.to_wire()}


def op_approve(ctx: Context, args: Args) -> dict[str, Any]:
    """Approve a pending request; with enough approvals it becomes a grant.

    Args: ``request_id``.

    Result: ``request``, and ``grant`` once the last approval needed is in.

    Errors: ``forbidden``, ``not_found``, ``invalid_state``, ``expired``,
    ``self_approval`` (nobody approves a request they made), ``conflict``
    (this identity approved it already), ``lockdown``.
    """
    ctx.require("approve", *_DECIDERS)
    request = _pending(ctx, args)
    if request.requested_by == ctx.name:
        raise Refused(
            "self_approval",
            f"{ctx.name} made request {request.request_id} and may not approve it",
        )
    if ctx.name in request.approvals:
        raise Refused(
            "conflict", f"{ctx.name} already approved request {request.request_id}"
        )
    _refuse_in_lockdown(ctx, "approvals")
    approvals = (*request.approvals, ctx.name)
    if len(approvals) < request.approvals_needed:
        updated = replace(request, approvals=approvals)
        ctx.core.emit("request.approval", ctx.name, request=updated)
        return {"request": updated.to_wire()}
    grant = ctx.core.activate(request, approvals, ctx.name)
    approved = ctx.core.ledger.find_request(request.request_id)
    assert approved is not None
    return {"request": approved.to_wire(), "grant": grant.to_wire()}


def op_deny(ctx: Context, args: Args) -> dict[str, Any]:
    """Deny a pending request.

    Args: ``request_id``, ``reason``.

    Result: ``request``. Errors: ``forbidden``, ``not_found``, ``invalid_state``, ``expired``.
    """
    ctx.require("deny", *_DECIDERS)
    reason = args.text("reason")
    request = _pending(ctx, args)
    denied = ctx.core.decide_request(request, RequestState.DENIED, ctx.name, reason)
    return {"request": denied.to_wire()}


def op_cancel(ctx: Context, args: Args) -> dict[str, Any]:
    """Withdraw a pending request: its maker, or an admin.

    Args: ``request_id``. Result: ``request``.
    Errors: ``forbidden``, ``not_found``, ``invalid_state``, ``expired``.
    """
    request = _pending(ctx, args)
    if request.requested_by != ctx.name and ctx.identity.role is not Role.ADMIN:
        raise Refused(
            "forbidden",
            f"only {request.requested_by} or an admin may cancel {request.request_id}",
        )
    cancelled = ctx.core.decide_request(
        request, RequestState.CANCELLED, ctx.name, "cancelled"
    )
    return {"request": cancelled.to_wire()}


def op_revoke(ctx: Context, args: Args) -> dict[str, Any]:
    """End an active grant now.

    Args: ``grant_id``, ``reason`` (optional). Result: ``grant``.
    Errors: ``forbidden``, ``not_found``, ``invalid_state`` (already ended).
    """
    ctx.require("revoke", *_DECIDERS)
    reason = args.text("reason", required=False) or "revoked"
    grant = _live_grant(ctx, args)
    ended = ctx.core.end_grant(grant, GrantState.REVOKED, ctx.name, reason)
    return {"grant": ended.to_wire()}


def op_release(ctx: Context, args: Args) -> dict[str, Any]:
    """Give a grant back before it expires: its vendor's requester, its maker, or an admin.

    Args: ``grant_id``. Result: ``grant``.
    Errors: ``forbidden``, ``not_found``, ``invalid_state``.
    """
    grant = _live_grant(ctx, args)
    if not _owns(ctx, grant) and ctx.identity.role is not Role.ADMIN:
        raise Refused(
            "forbidden", f"identity {ctx.name!r} may not release grant {grant.grant_id}"
        )
    ended = ctx.core.end_grant(grant, GrantState.RELEASED, ctx.name, "released")
    return {"grant": ended.to_wire()}


def op_extend(ctx: Context, args: Args) -> dict[str, Any]:
    """Lengthen an active grant, never past its maximum lifetime.

    Args: ``grant_id``, ``by`` (duration).

    Result: ``grant``, ``capped`` (true when cut to the maximum), and
    ``token`` (a new one with the new expiry) for the grant's own requester.

    Errors: ``forbidden``, ``not_found``, ``invalid_state``, ``bad_duration``,
    ``duration_exceeds_max`` (already at its maximum), ``lockdown``.
    """
    by_s = parse_duration(args.raw("by"), what="by")
    grant = _live_grant(ctx, args)
    if not _owns(ctx, grant) and ctx.identity.role not in _DECIDERS:
        raise Refused(
            "forbidden", f"identity {ctx.name!r} may not extend grant {grant.grant_id}"
        )
    _refuse_in_lockdown(ctx, "extensions")
    vendor = ctx.core.config.vendors.get(grant.vendor)
    for scope in grant.scopes:
        if vendor is None or not any(scope_matches(p, scope) for p in vendor.scopes):
            raise Refused(
                "scope_not_allowed",
                f"vendor {grant.vendor!r} may no longer hold {scope!r}; the grant is not extended",
            )
    target = grant.expires_at + by_s
    new_expiry = min(target, grant.max_expires_at)
    if new_expiry <= grant.expires_at:
        limit = format_duration(grant.max_expires_at - grant.activated_at)
        raise Refused(
            "duration_exceeds_max",
            f"grant {grant.grant_id} is at its maximum of {limit}",
        )
    extended = replace(grant, expires_at=new_expiry)
    ctx.core.emit(
        "grant.extended",
        ctx.name,
        grant=extended,
        previous_expires_at=grant.expires_at,
        capped=new_expiry < target,
        token_fp=ctx.core.token_fp(extended),
    )
    ctx.core.scheduler.add("grant", grant.grant_id, new_expiry)
    result: dict[str, Any] = {
        "grant": extended.to_wire(),
        "capped": new_expiry < target,
    }
    if _owns(ctx, grant):
        result["token"] = ctx.core.token(extended)
    return result


def op_force(ctx: Context, args: Args) -> dict[str, Any]:
    """Close a grant stuck in ``revoking`` without its provisioner: admins only, recorded as forced.

    Args: ``grant_id``, ``reason``. Result: ``grant``.
    Errors: ``forbidden``, ``not_found``, ``invalid_state`` (not revoking).
    """
    ctx.require("force-close a grant", Role.ADMIN)
    reason = args.text("reason")
    grant = _grant_in(ctx, args, GrantState.REVOKING)
    ended = ctx.core.finish_revoking(grant, forced=True, detail=reason, actor=ctx.name)
    return {"grant": ended.to_wire()}


def _visible(ctx: Context, vendor: str) -> bool:
    ident = ctx.identity
    return ident.role is not Role.REQUESTER or ident.vendor == vendor


def op_list(ctx: Context, args: Args) -> dict[str, Any]:
    """Grants and requests: live ones, or with ``all`` also recently ended ones.

    Args: ``all`` (bool), ``vendor`` (optional). A requester sees only its vendor.

    Result: ``grants`` and ``requests``, each a list of objects.
    """
    everything = args.flag("all")
    vendor = args.text("vendor", required=False)
    ledger = ctx.core.ledger
    grants: list[Grant] = list(ledger.grants.values())
    requests: list[Request] = list(ledger.requests.values())
    if everything:
        grants += list(ledger.ended_grants.values())
        requests += list(ledger.decided_requests.values())
    keep = [
        g.to_wire()
        for g in grants
        if (not vendor or g.vendor == vendor) and _visible(ctx, g.vendor)
    ]
    keep_r = [
        r.to_wire()
        for r in requests
        if (not vendor or r.vendor == vendor) and _visible(ctx, r.vendor)
    ]
    return {"grants": keep, "requests": keep_r, "now": time.time()}


def op_get(ctx: Context, args: Args) -> dict[str, Any]:
    """One request or grant by id; the grant's own requester also gets its token.

    Args: ``id``. Result: ``request`` and/or ``grant`` (and ``token``).
    Errors: ``not_found`` (also for another vendor's objects, to a requester).
    """
    object_id = args.text("id")
    ledger = ctx.core.ledger
    result: dict[str, Any] = {}
    request = ledger.find_request(object_id)
    grant = ledger.find_grant(object_id)
    if request is not None and request.grant_id:
        grant = ledger.find_grant(request.grant_id)
    if grant is not None and request is None:
        request = ledger.find_request(grant.request_id)
    if request is not None and _visible(ctx, request.vendor):
        result["request"] = request.to_wire()
    if grant is not None and _visible(ctx, grant.vendor):
        result["grant"] = grant.to_wire()
        if grant.state is GrantState.ACTIVE and _owns(ctx, grant):
            result["token"] = ctx.core.token(grant)
    if not result:
        raise Refused("not_found", f"no request or grant {object_id[:40]!r}")
    return result


def op_snapshot(ctx: Context, args: Args) -> dict[str, Any]:
    """The live state and the ``seq`` it reflects, for subscribers that (re)join.

    Result: ``seq``, ``boot_id``, ``lockdown``, ``grants`` (live), ``requests``
    (pending), ``now``.
    """
    ledger = ctx.core.ledger
    # TODO(snapshot-op): at 100,000 grants this reply is tens of megabytes built in
    # one turn of the loop; it should be sent in pages so expiry never waits on it.
    return {
        "seq": ledger.seq,
        "boot_id": ctx.core.boot_id,
        "lockdown": dict(ledger.lockdown),
        "grants": [
            g.to_wire() for g in ledger.grants.values() if _visible(ctx, g.vendor)
        ],
        "requests": [
            r.to_wire() for r in ledger.requests.values() if _visible(ctx, r.vendor)
        ],
        "now": time.time(),
    }


def op_status(ctx: Context, args: Args) -> dict[str, Any]:
    """How the daemon is, and who the caller is.

    Result: ``seq``, ``boot_id``, ``started_at``, ``now``, ``counts``,
    ``lockdown``, ``identity``, ``role``, ``vendor``, ``version``, ``key_id``.
    """
    core = ctx.core
    return {
        "seq": core.ledger.seq,
        "boot_id": core.boot_id,
        "started_at": core.started_at,
        "now": time.time(),
        "counts": core.ledger.counts(),
        "lockdown": dict(core.ledger.lockdown),
        "identity": ctx.name,
        "role": ctx.identity.role.value,
        "vendor": ctx.identity.vendor,
        "version": __version__,
        "key_id": core.signer.key_id,
    }


def op_lockdown(ctx: Context, args: Args) -> dict[str, Any]:
    """Revoke every live grant, deny every pending request, refuse new ones until lifted.

    Args: ``reason``. Result: ``revoked``, ``denied``, ``lockdown``.
    Errors: ``forbidden``, ``conflict`` (already engaged).
    """
    ctx.require("lock down", *_DECIDERS)
    reason = args.text("reason")
    core = ctx.core
    if core.ledger.lockdown["engaged"]:
        raise Refused("conflict", "lockdown is already engaged")
    core.emit("lockdown.engaged", ctx.name, reason=reason)
    revoked = 0
    for grant in list(core.ledger.grants.values()):
        if grant.state is GrantState.ACTIVE:
            core.end_grant(grant, GrantState.REVOKED, ctx.name, f"lockdown: {reason}")
            revoked += 1
    denied = 0
    for request in list(core.ledger.requests.values()):
        core.decide_request(
            request, RequestState.DENIED, ctx.name, f"lockdown: {reason}"
        )
        denied += 1
    return {
        "revoked": revoked,
        "denied": denied,
        "lockdown": dict(core.ledger.lockdown),
    }


def op_lift(ctx: Context, args: Args) -> dict[str, Any]:
    """End a lockdown: admins only.

    Args: ``reason`` (optional). Result: ``lockdown``.
    Errors: ``forbidden``, ``conflict`` (not engaged).
    """
    ctx.require("lift a lockdown", Role.ADMIN)
    reason = args.text("reason", required=False)
    core = ctx.core
    if not core.ledger.lockdown["engaged"]:
        raise Refused("conflict", "lockdown is not engaged")
    core.emit("lockdown.lifted", ctx.name, reason=reason)
    return {"lockdown": dict(core.ledger.lockdown)}


def op_verify(ctx: Context, args: Args) -> dict[str, Any]:
    """Check a token: signature, times, and whether its grant still stands.

    Args: ``token``. Result: ``valid`` (bool), ``reason``, and ``grant`` when known.
    """
    token = args.raw("token")
    if not isinstance(token, str):
        raise BadInput("bad_request", "argument 'token' must be a string")
    keys = {k.key_id: k.private.public_key() for k in ctx.core.signing_keys}
    try:
        claims = verify_token(token, keys, time.time())
    except TokenInvalid as exc:
        return {"valid": False, "reason": str(exc)}
    grant = ctx.core.ledger.find_grant(claims.grant_id)
    if grant is None:
        return {"valid": False, "reason": "no such grant is known to the daemon"}
    result: dict[str, Any] = {"grant": grant.to_wire()}
    if grant.state is GrantState.REVOKING:
        return {**result, "valid": False, "reason": "grant is being revoked"}
    if grant.state is not GrantState.ACTIVE:
        return {**result, "valid": False, "reason": f"grant was {grant.state.value}"}
    return {**result, "valid": True, "reason": "valid"}


HANDLERS: dict[str, Handler] = {
    "request": op_request,
    "approve": op_approve,
    "deny": op_deny,
    "cancel": op_cancel,
    "revoke": op_revoke,
    "release": op_release,
    "extend": op_extend,
    "list": op_list,
    "get": op_get,
    "snapshot": op_snapshot,
    "status": op_status,
    "lockdown": op_lockdown,
    "lift": op_lift,
    "verify": op_verify,
    "force": op_force,
}
"""The op registry: the dispatcher looks ops up here."""

MUTATING_OPS = frozenset(
    {
        "request",
        "approve",
        "deny",
        "cancel",
        "revoke",
        "release",
        "extend",
        "lockdown",
        "lift",
        "force",
    }
)
"""Ops whose retries with the same id return the first result instead of acting twice."""
