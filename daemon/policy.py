"""The policy engine: what a vendor may hold, and who must agree before it does.

Checks run in this order, and the first failure is the answer: the vendor
exists; every scope is a concrete ``resource:action`` that the vendor may ever
hold; the duration is within the vendor's maximum and the global one. Then
the ordered rules decide: a ``deny`` rule matches when any requested scope
matches it, ``approve`` and ``review`` rules when every scope does (and the
duration is within the rule's ``max_ttl``). No rule: ``[policy] default``.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyturn.shared.config import Config, Rule, Vendor
from keyturn.shared.durations import format_duration
from keyturn.shared.errors import BadInput, Refused
from keyturn.shared.model import MAX_SCOPES, parse_scope, scope_matches

__all__ = ["Decision", "check_request", "decide"]


@dataclass(frozen=True)
class Decision:
    """What policy says of a checked request."""

    action: str
    """``approve``, ``deny`` or ``review``."""
    rule: str
    """The deciding rule's name, or ``default``."""
    approvals: int
    """Approvals needed (review only)."""
    cap_s: int
    """Longest lifetime a resulting grant may reach by extension."""


def check_request(
    config: Config, vendor_id: str, scopes: list[str], ttl_s: int
) -> tuple[Vendor, tuple[str, ...]]:
    """Check a request against what its vendor may ever hold.

    Returns:
        The vendor and the scopes, sorted and without duplicates.

    Raises:
        BadInput: ``unknown_vendor``, ``invalid_scope`` (also for too many).
        Refused: ``scope_not_allowed``, ``duration_exceeds_max``.
    """
    vendor = config.vendors.get(vendor_id)
    if vendor is None:
        raise BadInput("unknown_vendor", f"unknown vendor {vendor_id[:80]!r}")
    if len(scopes) > MAX_SCOPES:
        raise BadInput("invalid_scope", f"at most {MAX_SCOPES} scopes in one request")
    clean = tuple(sorted({parse_scope(scope) for scope in scopes}))
    for scope in clean:
        if not any(scope_matches(pattern, scope) for pattern in vendor.scopes):
            raise Refused(
                "scope_not_allowed",
                f"vendor {vendor.id!r} may not hold scope {scope!r}",
            )
    limit = min(vendor.max_ttl_s, config.policy.max_ttl_s)
    if ttl_s > limit:
        raise Refused(
            "duration_exceeds_max",
            f"{format_duration(ttl_s)} is longer than the {format_duration(limit)} "
            f"that vendor {vendor.id!r} may hold access",
        )
    return vendor, clean


def decide(
    config: Config, vendor: Vendor, scopes: tuple[str, ...], ttl_s: int
) -> Decision:
    """Apply the ordered rules to a checked request."""
    vendor_cap = min(vendor.max_ttl_s, config.policy.max_ttl_s)
    for rule in config.rules:
        if _matches(rule, vendor.id, scopes, ttl_s):
            cap = vendor_cap
            if rule.action == "approve" and rule.max_ttl_s is not None:
                cap = min(cap, rule.max_ttl_s)
            return Decision(rule.action, rule.name, rule.approvals, cap)
    default = config.policy.default
    return Decision(default, "default", config.policy.approvals, vendor_cap)


def _matches(rule: Rule, vendor_id: str, scopes: tuple[str, ...], ttl_s: int) -> bool:
    if "*" not in rule.vendors and vendor_id not in rule.vendors:
        return False
    covered = [any(scope_matches(p, scope) for p in rule.scopes) for scope in scopes]
    if rule.action == "deny":
        return any(covered)
    if rule.max_ttl_s is not None and ttl_s > rule.max_ttl_s:
        return False
    return all(covered)
