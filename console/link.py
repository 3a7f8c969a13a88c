"""The console's link to the daemon: the event feed and the operator's commands.

Two threads, each owning its sockets (ZeroMQ sockets are not thread-safe):

- the feed thread reads the SUB socket, asks for snapshots with its own
  client, lets the :class:`~keyturn.console.sync.Sequencer` decide what to
  apply, watches the heartbeat, and posts batches of records to the app;
- the command thread runs the operator's actions (approve, deny, revoke,
  extend, lockdown, lift) one at a time on a second client and posts whether
  the daemon did them or why it refused.

Neither thread touches the app's state; they only post messages
(:mod:`keyturn.console.messages`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.message import Message

from keyturn.console.messages import (
    ActionRefused,
    ActionSucceeded,
    DaemonConnected,
    DaemonLost,
    EventsArrived,
    HeartbeatSeen,
    IdentityKnown,
    LinkFailed,
    SnapshotTaken,
)
from keyturn.console.state import PreparedSnapshot, parse_records
from keyturn.console.sync import Sequencer, Verdict
from keyturn.shared.client import Client, Subscriber
from keyturn.shared.config import ConfigError
from keyturn.shared.errors import KeyturnError, Unreachable
from keyturn.shared.keys import KeyFileError

__all__ = [
    "BATCH_MAX",
    "LOST_AFTER_S",
    "Command",
    "DaemonLink",
]

logger = logging.getLogger(__name__)

FEED_POLL_S = 0.1
"""How long the feed waits for a record before it checks liveness and stop."""
BATCH_MAX = 500
"""Most records posted to the app in one message: applying 500 records takes
the app's thread about 20 ms at 100,000 grants, so a key press never waits
long behind a burst."""
BATCH_WINDOW_S = 0.05
"""Longest time the feed gathers records before posting them."""
LOST_AFTER_S = 2.0
"""Silence (no heartbeat, no record) after which the daemon counts as gone."""
RETRY_S = 1.0
"""Pause between snapshot attempts while the daemon does not answer."""
SNAPSHOT_TIMEOUT_S = 10.0
"""A snapshot of 100,000 grants takes a while to build and send."""
PROBE_TIMEOUT_S = 1.0
"""How long a snapshot request waits while the daemon has not been heard."""
COMMAND_TIMEOUT_S = 4.5
"""How long an operator's action waits for the daemon's reply."""
COMMAND_POLL_S = 0.1
"""How often the idle command thread checks whether to stop."""

Post = Callable[[Message], object]
"""Posts a message to the app (thread-safe)."""
Clock = Callable[[], float]
"""Returns wall-clock Unix seconds."""


@dataclass(frozen=True)
class Command:
    """One operator action for the daemon, with the words to report it in."""

    action: str
    """The action's id (``approve``, ``revoke``...)."""
    op: str
    """The wire op."""
    args: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    """What the action does, e.g. ``revoke grt_0123 (braintree payments:read)``."""


class DaemonLink:
    """Talks to one daemon as one identity, from two worker threads.

    Args:
        home: The state folder with the configuration and key files.
        identity: Whose keys to use.
        post: Thread-safe function that delivers a message to the app.
        clock: Wall-clock time, for the times reported in messages.
    """

    def __init__(
        self, home: Path, identity: str, post: Post, clock: Clock = time.time
    ) -> None:
        self.home = home
        self.identity = identity
        self._post = post
        self._clock = clock
        self._stop = threading.Event()
        self._commands: queue.Queue[Command] = queue.Queue()

    def stop(self) -> None:
        """Ask both threads to finish (each closes its own sockets)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def submit(self, command: Command) -> None:
        """Queue an action for the command thread (callable from any thread)."""
        self._commands.put(command)

    def run_feed(self) -> None:
        """The feed thread's body: runs until :meth:`stop`."""
        try:
            subscriber = Subscriber.from_home(self.home, self.identity)
            client = Client.from_home(self.home, self.identity)
        except (ConfigError, KeyFileError, OSError) as exc:
            self._post(LinkFailed(str(exc)))
            return
        try:
            _Feed(self, subscriber, client).run()
        finally:
            subscriber.close()
            client.close()

    def run_commands(self) -> None:
        """The command thread's body: runs queued actions until :meth:`stop`."""
        client: Client | None = None
        try:
            while not self._stop.is_set():
                try:
                    command = self._commands.get(timeout=COMMAND_POLL_S)
                except queue.Empty:
                    continue
                client = client or self._command_client(command)
                if client is not None:
                    self._carry_out(client, command)
        finally:
            if client is not None:
                client.close()

    def _command_client(self, command: Command) -> Client | None:
        try:
            return Client.from_home(
                self.home, self.identity, timeout_s=COMMAND_TIMEOUT_S
            )
        except (ConfigError, KeyFileError, OSError) as exc:
            self._refused(command, "unreachable", str(exc))
            return None

    def _carry_out(self, client: Client, command: Command) -> None:
        logger.info("action %s: %s", command.action, command.summary)
        try:
            result = client.call(command.op, command.args)
        except KeyturnError as exc:
            self._refused(command, exc.code, exc.message)
            return
        self._post(ActionSucceeded(command.action, command.summary, result))

    def _refused(self, command: Command, code: str, reason: str) -> None:
        logger.info("action %s refused: %s %s", command.action, code, reason)
        self._post(ActionRefused(command.action, command.summary, code, reason))

    def post(self, message: Message) -> None:
        """Deliver a message to the app, unless the link is stopping."""
        if not self._stop.is_set():
            self._post(message)

    def now(self) -> float:
        """Wall-clock time from the link's clock."""
        return self._clock()


