"""Provisioners: what a grant does outside keyturn, run off the main loop.

The default is none: the token is the access. A ``command`` provisioner runs
a configured program when a grant starts (action ``grant``) and when it ends
(action ``revoke``), with the grant in its environment and a timeout. The
programs run in worker threads, never in the loop that expires grants, so a
provisioner that hangs delays only its own grants. A revocation that fails is
retried with back-off, and the grant shows as ``revoking`` until it succeeds
or an admin force-closes it.

Environment of a run: ``KEYTURN_ACTION``, ``KEYTURN_GRANT_ID``,
``KEYTURN_VENDOR``, ``KEYTURN_SCOPES`` (space-separated),
``KEYTURN_EXPIRES_AT`` (RFC 3339) and ``KEYTURN_REQUESTED_BY``. The token is
not passed.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from keyturn.shared.config import Provisioner
from keyturn.shared.model import Grant
from keyturn.shared.times import rfc3339

__all__ = ["RETRY_MAX_S", "Outcome", "Runner", "retry_delay"]

logger = logging.getLogger(__name__)

WORKERS = 8
"""Provisioner runs at the same time."""
RETRY_FIRST_S = 1.0
"""A failed revocation is tried again after this long, doubling each time..."""
RETRY_MAX_S = 60.0
"""...up to this long between tries."""
_OUTPUT_CHARS = 200


def retry_delay(attempt: int) -> float:
    """Seconds to wait before try number ``attempt + 1`` (attempt counts from 1)."""
    return float(min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class Outcome:
    """How one provisioner run ended."""

    grant_id: str
    action: str
    ok: bool
    detail: str
    attempt: int


class Runner:
    """Runs provisioner commands in worker threads and reports back through a socket.

    The daemon polls :attr:`wake` and, when it is readable, calls :meth:`outcomes`.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=WORKERS, thread_name_prefix="keyturn-provisioner"
        )
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.wake, self._notify = socket.socketpair()
        self.wake.setblocking(False)
        self._notify.setblocking(False)

    def submit(
        self, provisioner: Provisioner, grant: Grant, action: str, attempt: int = 1
    ) -> None:
        """Start a run; its :class:`Outcome` arrives later."""
        self._pool.submit(self._run, provisioner, grant, action, attempt)

    def outcomes(self) -> list[Outcome]:
        """Every outcome that has arrived."""
        try:
            while self.wake.recv(4096):
                pass
        except BlockingIOError:
            pass
        done = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def _run(
        self, provisioner: Provisioner, grant: Grant, action: str, attempt: int
    ) -> None:
        ok, detail = _execute(provisioner, grant, action)
        self._done.put(Outcome(grant.grant_id, action, ok, detail, attempt))
        try:
            self._notify.send(b"!")
        except (BlockingIOError, OSError):
            pass  # the daemon is awake already, or stopping

    def close(self) -> None:
        """Stop taking runs; runs under way end by their timeouts."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.wake.close()
        self._notify.close()


def _execute(provisioner: Provisioner, grant: Grant, action: str) -> tuple[bool, str]:
    env = {
        **os.environ,
        "KEYTURN_ACTION": action,
        "KEYTURN_GRANT_ID": grant.grant_id,
        "KEYTURN_VENDOR": grant.vendor,
        "KEYTURN_SCOPES": " ".join(grant.scopes),
        "KEYTURN_EXPIRES_AT": rfc3339(grant.expires_at),
        "KEYTURN_REQUESTED_BY": grant.requested_by,
    }
    try:
        done = subprocess.run(
            [*provisioner.command, action],
            env=env,
            capture_output=True,
            text=True,
            timeout=provisioner.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {provisioner.timeout_s}s"
    except OSError as exc:
        return False, f"could not run {provisioner.command[0]}: {exc.strerror}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-_OUTPUT_CHARS:]
        return False, f"exit status {done.returncode}: {tail}"
    return True, "ok"
