"""The daemon process: sockets, the main loop, recovery, and a clean stop.

One thread does everything that changes state, in turns: answer handshakes,
take a batch of requests, expire what is due, then commit the batch's records
with one fsync, and only then reply and publish. A snapshot is written by a
background thread from an immutable copy of the state.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import hashlib
import logging
import os
import signal
import socket
import sys
import time
from collections import ChainMap, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from keyturn.daemon.auth import API_DOMAIN, EVENTS_DOMAIN, HandshakeWatch, ZapHandler
from keyturn.daemon.core import SYSTEM, Core
from keyturn.daemon.handlers import HANDLERS, MUTATING_OPS, Context
from keyturn.daemon.journal import Journal, JournalDamaged
from keyturn.daemon.ledger import Ledger
from keyturn.daemon.provisioners import Runner
from keyturn.daemon.publisher import Publisher
from keyturn.daemon.snapshot import SnapshotData, SnapshotWriter, load_snapshot
from keyturn.shared.codec import decode, decode_record, encode
from keyturn.shared.config import Config, ConfigError, load_config
from keyturn.shared.errors import BadInput, InternalError, KeyturnError, Refused
from keyturn.shared.keys import (
    Home,
    KeyFileError,
    fingerprint,
    load_curve_secret,
    load_signing_keys,
    load_verify_keys,
)
from keyturn.shared.protocol import client_id_of, error_reply, ok_reply, parse_message

__all__ = ["Daemon", "StartupError"]

logger = logging.getLogger(__name__)

MAX_BATCH = 512
"""Requests taken from the socket in one turn before their records are committed."""
EXPIRY_BATCH = 1000
"""Expiries handled in one turn; a storm yields to requests between batches."""
MAX_MESSAGE_BYTES = 1024 * 1024
"""libzmq drops a connection that sends a larger message, before it is buffered."""
IDLE_WAKE_S = 1.0
"""The loop wakes at least this often (heartbeats, config changes)."""
DEDUPE_WINDOW_S = 600.0
"""A retried call with the same id is answered from memory for this long..."""
DEDUPE_MAX = 100_000
"""...or until this many newer calls pushed it out."""
SNAPSHOT_QUIET_S = 1.0
"""A snapshot starts only when no deadline falls within this long: it slows the loop."""
SWITCH_INTERVAL_S = 0.0005
"""How soon the snapshot thread must hand the interpreter back to the loop."""


class StartupError(Exception):
    """The daemon cannot start; the message names the problem."""


@dataclass
class _Remembered:
    fingerprint: bytes
    reply: bytes
    at: float


class Daemon:
    """One keyturn daemon on one state folder.

    Args:
        home: The state folder.
    """

    def __init__(self, home: Path) -> None:
        self.home = Home(home)
        self.stopping = False
        self._lock_fd: int | None = None
        self._replies: list[tuple[list[bytes], dict[str, Any]]] = []
        self._dedupe: OrderedDict[tuple[str, Any], _Remembered] = OrderedDict()
        self._config_stamp: tuple[int, int, int] | None = None
        self._next_snapshot = 0.0
        self._next_housekeeping = 0.0
        self.writer = SnapshotWriter(self.home.snapshot, self._sign_snapshot)
        self._ipc_paths: list[Path] = []
        self._keys_stamp = 0

    # Start.

    def start(self) -> None:
        """Lock the home, load everything, recover, bind, and be ready to serve.

        Raises:
            StartupError: naming what is wrong (config, keys, journal, another daemon).
        """
        self._lock()
        config = self._load_config()
        try:
            public, secret = load_curve_secret(self.home, "daemon")
            signing = load_signing_keys(self.home)
        except KeyFileError as exc:
            raise StartupError(f"key material: {exc}") from exc
        self._keys_stamp = self.home.signing.stat().st_mtime_ns
        journal = Journal(self.home.journal)
        gc.disable()  # replay makes millions of objects that all live on
        try:
            ledger, cut = self._recover(journal)
        finally:
            gc.enable()
        gc.collect()
        gc.freeze()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.core = Core(config, journal, ledger, signing)
        self.runner = Runner()
        self.core.runner = self.runner
        self._bind(public, secret)
        journal.open_for_append()
        self._after_recovery(cut)

    def _lock(self) -> None:
        if not self.home.root.is_dir():
            raise StartupError(
                f"{self.home.root} is not a keyturn home; "
                f"run `keyturn init --home {self.home.root}`"
            )
        fd = os.open(self.home.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(
                    f"another keyturn daemon is running on {self.home.root} (pid {holder})"
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _load_config(self) -> Config:
        try:
            config = load_config(self.home.config)
        except ConfigError as exc:
            raise StartupError(f"invalid configuration: {exc}") from exc
        self._config_stamp = self._stamp()
        return config

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            info = self.home.config.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _recover(self, journal: Journal) -> tuple[Ledger, tuple[int, str] | None]:
        ledger = Ledger()
        start = (0, journal.head, 0)
        try:
            snap = load_snapshot(self.home.snapshot, load_verify_keys(self.home))
        except ValueError as exc:
            logger.warning("snapshot unreadable, replaying the whole journal: %s", exc)
            snap = None
        if snap is not None:
            ledger.load(snap.grants, snap.requests, snap.lockdown, snap.seq)
            start = (snap.offset, snap.head, snap.seq)
        began = time.monotonic()
        # TODO(audit-at-start): records before the snapshot's offset are not read at
        # start; damage there is found only by `keyturn audit verify`. A background
        # check after start should raise an alarm instead.
        # TODO(audit-anchor): nothing outside this folder holds the chain head, so
        # cutting the journal's tail and deleting the snapshot goes unseen; signed
        # checkpoints should also be shipped to an external log.
        try:
            result = journal.read(*start)
        except JournalDamaged as exc:
            raise StartupError(
                f"journal {self.home.journal} is damaged: {exc}; run `keyturn audit verify`"
            ) from exc
        for record in result.records:
            ledger.apply(record)
        logger.info(
            "recovered seq %d: snapshot at %d, %d journal records replayed in %.3fs",
            ledger.seq,
            start[2],
            len(result.records),
            time.monotonic() - began,
        )
        if result.torn_bytes:
            logger.warning(
                "cut a torn last journal record (%d bytes: %s)",
                result.torn_bytes,
                result.torn_reason,
            )
            return ledger, (result.torn_bytes, result.torn_reason)
        return ledger, None

    def _bind(self, public: bytes, secret: bytes) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._curve = (public, secret)
        self.zap = ZapHandler(self._context, lambda: self.core.config.by_key)
        self.router = self._open("api", zmq.ROUTER, API_DOMAIN)
        self.pub = self._open("events", zmq.PUB, EVENTS_DOMAIN)
        self.publisher = Publisher(self.pub, self.core.boot_id)
        self.handshakes = HandshakeWatch({"api": self.router, "events": self.pub})

    def _open(self, which: str, kind: int, domain: bytes) -> zmq.Socket[bytes]:
        """A CurveZMQ server socket, bound (the ZAP handler is bound before it)."""
        sock: zmq.Socket[bytes] = self._context.socket(kind)
        sock.linger = 0
        sock.zap_domain = domain
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = self._curve
        # Options must be set before bind: the listener copies them then.
        if kind == zmq.PUB:
            sock.sndhwm = 100_000
        else:
            sock.maxmsgsize = MAX_MESSAGE_BYTES
            sock.rcvhwm = 10_000
        endpoint = self.core.config.endpoint(which, self.home.root)
        if endpoint.startswith("ipc://"):
            path = Path(endpoint[len("ipc://") :])
            if len(str(path)) > 100:
                raise StartupError(
                    f"{endpoint}: ipc paths are limited to about 100 characters"
                )
            if path not in self._ipc_paths:
                self._ipc_paths.append(path)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise StartupError(
                f"cannot bind {which} endpoint {endpoint}: {exc}"
            ) from exc
        if endpoint.startswith("ipc://"):
            os.chmod(endpoint[len("ipc://") :], 0o600)
        return sock

    def _rebind_events(self) -> None:
        """Drop every subscriber: each reconnects and is authorised afresh.

        A PUB socket cannot close one peer's connection, so when a key leaves
        the configuration the event stream is bound anew; subscribers notice
        the gap in ``seq`` and take a snapshot.
        """
        old_monitor = self.handshakes.remove("events", self.pub)
        self._poller.unregister(old_monitor)
        old_monitor.close(linger=0)
        self.pub.close(linger=0)
        self.pub = self._open("events", zmq.PUB, EVENTS_DOMAIN)
        self.publisher.socket = self.pub
        self._poller.register(self.handshakes.add("events", self.pub), zmq.POLLIN)
        logger.info("event stream bound anew: every subscriber is authorised again")

    def _after_recovery(self, cut: tuple[int, str] | None) -> None:
        core = self.core
        if cut is not None:
            core.emit("journal.cut", SYSTEM, bytes_cut=cut[0], reason=cut[1])
        missed = core.expire_missed()
        core.schedule_all()
        core.emit(
            "daemon.started",
            SYSTEM,
            boot_id=core.boot_id,
            pid=os.getpid(),
            expired_while_down=missed,
        )
        self._commit()
        logger.info(
            "serving: %d live grants, %d pending requests, lockdown %s, %d expired while down",
            len(core.ledger.grants),
            len(core.ledger.requests),
            "ENGAGED" if core.ledger.lockdown["engaged"] else "off",
            missed,
        )

    # The loop.

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda *_: self._reload_config(force=True))
        poller = self._poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.zap.socket, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        poller.register(self.runner.wake, zmq.POLLIN)
        for monitor in self.handshakes.monitors:
            poller.register(monitor, zmq.POLLIN)
        try:
            while not self.stopping:
                ready = dict(poller.poll(self._timeout_ms()))
                self._turn(ready, wake_r)
        finally:
            signal.set_wakeup_fd(-1)
            wake_r.close()
            wake_w.close()
            self.stop()

    def _turn(self, ready: dict[Any, int], wake_r: socket.socket) -> None:
        if wake_r in ready or wake_r.fileno() in ready:
            try:
                wake_r.recv(512)
            except BlockingIOError:
                pass
        if self.zap.socket in ready:
            self.zap.handle_ready()
        for monitor in self.handshakes.monitors:
            if monitor in ready:
                self.handshakes.handle_ready(monitor, time.monotonic())
        if self.runner.wake in ready or self.runner.wake.fileno() in ready:
            for outcome in self.runner.outcomes():
                self.core.on_outcome(outcome)
        if self.router in ready:
            self._reload_config()
            self._serve_batch()
        self.core.expire_due(EXPIRY_BATCH)
        if self.core.checkpoint_due():
            self.core.checkpoint()
        self._commit()
        self._periodic()

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        self.stopping = True

    def _timeout_ms(self) -> int:
        wait = min(IDLE_WAKE_S, self.publisher.heartbeat_in())
        due = self.core.scheduler.next_in()
        if due is not None:
            wait = min(wait, due)
        return max(0, int(wait * 1000 + 0.999))

    def _serve_batch(self) -> None:
        for _ in range(MAX_BATCH):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._serve(frames)

    def _serve(self, frames: list[zmq.Frame]) -> None:
        envelope, body = _split(frames)
        if body is None:
            self._reply(
                envelope,
                error_reply(None, BadInput("bad_frame", "expected one message frame")),
            )
            return
        try:
            user = frames[-1].get("User-Id")
        except zmq.ZMQError:
            user = ""
        self._reply(envelope, self._dispatch(str(user), body))

    def _dispatch(self, user: str, body: bytes) -> dict[str, Any]:
        raw: Any = None
        op = "?"
        try:
            raw = decode(body)
            message = parse_message(raw)
            op = message.op
            identity = self.core.config.by_key.get(user)
            if identity is None:
                logger.warning(
                    "refused a message from a key no longer configured (%s)",
                    fingerprint(user),
                )
                raise Refused(
                    "unauthenticated", "this key is not (or no longer) configured"
                )
            key = (user, message.id)
            if op in MUTATING_OPS:
                cached = self._remembered(key, op, body, raw)
                if cached is not None:
                    return cached
            result = self._call(identity, op, message)
            reply = ok_reply(message.id, result)
        except KeyturnError as exc:
            reply = error_reply(client_id_of(raw), exc)
        except Exception:
            logger.exception("op %s failed inside the daemon", op)
            reply = error_reply(client_id_of(raw), InternalError())
        if op in MUTATING_OPS and isinstance(raw, dict):
            self._remember((user, raw.get("id")), op, raw, reply)
        return reply

    def _call(self, identity: Any, op: str, message: Any) -> dict[str, Any]:
        context = Context(self.core, identity)
        try:
            return HANDLERS[op](context, message.args)
        except Refused as exc:
            if exc.code == "forbidden":
                logger.warning("forbidden: %s asked to %s", identity.name, op)
                self.core.emit(
                    "access.refused", identity.name, op=op, reason=exc.message
                )
            raise

    # Retries with the same id.

    @staticmethod
    def _fingerprint(op: str, raw: dict[str, Any]) -> bytes:
        return hashlib.sha256(encode([op, raw.get("args", {})])).digest()

    def _remembered(
        self, key: tuple[str, Any], op: str, body: bytes, raw: dict[str, Any]
    ) -> dict[str, Any] | None:
        entry = self._dedupe.get(key)
        if entry is None or time.monotonic() - entry.at > DEDUPE_WINDOW_S:
            return None
        if entry.fingerprint != self._fingerprint(op, raw):
            raise Refused(
                "duplicate_id",
                f"request id {key[1]!r} was already used for another call",
            )
        reply: dict[str, Any] = decode_record(entry.reply)
        return reply

    # TODO(dedupe-memory): each remembered reply is kept encoded (about 1 KB with its
    # token), about 90 MB at 100,000 calls; keeping ids and rebuilding the reply
    # from the ledger would cut that.
    def _remember(
        self, key: tuple[str, Any], op: str, raw: dict[str, Any], reply: dict[str, Any]
    ) -> None:
        if key[1] is None or key in self._dedupe:
            return
        self._dedupe[key] = _Remembered(
            self._fingerprint(op, raw), encode(reply), time.monotonic()
        )
        while len(self._dedupe) > DEDUPE_MAX:
            self._dedupe.popitem(last=False)

    # After each turn.

    def _reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        self._replies.append((envelope, reply))

    def _commit(self) -> None:
        """Make the turn's records durable, then answer and publish: never the other way round."""
        core = self.core
        try:
            core.journal.commit()
        except OSError as exc:
            logger.critical(
                "journal write failed (%s); stopping: nothing unrecorded may be acknowledged",
                exc,
            )
            raise SystemExit(70) from exc
        for envelope, reply in self._replies:
            try:
                self.router.send_multipart([*envelope, encode(reply)], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                logger.debug("reply dropped (%s)", exc)
        self._replies.clear()
        for topic, payload in core.outbox:
            self.publisher.publish(topic, payload)
        core.outbox.clear()

    def _periodic(self) -> None:
        self.publisher.heartbeat(self.core.ledger.seq)
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + IDLE_WAKE_S
            self._reload_config()
            self._dedupe_expire()
            self.core.ledger.forget_old()
            # Grants live for minutes; a full collection that walks 100,000 of
            # them stalls the loop for a quarter of a second. Frozen objects
            # are still freed by reference counting, and the state holds no
            # cycles.
            gc.freeze()
        due = self.core.scheduler.next_in()
        if (
            (due is None or due > SNAPSHOT_QUIET_S)
            and now >= self._next_snapshot
            and self.writer.written_seq < self.core.ledger.seq
        ):
            # A snapshot of a large state takes a while to write; spacing writes
            # by ten times that keeps the writer under a tenth of a core.
            interval = self.core.config.daemon.snapshot_interval_s
            self._next_snapshot = now + max(interval, 10 * self.writer.last_duration_s)
            self.writer.start(self._snapshot())

    def _dedupe_expire(self) -> None:
        cutoff = time.monotonic() - DEDUPE_WINDOW_S
        while self._dedupe and next(iter(self._dedupe.values())).at < cutoff:
            self._dedupe.popitem(last=False)

    def _sign_snapshot(self, message: bytes) -> tuple[str, bytes]:
        signer = self.core.signer
        return signer.key_id, signer.private.sign(message)

    def _snapshot(self) -> SnapshotData:
        # Copies of the dicts (the objects are immutable) are all the loop pays;
        # the writer thread merges and serialises them.
        ledger = self.core.ledger
        grants = ChainMap(ledger.grants.copy(), ledger.ended_grants.copy())
        requests = ChainMap(ledger.requests.copy(), ledger.decided_requests.copy())
        journal = self.core.journal
        return SnapshotData(
            ledger.seq,
            journal.offset,
            journal.head,
            dict(ledger.lockdown),
            grants,
            requests,
        )

    def _reload_keys(self) -> None:
        try:
            stamp = self.home.signing.stat().st_mtime_ns
        except OSError:
            return
        if stamp == self._keys_stamp:
            return
        self._keys_stamp = stamp
        try:
            keys = load_signing_keys(self.home)
        except KeyFileError as exc:
            logger.error(
                "signing keys changed but cannot be loaded; keeping the previous ones: %s",
                exc,
            )
            return
        known = {key.key_id for key in self.core.signing_keys}
        if not known <= {key.key_id for key in keys}:
            logger.error(
                "a signing key was removed from %s; keeping the loaded keys so that "
                "tokens already issued stay verifiable",
                self.home.signing,
            )
            return
        if keys[-1].key_id == self.core.signer.key_id:
            return
        previous = self.core.signer.key_id
        self.core.signing_keys = keys
        self.core.emit(
            "keys.rotated", SYSTEM, kid=keys[-1].key_id, previous_kid=previous
        )
        self.core.checkpoint()
        logger.info("signing key rotated: new tokens are signed by %s", keys[-1].key_id)

    def _reload_config(self, force: bool = False) -> None:
        self._reload_keys()
        stamp = self._stamp()
        if stamp == self._config_stamp and not force:
            return
        self._config_stamp = stamp
        try:
            config = load_config(self.home.config)
        except ConfigError as exc:
            logger.error(
                "configuration changed but is invalid; keeping the previous one: %s",
                exc,
            )
            return
        removed = set(self.core.config.by_key) - set(config.by_key)
        self.core.config = config
        if removed and hasattr(self, "_poller"):
            self._rebind_events()
        self.core.emit(
            "config.reloaded",
            SYSTEM,
            identities=len(config.identities),
            vendors=len(config.vendors),
            rules=len(config.rules),
        )
        logger.info(
            "configuration reloaded: %d identities, %d vendors",
            len(config.identities),
            len(config.vendors),
        )

    # Stop.

    def stop(self) -> None:
        """Record the stop, sign a checkpoint, write a final snapshot, close everything."""
        core = self.core
        core.emit("daemon.stopped", SYSTEM, boot_id=core.boot_id)
        core.checkpoint()
        self._commit()
        self.writer.write_now(self._snapshot())
        core.journal.close()
        self.runner.close()
        self.router.disable_monitor()
        self.pub.disable_monitor()
        self.handshakes.close()
        self.router.close(linger=0)
        self.pub.close(linger=0)
        self.zap.close()
        for path in self._ipc_paths:
            path.unlink(missing_ok=True)
        logger.info("stopped at seq %d", core.ledger.seq)


def _split(frames: list[zmq.Frame]) -> tuple[list[bytes], bytes | None]:
    """Split ROUTER frames into the reply envelope and the one message frame."""
    routing = frames[0].bytes
    rest = frames[1:]
    if len(rest) >= 2 and len(rest[0]) == 0:
        envelope = [routing, b""]
        rest = rest[1:]
    else:
        envelope = [routing]
    if len(rest) != 1:
        return envelope, None
    return envelope, rest[0].bytes
