"""The daemon's core: every change of state goes through :meth:`Core.emit`.

A change is made as a record, appended to the journal (durable at the end of
the batch, before anyone hears of it), applied to the ledger, and queued for
the publisher. Handlers check everything first and emit last, so a refused
operation changes nothing.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import replace
from typing import Any

from keyturn.daemon.journal import Journal
from keyturn.daemon.ledger import Ledger
from keyturn.daemon.provisioners import Outcome, Runner, retry_delay
from keyturn.daemon.scheduler import Due, Scheduler
from keyturn.shared.config import Config
from keyturn.shared.keys import SigningKey
from keyturn.shared.model import (
    Grant,
    GrantState,
    Request,
    RequestState,
    check_grant_transition,
    check_request_transition,
)
from keyturn.shared.tokens import issue_token, token_fingerprint

__all__ = ["SYSTEM", "Core"]

logger = logging.getLogger(__name__)

SYSTEM = "system"
"""The actor of what the daemon does by itself (expiry, recovery)."""
POLICY = "policy"
"""The approver of what a rule approved at once."""


class Core:
    """State, journal and scheduler of one daemon.

    Args:
        config: The configuration as loaded now (replaced on reload).
        journal: The open journal.
        ledger: The state, loaded from snapshot and journal.
        signing_keys: Signing keys, oldest first; the last one signs.
    """

    def __init__(
        self,
        config: Config,
        journal: Journal,
        ledger: Ledger,
        signing_keys: list[SigningKey],
    ) -> None:
        self.config = config
        self.journal = journal
        self.ledger = ledger
        self.signing_keys = signing_keys
        self.scheduler = Scheduler()
        self.outbox: list[tuple[str, bytes]] = []
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.boot_id = secrets.token_hex(8)
        self.started_at = time.time()
        self.runner: Runner | None = None
        self._attempts: dict[str, int] = {}
        self._last_token: tuple[tuple[str, float, str], str] = (("", 0.0, ""), "")

    @property
    def signer(self) -> SigningKey:
        """The key that signs new tokens and checkpoints."""
        return self.signing_keys[-1]

    def emit(
        self,
        kind: str,
        actor: str,
        *,
        request: Request | None = None,
        grant: Grant | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Record one change: journal it, apply it, queue it for publishing."""
        record: dict[str, Any] = {
            "seq": self.journal.last_seq + 1,
            "type": kind,
            "at": time.time(),
            "actor": actor,
            **fields,
        }
        if request is not None:
            record["request"] = request.to_wire()
        if grant is not None:
            record["grant"] = grant.to_wire()
        payload = self.journal.append(record)
        self.ledger.apply_live(record, request, grant)
        self.outbox.append((kind, payload))
        self.since_checkpoint += 1
        return record

    def schedule_all(self) -> None:
        """Put every live deadline on the scheduler (after recovery)."""
        for grant in self.ledger.grants.values():
            if grant.state is GrantState.ACTIVE:
                self.scheduler.add("grant", grant.grant_id, grant.expires_at)
        for request in self.ledger.requests.values():
            self.scheduler.add("request", request.request_id, request.expires_at)
        for grant in self.ledger.grants.values():
            if grant.state is GrantState.REVOKING:
                self._undo(grant)

    # Making requests and grants.

    def new_id(self, prefix: str) -> str:
        """A fresh id such as ``grt_3f9a1c2b7d4e``."""
        while True:
            candidate = f"{prefix}_{secrets.token_hex(6)}"
            if (
                self.ledger.find_grant(candidate) is None
                and self.ledger.find_request(candidate) is None
            ):
                return candidate

    def activate(
        self, request: Request, approved_by: tuple[str, ...], actor: str
    ) -> Grant:
        """Approve a request and make its grant, both recorded; the grant's time starts now."""
        now = time.time()
        grant_id = self.new_id("grt")
        approved = replace(
            request,
            state=RequestState.APPROVED,
            approvals=approved_by if approved_by != (POLICY,) else (),
            decided_by=actor,
            decided_at=now,
            grant_id=grant_id,
        )
        grant = Grant(
            grant_id=grant_id,
            request_id=request.request_id,
            vendor=request.vendor,
            scopes=request.scopes,
            requested_by=request.requested_by,
            approved_by=approved_by,
            activated_at=now,
            expires_at=now + request.ttl_s,
            max_expires_at=now + max(request.cap_s, request.ttl_s),
            key_id=self.signer.key_id,
        )
        self.emit("request.approved", actor, request=approved)
        self.emit("grant.active", actor, grant=grant, token_fp=self.token_fp(grant))
        self.scheduler.add("grant", grant_id, grant.expires_at)
        provisioner = self._provisioner(grant)
        if provisioner is not None and self.runner is not None:
            self.runner.submit(provisioner, grant, "grant")
        logger.info(
            "op=activate grant=%s vendor=%s scopes=%s actor=%s expires_in=%ds",
            grant_id,
            grant.vendor,
            ",".join(grant.scopes),
            actor,
            request.ttl_s,
        )
        return grant

    def token(self, grant: Grant) -> str:
        """The grant's token, signed again (signatures are deterministic, nothing is stored).

        The last token is kept, since a new grant's token is needed twice in a
        row: its fingerprint for the record, then the token for the reply.
        """
        key = next(
            (k for k in self.signing_keys if k.key_id == grant.key_id), self.signer
        )
        cache_key = (grant.grant_id, grant.expires_at, key.key_id)
        if self._last_token[0] != cache_key:
            self._last_token = (cache_key, issue_token(grant, key))
        return self._last_token[1]

    def token_fp(self, grant: Grant) -> str:
        """The fingerprint of the grant's token, for the record."""
        return token_fingerprint(self.token(grant))

    def end_grant(
        self, grant: Grant, state: GrantState, actor: str, reason: str, **fields: Any
    ) -> Grant:
        """End a live grant (expired, revoked or released) and record it.

        A grant whose vendor has a provisioner first becomes ``revoking``, and
        takes its final state once the provisioner has undone the access.
        """
        check_grant_transition(grant.state, state)
        if grant.state is GrantState.ACTIVE and self._provisioner(grant) is not None:
            revoking = replace(
                grant,
                state=GrantState.REVOKING,
                ending=state.value,
                ended_by=actor,
                end_reason=reason,
            )
            self.emit("grant.revoking", actor, grant=revoking, **fields)
            self._undo(revoking)
            return revoking
        ended = replace(
            grant,
            state=state,
            ended_at=time.time(),
            ended_by=actor,
            end_reason=reason,
            ending="",
        )
        self.emit(f"grant.{state.value}", actor, grant=ended, **fields)
        logger.info(
            "op=%s grant=%s vendor=%s actor=%s reason=%s",
            state.value,
            grant.grant_id,
            grant.vendor,
            actor,
            reason,
        )
        return ended

    # Provisioners.

    def _provisioner(self, grant: Grant) -> Any:
        vendor = self.config.vendors.get(grant.vendor)
        return vendor.provisioner if vendor is not None else None

    def _undo(self, grant: Grant) -> None:
        provisioner = self._provisioner(grant)
        if provisioner is None or self.runner is None:
            self.finish_revoking(
                grant, forced=False, detail="no provisioner configured now"
            )
            return
        attempt = self._attempts.get(grant.grant_id, 0) + 1
        self._attempts[grant.grant_id] = attempt
        self.runner.submit(provisioner, grant, "revoke", attempt)

    def finish_revoking(
        self, grant: Grant, *, forced: bool, detail: str, actor: str = SYSTEM
    ) -> Grant:
        """Give a ``revoking`` grant its final state, once undone (or force-closed)."""
        self._attempts.pop(grant.grant_id, None)
        target = GrantState(grant.ending or GrantState.REVOKED.value)
        ended = replace(grant, state=target, ended_at=time.time(), ending="")
        self.emit(
            f"grant.{target.value}", actor, grant=ended, forced=forced, detail=detail
        )
        logger.info(
            "op=%s grant=%s vendor=%s forced=%s",
            target.value,
            grant.grant_id,
            grant.vendor,
            forced,
        )
        return ended

    def on_outcome(self, outcome: Outcome) -> None:
        """Take a provisioner run's outcome: finish, or record the failure and retry later."""
        grant = self.ledger.grants.get(outcome.grant_id)
        # TODO(provision-grant): a failed `grant` run is recorded but the grant stays
        # active; a vendor option should revoke it instead.
        if (
            outcome.action == "grant"
            or grant is None
            or grant.state is not GrantState.REVOKING
        ):
            if not outcome.ok:
                self.emit(
                    "provisioner.failed",
                    SYSTEM,
                    grant_id=outcome.grant_id,
                    action=outcome.action,
                    detail=outcome.detail,
                    attempt=outcome.attempt,
                )
                logger.error(
                    "provisioner %s of grant %s failed: %s",
                    outcome.action,
                    outcome.grant_id,
                    outcome.detail,
                )
            return
        if outcome.ok:
            self.finish_revoking(
                grant, forced=False, detail="provisioner undid the access"
            )
            return
        delay = retry_delay(outcome.attempt)
        self.emit(
            "provisioner.failed",
            SYSTEM,
            grant_id=grant.grant_id,
            action="revoke",
            detail=outcome.detail,
            attempt=outcome.attempt,
            retry_in_s=delay,
        )
        logger.error(
            "revoking grant %s (%s) failed, try %d, again in %.0fs: %s",
            grant.grant_id,
            grant.vendor,
            outcome.attempt,
            delay,
            outcome.detail,
        )
        self.scheduler.add("retry", grant.grant_id, time.time() + delay)

    def decide_request(
        self, request: Request, state: RequestState, actor: str, reason: str
    ) -> Request:
        """Close a pending request without a grant (denied, cancelled, expired) and record it."""
        check_request_transition(request.state, state)
        decided = replace(
            request,
            state=state,
            decided_by=actor,
            decided_at=time.time(),
            decision_reason=reason,
        )
        self.emit(f"request.{state.value}", actor, request=decided)
        logger.info(
            "op=%s request=%s vendor=%s actor=%s reason=%s",
            state.value,
            request.request_id,
            request.vendor,
            actor,
            reason,
        )
        return decided

    # Deadlines.

    def expire_due(self, limit: int) -> int:
        """Expire grants and pending requests whose deadlines passed; return how many were due."""
        due = self.scheduler.pop_due(limit)
        for item in due:
            self._expire(item, noticed=time.time(), while_down=False)
        return len(due)

    def _expire(self, item: Due, *, noticed: float, while_down: bool) -> None:
        extra = {
            "deadline": item.deadline,
            "noticed_at": noticed,
            "while_down": while_down,
        }
        if item.kind == "grant":
            grant = self.ledger.grants.get(item.object_id)
            if grant is None or grant.state is not GrantState.ACTIVE:
                return
            if grant.expires_at != item.deadline:
                return  # extended since; its new deadline has its own entry
            self.end_grant(
                grant, GrantState.EXPIRED, SYSTEM, "deadline reached", **extra
            )
        elif item.kind == "retry":
            grant = self.ledger.grants.get(item.object_id)
            if grant is not None and grant.state is GrantState.REVOKING:
                self._undo(grant)
        else:
            request = self.ledger.requests.get(item.object_id)
            if request is None or request.expires_at != item.deadline:
                return
            self.decide_request(
                request, RequestState.EXPIRED, SYSTEM, "no decision in time"
            )

    def expire_missed(self) -> int:
        """At start, expire what passed its deadline while the daemon was down."""
        now = time.time()
        count = 0
        for grant in list(self.ledger.grants.values()):
            if grant.state is GrantState.ACTIVE and grant.expires_at <= now:
                self._expire(
                    Due("grant", grant.grant_id, grant.expires_at),
                    noticed=now,
                    while_down=True,
                )
                count += 1
        for request in list(self.ledger.requests.values()):
            if request.expires_at <= now:
                self._expire(
                    Due("request", request.request_id, request.expires_at),
                    noticed=now,
                    while_down=True,
                )
                count += 1
        return count

    # Checkpoints.

    def checkpoint_due(self) -> bool:
        """Whether enough records, or enough time with records, call for a checkpoint."""
        if self.since_checkpoint == 0:
            return False
        settings = self.config.daemon
        if self.since_checkpoint >= settings.checkpoint_every:
            return True
        return time.monotonic() - self.last_checkpoint >= settings.checkpoint_interval_s

    def checkpoint(self) -> None:
        """Sign the chain head: the record before this one cannot change unseen."""
        seq = self.journal.last_seq + 1
        head = self.journal.head
        signature = self.signer.private.sign(checkpoint_message(seq, head))
        self.emit(
            "audit.checkpoint",
            SYSTEM,
            upto=seq - 1,
            kid=self.signer.key_id,
            sig=signature,
        )
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()


def checkpoint_message(seq: int, head: bytes) -> bytes:
    """What a checkpoint's signature covers: its own ``seq`` and the hash before it."""
    return b"keyturn-checkpoint\x00" + seq.to_bytes(8, "big") + head
