"""Subscribers in their own processes that timestamp every expiry event.

Lateness is the event's arrival at a subscriber minus the deadline it is
for: for keyturn the ``grant.expired`` record's ``grant.expires_at``, for
Redis the key's absolute deadline, which the key's name carries. A
subscriber stamps each arrival with ``time.time()`` as it reads it, keeps
the raw bytes, and decodes only after the last one, so it keeps up with a
storm. It is ready once its subscription is known to be in place: keyturn's
first heartbeat, or Redis's subscribe confirmation.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import msgpack
import zmq

__all__ = ["Collected", "EventCollector", "REDIS_EXPIRED_CHANNEL", "redis_key"]

POLL_S = 0.1
"""How often a waiting subscriber checks its deadline."""
JOIN_MARGIN_S = 60.0
"""How long after its own deadline a subscriber may take to write its file."""
REDIS_EXPIRED_CHANNEL = "__keyevent@0__:expired"
HEARTBEAT = b"daemon.heartbeat"
EXPIRED = b"grant.expired"


def redis_key(deadline_ms: int, index: int) -> str:
    """A Redis key that carries its own deadline (Unix ms)."""
    return f"d{deadline_ms}:{index}"


def _redis_deadline_s(key: bytes) -> float:
    return int(key[1:].split(b":", 1)[0]) / 1000.0


@dataclass
class Collected:
    """What a subscriber saw, in arrival order (Unix seconds)."""

    arrivals: list[float] = field(default_factory=list)
    deadlines: list[float] = field(default_factory=list)
    noticed: list[float] = field(default_factory=list)
    """When the daemon noticed each deadline (keyturn only)."""
    ready: bool = False

    def lateness_ms(self) -> list[float]:
        """Arrival minus deadline, per event."""
        return [
            (a - d) * 1000.0 for a, d in zip(self.arrivals, self.deadlines, strict=True)
        ]

    def noticed_ms(self) -> list[float]:
        """The daemon's noticing minus deadline, per event (keyturn only)."""
        return [
            (n - d) * 1000.0 for n, d in zip(self.noticed, self.deadlines, strict=True)
        ]


def _keyturn_wait_ready(sock: zmq.Socket[Any], end_by: float) -> bool:
    while time.time() < end_by:
        if sock.poll(int(POLL_S * 1000)) and sock.recv_multipart()[0] == HEARTBEAT:
            return True
    return False


def _keyturn_drain(
    sock: zmq.Socket[Any], arrivals: list[float], raw: list[bytes]
) -> None:
    while True:
        try:
            topic, payload = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        if topic == EXPIRED:
            arrivals.append(time.time())
            raw.append(payload)


def _keyturn_collect(
    home: str, expected: int, end_by: float, out: str, ready: Event
) -> None:
    """Child process: collect ``grant.expired`` events from a daemon."""
    from keyturn.shared.client import Subscriber

    topics = (EXPIRED.decode(), HEARTBEAT.decode())
    with Subscriber.from_home(home, "admin", topics) as subscriber:
        sock = subscriber.socket
        if _keyturn_wait_ready(sock, end_by):
            ready.set()
        arrivals: list[float] = []
        raw: list[bytes] = []
        while len(raw) < expected and time.time() < end_by:
            if sock.poll(int(POLL_S * 1000)):
                _keyturn_drain(sock, arrivals, raw)
    records = [msgpack.unpackb(payload, raw=False) for payload in raw]
    result = {
        "arrivals": arrivals,
        "deadlines": [record["grant"]["expires_at"] for record in records],
        "noticed": [record.get("noticed_at", 0.0) for record in records],
        "ready": ready.is_set(),
    }
    Path(out).write_bytes(msgpack.packb(result))


def _redis_collect(
    socket_path: str, expected: int, end_by: float, out: str, ready: Event
) -> None:
    """Child process: collect expired-key notifications from a Redis server."""
    import redis

    client = redis.Redis(unix_socket_path=socket_path)
    pubsub: Any = client.pubsub()
    pubsub.subscribe(REDIS_EXPIRED_CHANNEL)
    if pubsub.parse_response(block=False, timeout=10.0) is not None:
        ready.set()
    arrivals: list[float] = []
    keys: list[bytes] = []
    while len(keys) < expected and time.time() < end_by:
        message = pubsub.parse_response(block=False, timeout=POLL_S)
        if message is not None and message[0] == b"message":
            arrivals.append(time.time())
            keys.append(message[2])
    pubsub.close()
    client.close()
    result = {
        "arrivals": arrivals,
        "deadlines": [_redis_deadline_s(key) for key in keys],
        "noticed": [],
        "ready": ready.is_set(),
    }
    Path(out).write_bytes(msgpack.packb(result))


class EventCollector:
    """A subscriber process: ``keyturn`` (a home) or ``redis`` (a Unix socket).

    Args:
        kind: ``keyturn`` or ``redis``.
        target: The home folder, or the Redis socket path.
        expected: Events to wait for.
        end_by: Unix time at which it stops waiting regardless.
        out: Where the child writes what it saw.
    """

    def __init__(
        self, kind: str, target: Path, expected: int, end_by: float, out: Path
    ) -> None:
        self.out = out
        self.end_by = end_by
        spawn = multiprocessing.get_context("spawn")
        self._ready = spawn.Event()
        target_fn = _keyturn_collect if kind == "keyturn" else _redis_collect
        args = (str(target), expected, end_by, str(out), self._ready)
        self._proc: BaseProcess = spawn.Process(
            target=target_fn, args=args, daemon=True
        )
        self._proc.start()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the subscription is in place."""
        return self._ready.wait(timeout_s)

    def result(self) -> Collected:
        """Wait for the subscriber to finish and read what it saw."""
        self._proc.join(timeout=max(0.0, self.end_by - time.time()) + JOIN_MARGIN_S)
        self.close()
        if not self.out.exists():
            raise RuntimeError("the subscriber process wrote no results")
        data = msgpack.unpackb(self.out.read_bytes())
        return Collected(
            data["arrivals"], data["deadlines"], data["noticed"], data["ready"]
        )

    def close(self) -> None:
        """Make sure the subscriber process is gone."""
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
