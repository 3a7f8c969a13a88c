"""The event publisher: the only writer of the PUB socket.

Each event goes out as two frames, the topic (the record's type, so
subscribers filter by prefix) and the msgpack record exactly as journaled.
Sending never blocks: a subscriber that falls behind its high-water mark
loses events, notices the gap in ``seq``, and asks for a snapshot.
"""

from __future__ import annotations

import logging
import time

import zmq

from keyturn.shared.codec import encode

__all__ = ["HEARTBEAT_INTERVAL_S", "HEARTBEAT_TOPIC", "Publisher"]

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0
"""A heartbeat goes out this often."""
HEARTBEAT_TOPIC = "daemon.heartbeat"
PUB_SNDHWM = 100_000
"""Events queued per subscriber before that subscriber starts losing them."""


class Publisher:
    """Publishes journaled records and heartbeats.

    Args:
        socket: A bound PUB socket.
        boot_id: This run's id, carried by every heartbeat.
    """

    def __init__(self, socket: zmq.Socket[bytes], boot_id: str) -> None:
        self.socket = socket
        self.boot_id = boot_id
        self.dropped = 0
        self._next_heartbeat = 0.0

    def publish(self, topic: str, payload: bytes) -> None:
        """Send one event without ever waiting."""
        try:
            self.socket.send_multipart([topic.encode(), payload], zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1

    def heartbeat_in(self) -> float:
        """Seconds until the next heartbeat is due."""
        return self._next_heartbeat - time.monotonic()

    def heartbeat(self, seq: int) -> None:
        """Send a heartbeat if one is due."""
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + HEARTBEAT_INTERVAL_S
        beat = {
            "type": HEARTBEAT_TOPIC,
            "seq": seq,
            "boot_id": self.boot_id,
            "at": time.time(),
        }
        self.publish(HEARTBEAT_TOPIC, encode(beat))
