"""The floor under any durable request: a bare CurveZMQ echo, and append + fsync.

The echo is a synchronous pyzmq ROUTER in its own process on an ``ipc://``
socket in the same temporary folder, with CurveZMQ on, answering a DEALER
with the frames it got. The fsync loop appends one grant's worth of journal
bytes to a file beside the daemon's journal and fsyncs it.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import zmq

from bench.plan import Plan
from bench.stats import Summary, combine, summarize
from bench.wire import Endpoint, dealer, request_frame

__all__ = ["measure_floor"]

GRANT_RECORD_BYTES = 800
"""Journal bytes one auto-approved grant adds (``request.approved`` + ``grant.active``)."""
ECHO_START_TIMEOUT_S = 20.0
ECHO_POLL_MS = 100
REPLY_TIMEOUT_MS = 5000


def _echo_serve(
    endpoint: str, public: bytes, secret: bytes, ready: Event, stop: Event
) -> None:
    """The echo server's process: answer every message with itself until told to stop."""
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.ROUTER)
    sock.curve_server = True
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.linger = 0
    sock.bind(endpoint)
    ready.set()
    while not stop.is_set():
        if sock.poll(ECHO_POLL_MS):
            sock.send_multipart(sock.recv_multipart())
    sock.close()


def _echo_round_trips(endpoint: Endpoint, count: int) -> list[float]:
    sock = dealer(endpoint)
    try:
        samples: list[float] = []
        frame = request_frame("echo", 3600)
        for _ in range(count + 1):
            began = time.perf_counter()
            sock.send_multipart([b"", frame])
            if not sock.poll(REPLY_TIMEOUT_MS):
                raise RuntimeError("the echo server did not answer")
            sock.recv_multipart()
            samples.append((time.perf_counter() - began) * 1000.0)
        return samples[1:]  # the first pays for the CurveZMQ handshake
    finally:
        sock.close(linger=0)


def measure_echo(folder: Path, plan: Plan) -> dict[str, Any]:
    """Round trips to a bare CurveZMQ ROUTER echo, in ms."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    address = f"ipc://{folder}/echo.sock"
    spawn = multiprocessing.get_context("spawn")
    ready, stop = spawn.Event(), spawn.Event()
    args = (address, server_public, server_secret, ready, stop)
    server = spawn.Process(target=_echo_serve, args=args, daemon=True)
    server.start()
    try:
        if not ready.wait(ECHO_START_TIMEOUT_S):
            raise RuntimeError("the echo server did not start")
        endpoint = Endpoint(address, "", server_public, client_public, client_secret)
        runs = [
            summarize(_echo_round_trips(endpoint, plan.floor_samples))
            for _ in range(plan.repeats)
        ]
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
            server.join()
    return combine(runs)


def _fsync_samples(path: Path, count: int) -> Summary:
    record = os.urandom(GRANT_RECORD_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        samples = []
        for _ in range(count):
            began = time.perf_counter()
            os.write(fd, record)
            os.fsync(fd)
            samples.append((time.perf_counter() - began) * 1000.0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return summarize(samples)


def measure_fsync(folder: Path, plan: Plan) -> dict[str, Any]:
    """Append one grant's journal bytes and fsync, in ms, on the journal's disk."""
    runs = [
        _fsync_samples(folder / "fsync.bin", plan.floor_samples)
        for _ in range(plan.repeats)
    ]
    result = combine(runs)
    result["record_bytes"] = GRANT_RECORD_BYTES
    return result


def measure_floor(folder: Path, plan: Plan) -> dict[str, Any]:
    """Echo and fsync, and their sum as the floor of a durable round trip."""
    echo = measure_echo(folder, plan)
    fsync = measure_fsync(folder, plan)
    floor = {key: echo[key] + fsync[key] for key in ("p50", "p99")}
    return {"echo_ms": echo, "fsync_ms": fsync, "floor_ms": floor}