class _Feed:
    """The feed thread's state: one subscriber, one client, one sequencer."""

    def __init__(self, link: DaemonLink, subscriber: Subscriber, client: Client):
        self.link = link
        self.subscriber = subscriber
        self.client = client
        self.sequencer = Sequencer()
        self.connected = False
        self.reported_lost = False
        self.identity_known = False
        self.boot_id = ""
        self.last_heard = 0.0
        self.last_heard_wall = 0.0
        self.next_try = 0.0
        self.heard_since_try = False
        self.last_problem = ""
        """The last refusal reported, so a repeated one is not posted again."""

    def run(self) -> None:
        while not self.link.stopping:
            try:
                self._step()
            except Exception:
                # Whatever the daemon sends, the console keeps running: report,
                # forget the position, and start again from a snapshot.
                logger.exception("feed failed; resynchronising")
                self.link.post(LinkFailed("the event feed failed; resynchronising"))
                self.sequencer.reset()
                time.sleep(RETRY_S)

    def _step(self) -> None:
        if not self.sequencer.synced and self._due():
            self._resync()
        self._read()
        self._check_alive()

    def _due(self) -> bool:
        return self.heard_since_try or time.monotonic() >= self.next_try

    def _resync(self) -> None:
        self.heard_since_try = False
        self.next_try = time.monotonic() + RETRY_S
        snapshot = self._ask_snapshot()
        if snapshot is None:
            return
        boot_id = str(snapshot.get("boot_id") or "")
        held, again = self.sequencer.on_snapshot(int(snapshot.get("seq") or 0), boot_id)
        self.link.post(SnapshotTaken(PreparedSnapshot.build(snapshot)))
        if held:
            self.link.post(EventsArrived(parse_records(held)))
        if again:
            self.next_try = 0.0
        restarted = bool(self.boot_id) and boot_id != self.boot_id
        self.boot_id = boot_id
        self._heard()
        if not self.connected:
            self.connected = True
            self.reported_lost = False
            self.last_problem = ""
            self.link.post(DaemonConnected(self.link.now(), restarted))

    def _ask_snapshot(self) -> dict[str, Any] | None:
        """Ask for a snapshot; briefly when the daemon has not been heard lately.

        A daemon that publishes heartbeats is alive, and a large snapshot may
        take it a while to send. Without a heartbeat the call is a probe: it
        must not block the feed for long, or a daemon that comes back would
        be noticed late.
        """
        timeout_s = SNAPSHOT_TIMEOUT_S if self.heard_recently() else PROBE_TIMEOUT_S
        try:
            if not self.identity_known:
                self._ask_status(timeout_s)
            return self.client.call("snapshot", timeout_s=timeout_s)
        except Unreachable as exc:
            self._unanswered(exc.message)
        except KeyturnError as exc:
            problem = f"{exc.code}: {exc.message}"
            if problem != self.last_problem:
                self.last_problem = problem
                self.link.post(LinkFailed(problem))
            self._unanswered(exc.message)
        return None

    def _ask_status(self, timeout_s: float) -> None:
        status = self.client.call("status", timeout_s=timeout_s)
        self.identity_known = True
        self.link.post(
            IdentityKnown(
                identity=str(status.get("identity") or self.link.identity),
                role=str(status.get("role") or ""),
                vendor=str(status.get("vendor") or ""),
            )
        )

    def _unanswered(self, reason: str) -> None:
        logger.debug("snapshot failed: %s", reason)
        if not self.connected and not self.reported_lost:
            self.reported_lost = True
            self.link.post(DaemonLost(self.last_heard_wall, reason))

    def _read(self) -> None:
        if not self.subscriber.socket.poll(int(FEED_POLL_S * 1000)):
            return
        batch: list[dict[str, Any]] = []
        stopped = False
        deadline = time.monotonic() + BATCH_WINDOW_S
        while len(batch) < BATCH_MAX and time.monotonic() < deadline:
            record = self.subscriber.recv(timeout_s=0)
            if record is None:
                break
            stopped |= record.get("type") == "daemon.stopped"
            if not self._take(record, batch):
                break
        if batch:
            self.link.post(EventsArrived(parse_records(batch)))
        if stopped and self.connected:
            self._lose("the daemon stopped")

    def _take(self, record: dict[str, Any], batch: list[dict[str, Any]]) -> bool:
        """Judge one record; False when a snapshot is needed before reading on."""
        self._heard()
        if record.get("type") == "daemon.heartbeat":
            verdict = self.sequencer.on_heartbeat(record)
            self.link.post(
                HeartbeatSeen(
                    seq=int(record.get("seq") or 0),
                    boot_id=str(record.get("boot_id") or ""),
                    at=float(record.get("at") or 0.0),
                )
            )
        else:
            verdict = self.sequencer.on_record(record)
            if verdict is Verdict.APPLY:
                batch.append(record)
        return verdict is not Verdict.RESYNC

    def heard_recently(self) -> bool:
        """Whether the daemon was heard within :data:`LOST_AFTER_S`."""
        return time.monotonic() - self.last_heard <= LOST_AFTER_S

    def _heard(self) -> None:
        self.last_heard = time.monotonic()
        self.last_heard_wall = self.link.now()
        self.heard_since_try = True

    def _check_alive(self) -> None:
        silent_s = time.monotonic() - self.last_heard
        if self.connected and silent_s > LOST_AFTER_S:
            self._lose(f"no heartbeat for {silent_s:.1f}s")

    def _lose(self, reason: str) -> None:
        logger.info("daemon lost: %s", reason)
        self.connected = False
        self.reported_lost = True
        self.sequencer.reset()
        self.next_try = time.monotonic() + RETRY_S
        self.heard_since_try = False
        self.link.post(DaemonLost(self.last_heard_wall, reason))
