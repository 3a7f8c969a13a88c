"""Writes a valid keyturn journal directly, much faster than a daemon would.

The file has the layout of ``keyturn.daemon.journal``: the magic, then one
frame per record (a 4-byte big-endian length and the msgpack record), each
record holding ``prev``, the SHA-256 of the previous record's bytes. The
records are the ones the daemon itself makes for an auto-approved grant
(``request.approved``, ``grant.active`` with its token's fingerprint, and
for an ended grant ``grant.expired``), built from the shared model, with an
``audit.checkpoint`` signed by the home's signing key every
``checkpoint_every`` records, a ``daemon.started`` first and a final
checkpoint and ``daemon.stopped`` last, as after a clean stop.
"""

from __future__ import annotations

import os
import secrets
import struct
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from bench.homes import BENCH_IDENTITY, BENCH_SCOPE, BENCH_VENDOR, CHECKPOINT_EVERY
from keyturn.daemon.core import POLICY, SYSTEM, checkpoint_message
from keyturn.daemon.journal import GENESIS, MAGIC, record_hash
from keyturn.shared.keys import Home, SigningKey, load_signing_keys
from keyturn.shared.model import Grant, GrantState, Request, RequestState
from keyturn.shared.tokens import issue_token, token_fingerprint

__all__ = [
    "JournalStats",
    "JournalWriter",
    "home_signer",
    "write_recovery_journal",
    "write_storm_journal",
]

FRAME_LENGTH = struct.Struct(">I")
"""The length prefix of every record."""
PENDING_TTL_S = 15 * 60
"""As ``pending_ttl`` in the benchmark configuration."""
GRANT_CAP_S = 24 * 3600
"""As the benchmark vendor's ``max_ttl``."""
HISTORY_TTL_S = 60
"""Lifetime of each ended grant in a recovery journal."""
HISTORY_SPAN_S = 2 * 24 * 3600
"""Ended grants are spread over this much of the past."""
LIVE_TTL_S = 6 * 3600
"""Active grants in a recovery journal outlive any benchmark."""
RECORDS_PER_LIVE_GRANT = 2
RECORDS_PER_ENDED_GRANT = 3
FLUSH_BYTES = 4 * 1024 * 1024
"""Bytes buffered before a write."""


@dataclass(frozen=True)
class JournalStats:
    """What was written."""

    records: int
    grants_active: int
    grants_ended: int
    bytes: int
    seconds: float


