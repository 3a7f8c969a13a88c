"""The same deadlines and load against Redis, for comparison.

The benchmark starts its own ``redis-server`` on a Unix socket in its
temporary folder (no TCP port, no persistence, keyspace notifications for
expired keys) and stops it afterwards. Each deadline becomes a key set with
``SET key v PXAT ms`` (the absolute form of ``PX``, so that a key ends at the
very instant a grant did; the key's name carries its deadline), and a
subscriber to ``__keyevent@0__:expired`` stamps each notification as it
arrives. Redis expires keys when they are touched or in its active expiry
cycle (``hz`` times a second), so this lateness is what its users see.
Throughput is ``SET key v PX ms`` from as many clients as keyturn gets,
each with its own connection and the same number of commands in flight.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.events import EventCollector, redis_key
from bench.expiry import RANDOM_SEED, summarize_lateness
from bench.plan import Plan
from bench.stats import Summary, combine, median_of

__all__ = ["RedisServer", "measure_redis", "redis_missing"]

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 15.0
LOAD_BATCH = 1000
"""Commands per pipeline while setting deadline keys."""
LOAD_RATE_GUESS_PER_S = 20_000
"""A low guess of how fast keys are set, for the lead time."""
THROUGHPUT_PX_MS = 3_600_000
"""Throughput keys live an hour: none expires during the run."""


def redis_missing() -> str | None:
    """Why the Redis comparison cannot run, or None when it can."""
    if shutil.which("redis-server") is None:
        return (
            "redis-server not found (apt-get update && apt-get install -y redis-server)"
        )
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is not installed (pip install redis)"
    return None


class RedisServer:
    """A private ``redis-server`` on a Unix socket, without persistence.

    Args:
        folder: Holds its socket, working folder and log.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket_path = folder / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        command = ["redis-server", "--port", "0", "--unixsocket", str(self.socket_path)]
        command += ["--unixsocketperm", "700", "--save", "", "--appendonly", "no"]
        command += ["--notify-keyspace-events", "Ex", "--dir", str(self.folder)]
        command += ["--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.socket_path.exists() and self._pings():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT_S}s")

    def _pings(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def client(self) -> Any:
        """A new client connection."""
        import redis

        return redis.Redis(unix_socket_path=str(self.socket_path))

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _set_deadlines(server: RedisServer, deadlines: list[float]) -> float:
    """Set one key per deadline; return how long it took."""
    client = server.client()
    order = list(range(len(deadlines)))
    random.Random(RANDOM_SEED).shuffle(order)
    began = time.perf_counter()
    for start in range(0, len(order), LOAD_BATCH):
        pipe = client.pipeline(transaction=False)
        for index in order[start : start + LOAD_BATCH]:
            deadline_ms = round(deadlines[index] * 1000)
            pipe.set(redis_key(deadline_ms, index), b"v", pxat=deadline_ms)
        pipe.execute()
    client.close()
    return time.perf_counter() - began


def _deadline_run(
    server: RedisServer, offsets: list[float], plan: Plan, tag: str
) -> dict[str, Any]:
    lead = len(offsets) / LOAD_RATE_GUESS_PER_S + plan.lead_pad_s
    span = max(offsets) if offsets else 0.0
    end_by = time.time() + READY_TIMEOUT_S + lead + span + plan.grace_s
    out = server.folder / f"redis-{tag}.events"
    collector = EventCollector("redis", server.socket_path, len(offsets), end_by, out)
    try:
        if not collector.wait_ready(READY_TIMEOUT_S):
            raise RuntimeError("the Redis subscriber did not subscribe")
        first = time.time() + lead
        load_s = _set_deadlines(server, [first + offset for offset in offsets])
        loaded_at = time.time()
        rss = int(server.client().info("memory")["used_memory_rss"])
        collected = collector.result()
    finally:
        collector.close()
    figures = summarize_lateness(collected, len(offsets))
    figures.update(load_s=load_s, loaded_before_first_deadline=loaded_at <= first)
    figures["rss_mib_loaded"] = rss / 2**20
    return figures


def _spread_offsets(deadlines: list[float], plan: Plan) -> list[float]:
    if deadlines:
        first = min(deadlines)
        return [deadline - first for deadline in deadlines]
    count = plan.expiry_grants
    return [plan.expiry_window_s * index / count for index in range(count)]


def _throughput_once(server: RedisServer, plan: Plan, run: int) -> tuple[int, float]:
    done = [0] * plan.clients
    stop_at = time.perf_counter() + plan.throughput_s

    def client_loop(slot: int) -> None:
        client = server.client()
        sent = 0
        while time.perf_counter() < stop_at:
            pipe = client.pipeline(transaction=False)
            for _ in range(plan.window):
                pipe.set(f"t{run}:{slot}:{sent}", b"v", px=THROUGHPUT_PX_MS)
                sent += 1
            pipe.execute()
        done[slot] = sent
        client.close()

    threads = [
        threading.Thread(target=client_loop, args=(slot,))
        for slot in range(plan.clients)
    ]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), time.perf_counter() - began


def _throughput(server: RedisServer, plan: Plan) -> dict[str, Any]:
    rates = []
    for run in range(plan.repeats):
        count, elapsed = _throughput_once(server, plan, run)
        rates.append(count / elapsed)
    server.client().flushall()
    return {
        "sets_per_s": median_of(rates),
        "runs_per_s": rates,
        "clients": plan.clients,
    }


def _lateness_runs(
    server: RedisServer, offsets: list[float], plan: Plan, tag: str
) -> dict[str, Any]:
    runs = [
        _deadline_run(server, offsets, plan, f"{tag}{i}")
        for i in range(plan.long_repeats)
    ]
    summaries = [Summary(**run["lateness_ms"]) for run in runs]
    figures: dict[str, Any] = {"lateness_ms": combine(summaries), "runs": runs}
    for key in ("done_after_first_deadline_s", "done_after_last_deadline_s"):
        figures[key] = median_of([run[key] for run in runs if key in run])
    return figures


def measure_redis(
    folder: Path, plan: Plan, keyturn_deadlines: list[float]
) -> dict[str, Any]:
    """Deadline lateness (spread and storm) and SET PX throughput of a private Redis."""
    missing = redis_missing()
    if missing:
        return {"skipped": missing}
    redis_folder = folder / "redis"
    redis_folder.mkdir()
    with RedisServer(redis_folder) as server:
        client = server.client()
        version = client.info("server")["redis_version"]
        hz = int(client.config_get("hz")["hz"])
        spread = _lateness_runs(
            server, _spread_offsets(keyturn_deadlines, plan), plan, "spread"
        )
        storm = _lateness_runs(server, [0.0] * plan.storm_grants, plan, "storm")
        throughput = _throughput(server, plan)
    return {
        "version": version,
        "hz": hz,
        "spread": spread,
        "storm": storm,
        "throughput": throughput,
    }
