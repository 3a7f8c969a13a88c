"""Raw DEALER sockets on the daemon's API: one at a time, or many pipelining.

These speak the documented wire protocol directly (one msgpack map per
frame, CurveZMQ with the identity's keys from ``connect_info``), so the
figures hold the daemon's cost and libzmq's, not a client library's.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench.homes import BENCH_SCOPE, BENCH_VENDOR
from keyturn.shared.client import connect_info
from keyturn.shared.codec import encode
from keyturn.shared.protocol import PROTOCOL_VERSION

__all__ = [
    "Endpoint",
    "LoadResult",
    "Pipeliner",
    "dealer",
    "request_frame",
    "round_trips",
]

REPLY_TIMEOUT_S = 10.0
"""A reply that takes longer than this means the daemon is stuck: give up."""
POLL_MS = 50
"""Poll granularity of the pipelining loop."""

TtlFor = Callable[[int], int]
"""Maps a request's index to the ttl (whole seconds) it asks for, at send time."""


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect."""

    api: str
    events: str
    server_key: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_home(cls, home: Path, identity: str) -> Endpoint:
        """The endpoints and keys of an identity in a home."""
        return cls(*connect_info(home, identity))


def dealer(
    endpoint: Endpoint, context: zmq.Context[Any] | None = None
) -> zmq.Socket[Any]:
    """A connected DEALER with CurveZMQ on."""
    sock: zmq.Socket[Any] = (context or zmq.Context.instance()).socket(zmq.DEALER)
    sock.curve_serverkey = endpoint.server_key
    sock.curve_publickey = endpoint.public
    sock.curve_secretkey = endpoint.secret
    sock.linger = 0
    sock.sndhwm = 0
    sock.rcvhwm = 0
    sock.connect(endpoint.api)
    return sock


def request_frame(message_id: str, ttl_s: int) -> bytes:
    """An auto-approved ``request`` for the benchmark vendor."""
    args = {
        "vendor": BENCH_VENDOR,
        "scopes": [BENCH_SCOPE],
        "ttl": ttl_s,
        "reason": "benchmark",
    }
    frame: bytes = encode(
        {"v": PROTOCOL_VERSION, "id": message_id, "op": "request", "args": args}
    )
    return frame


def _check_reply(frame: bytes) -> dict[str, Any]:
    reply: dict[str, Any] = msgpack.unpackb(frame, raw=False)
    if not reply.get("ok"):
        raise RuntimeError(f"daemon refused a benchmark request: {reply.get('error')}")
    return reply


def round_trips(sock: zmq.Socket[Any], count: int, ttl_s: int) -> list[float]:
    """Sequential requests, each waited for; return each round trip in ms."""
    prefix = secrets.token_hex(4)
    samples: list[float] = []
    for index in range(count):
        frame = request_frame(f"rt-{prefix}-{index}", ttl_s)
        began = time.perf_counter()
        sock.send_multipart([b"", frame])
        if not sock.poll(int(REPLY_TIMEOUT_S * 1000)):
            raise RuntimeError(f"no reply within {REPLY_TIMEOUT_S}s")
        reply = sock.recv_multipart()
        samples.append((time.perf_counter() - began) * 1000.0)
        _check_reply(reply[-1])
    return samples


@dataclass
class LoadResult:
    """What a pipelined load did."""

    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    expires_at: list[float] = field(default_factory=list)
    """Each granted ``expires_at``, in reply order."""

    @property
    def rate(self) -> float:
        """Grants per second."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class _Lane:
    """One DEALER and its requests in flight (id -> send time)."""

    sock: zmq.Socket[Any]
    in_flight: dict[str, float] = field(default_factory=dict)


class Pipeliner:
    """Many DEALER sockets, each keeping a window of requests in flight.

    Args:
        endpoint: The daemon and the identity to connect as.
        clients: Sockets (each its own CurveZMQ connection).
        window: Requests each socket keeps in flight.
    """

    def __init__(self, endpoint: Endpoint, clients: int, window: int) -> None:
        self.window = window
        self.lanes = [_Lane(dealer(endpoint)) for _ in range(clients)]
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count()
        self._by_socket = {lane.sock: lane for lane in self.lanes}
        self._poller = zmq.Poller()
        for lane in self.lanes:
            self._poller.register(lane.sock, zmq.POLLIN)

    def close(self) -> None:
        """Close every socket."""
        for lane in self.lanes:
            lane.sock.close(linger=0)

    def run(self, count: int, ttl_for: TtlFor, time_limit_s: float) -> LoadResult:
        """Make ``count`` grants (or stop at the time limit); wait for every reply."""
        result = LoadResult()
        order = itertools.count()
        began = time.perf_counter()
        stop_at = began + time_limit_s
        for lane in self.lanes:
            self._fill(lane, result, order, count, ttl_for)
        while self._busy() and time.perf_counter() < stop_at + REPLY_TIMEOUT_S:
            if time.perf_counter() >= stop_at:
                count = result.sent
            for sock, _ in self._poller.poll(POLL_MS):
                lane = self._by_socket[sock]
                self._drain(lane, result)
                self._fill(lane, result, order, count, ttl_for)
        result.elapsed_s = time.perf_counter() - began
        return result

    def _busy(self) -> bool:
        return any(lane.in_flight for lane in self.lanes)

    def _fill(
        self,
        lane: _Lane,
        result: LoadResult,
        order: itertools.count[int],
        count: int,
        ttl_for: TtlFor,
    ) -> None:
        while len(lane.in_flight) < self.window and result.sent < count:
            index = next(order)
            message_id = f"p-{self._prefix}-{next(self._ids)}"
            frame = request_frame(message_id, ttl_for(index))
            lane.in_flight[message_id] = time.perf_counter()
            lane.sock.send_multipart([b"", frame])
            result.sent += 1

    def _drain(self, lane: _Lane, result: LoadResult) -> None:
        while True:
            try:
                frames = lane.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.perf_counter()
            reply: dict[str, Any] = msgpack.unpackb(frames[-1], raw=False)
            sent_at = lane.in_flight.pop(str(reply.get("id")), None)
            if sent_at is not None:
                result.latencies_ms.append((now - sent_at) * 1000.0)
            self._tally(reply, result)

    @staticmethod
    def _tally(reply: dict[str, Any], result: LoadResult) -> None:
        if reply.get("ok"):
            result.ok += 1
            result.expires_at.append(reply["result"]["grant"]["expires_at"])
            return
        error = reply.get("error") or {}
        result.errors[str(error.get("code", "?"))] += 1