class JournalWriter:
    """Appends chained, checkpointed records to a new journal file.

    Args:
        path: The journal file (replaced).
        signer: The key that signs checkpoints.
        checkpoint_every: Records between checkpoints.
    """

    def __init__(self, path: Path, signer: SigningKey, checkpoint_every: int) -> None:
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.head = GENESIS
        self.seq = 0
        self._since_checkpoint = 0
        self._chunks: list[bytes] = [MAGIC]
        self._pending = len(MAGIC)
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()

    def emit(self, kind: str, actor: str, at: float, **fields: Any) -> None:
        """Append one record as ``Core.emit`` builds it; checkpoint when due."""
        record = {"seq": self.seq + 1, "type": kind, "at": at, "actor": actor, **fields}
        record["prev"] = self.head
        payload: bytes = msgpack.packb(record, use_bin_type=True)
        self.head = record_hash(payload)
        self.seq += 1
        self._chunks += [FRAME_LENGTH.pack(len(payload)), payload]
        self._pending += FRAME_LENGTH.size + len(payload)
        if self._pending >= FLUSH_BYTES:
            self._flush()
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every:
            self.checkpoint(at)

    def checkpoint(self, at: float) -> None:
        """Sign the chain head as the daemon does."""
        seq = self.seq + 1
        signature = self.signer.private.sign(checkpoint_message(seq, self.head))
        self._since_checkpoint = -1  # the checkpoint record itself is not counted
        self.emit(
            "audit.checkpoint",
            SYSTEM,
            at,
            upto=seq - 1,
            kid=self.signer.key_id,
            sig=signature,
        )

    def grant(
        self, index: int, activated_at: float, ttl_s: int, *, expired: bool
    ) -> None:
        """The records of one auto-approved grant, and of its expiry if ``expired``."""
        grant = self._activate(index, activated_at, ttl_s)
        if expired:
            ended = replace(
                grant,
                state=GrantState.EXPIRED,
                ended_at=grant.expires_at,
                ended_by=SYSTEM,
                end_reason="deadline reached",
            )
            self.emit(
                "grant.expired",
                SYSTEM,
                grant.expires_at,
                deadline=grant.expires_at,
                noticed_at=grant.expires_at,
                while_down=False,
                grant=ended.to_wire(),
            )

    def _activate(self, index: int, at: float, ttl_s: int) -> Grant:
        request_id, grant_id = f"req_{index:012x}", f"grt_{index:012x}"
        request = Request(
            request_id=request_id,
            vendor=BENCH_VENDOR,
            scopes=(BENCH_SCOPE,),
            ttl_s=ttl_s,
            reason="benchmark",
            requested_by=BENCH_IDENTITY,
            requested_at=at,
            expires_at=at + PENDING_TTL_S,
            approvals_needed=0,
            state=RequestState.APPROVED,
            decided_by=POLICY,
            decided_at=at,
            grant_id=grant_id,
            cap_s=GRANT_CAP_S,
        )
        grant = Grant(
            grant_id=grant_id,
            request_id=request_id,
            vendor=BENCH_VENDOR,
            scopes=(BENCH_SCOPE,),
            requested_by=BENCH_IDENTITY,
            approved_by=(POLICY,),
            activated_at=at,
            expires_at=at + ttl_s,
            max_expires_at=at + max(GRANT_CAP_S, ttl_s),
            key_id=self.signer.key_id,
        )
        fingerprint = token_fingerprint(issue_token(grant, self.signer))
        self.emit("request.approved", POLICY, at, request=request.to_wire())
        self.emit(
            "grant.active", POLICY, at, token_fp=fingerprint, grant=grant.to_wire()
        )
        return grant

    def started(self, at: float) -> None:
        """A ``daemon.started`` record, as at a daemon's first start."""
        boot = secrets.token_hex(8)
        self.emit(
            "daemon.started", SYSTEM, at, boot_id=boot, pid=0, expired_while_down=0
        )

    def close(self, at: float) -> None:
        """End as a clean stop does (checkpoint, ``daemon.stopped``), and fsync."""
        self.checkpoint(at)
        self.emit("daemon.stopped", SYSTEM, at, boot_id="0" * 16)
        self._flush()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def _flush(self) -> None:
        self._file.write(b"".join(self._chunks))
        self._chunks.clear()
        self._pending = 0


def home_signer(home: Path) -> SigningKey:
    """The newest signing key of a home: the one a daemon there would use."""
    return load_signing_keys(Home(home))[-1]


def write_storm_journal(home: Path, grants: int, deadline: float) -> JournalStats:
    """A journal whose ``grants`` active grants all expire at ``deadline`` exactly."""
    began = time.perf_counter()
    writer = JournalWriter(Home(home).journal, home_signer(home), CHECKPOINT_EVERY)
    activated = deadline - LIVE_TTL_S
    writer.started(activated)
    for index in range(grants):
        writer.grant(index, activated, LIVE_TTL_S, expired=False)
    writer.close(time.time())
    size = Home(home).journal.stat().st_size
    return JournalStats(writer.seq, grants, 0, size, time.perf_counter() - began)


def write_recovery_journal(home: Path, active: int, records: int) -> JournalStats:
    """About ``records`` records ending with ``active`` active grants.

    Ended grants (activated, expired a minute later) spread over the last
    two days make up the rest; the active ones were made in the last minute.
    """
    began = time.perf_counter()
    now = time.time()
    checkpoints = records // (CHECKPOINT_EVERY + 1)
    budget = records - active * RECORDS_PER_LIVE_GRANT - checkpoints - 3
    ended = max(0, budget // RECORDS_PER_ENDED_GRANT)
    writer = JournalWriter(Home(home).journal, home_signer(home), CHECKPOINT_EVERY)
    start = now - HISTORY_SPAN_S
    writer.started(start)
    step = (HISTORY_SPAN_S - 2 * HISTORY_TTL_S) / max(1, ended)
    for index in range(ended):
        writer.grant(index, start + index * step, HISTORY_TTL_S, expired=True)
    for index in range(ended, ended + active):
        writer.grant(index, now - HISTORY_TTL_S, LIVE_TTL_S, expired=False)
    writer.close(now)
    size = Home(home).journal.stat().st_size
    return JournalStats(writer.seq, active, ended, size, time.perf_counter() - began)
