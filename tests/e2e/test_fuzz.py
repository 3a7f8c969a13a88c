"""Hostile input on the API socket: malformed, truncated, oversized and type-confused
frames from clients with valid keys. The daemon answers or drops each, never crashes,
changes nothing but `access.refused` records, and keeps serving good clients.

CI runs a few thousand cases. Before a release, run many more with
``KEYTURN_FUZZ_EXAMPLES=20000 python -m pytest tests/e2e/test_fuzz.py`` (the
number of cases of each kind; the test timeout grows with it).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import DaemonProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyturn.daemon.audit import read_records
from keyturn.shared.client import connect_info
from keyturn.shared.errors import ERROR_CODES
from keyturn.shared.keys import Home
from keyturn.shared.protocol import OPS

FUZZ_EXAMPLES = int(os.environ.get("KEYTURN_FUZZ_EXAMPLES", "0") or 0)
"""Cases of each kind; read at import, since the fixtures scrub KEYTURN_ variables."""
STRUCTURED_CASES = FUZZ_EXAMPLES or 500
TYPED_CASES = FUZZ_EXAMPLES or 500
BINARY_CASES = FUZZ_EXAMPLES or 400
RAW_CASES = FUZZ_EXAMPLES or 2000
FUZZ_TIMEOUT_S = max(120, FUZZ_EXAMPLES // 20)
"""pytest-timeout for one fuzz test: the default, or more for a long run."""
REPLY_TIMEOUT_S = 2.0
"""A frame not answered by then counts as dropped."""
SLOW_REPLY_S = 1.0
"""No refusal may take longer than this."""
GOOD_CALL_EVERY = 50
"""A good client's call is interleaved after this many hostile frames."""
MEMORY_GROWTH_LIMIT_KB = 40 * 1024
"""The daemon's peak memory may not grow more than this under hostile input."""
BYTE_REFUSALS = frozenset(
    {"bad_frame", "bad_request", "unsupported_version", "unknown_op", "too_large"}
)
"""What bytes that are no request at all may be refused with."""
STATE_RECORDS = frozenset({"access.refused", "audit.checkpoint"})
"""The only records hostile input may cause."""
ARG_NAMES = (
    "vendor",
    "scopes",
    "ttl",
    "reason",
    "ticket",
    "request_id",
    "grant_id",
    "by",
    "all",
    "id",
    "token",
)
"""Every argument name of the API, so that fuzzed args reach the handlers."""
HYPOTHESIS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# Raw sockets with the keys of an identity.


class Wire:
    """A DEALER and a REQ socket of one identity, sending frames as given."""

    def __init__(self, home: Path, identity: str) -> None:
        self.api, _, self.server, self.public, self.secret = connect_info(
            home, identity
        )
        self.dealer = self._socket(zmq.DEALER)
        self.req = self._socket(zmq.REQ)
        self.dropped = 0
        self.slowest = 0.0

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        sock = zmq.Context.instance().socket(kind)
        sock.linger = 0
        sock.curve_serverkey = self.server
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.connect(self.api)
        return sock

    def send(self, frames: list[bytes], via: str = "dealer") -> dict[str, Any] | None:
        """Send one multipart message; return the decoded reply, or None if dropped."""
        sock = self.req if via == "req" else self.dealer
        began = time.monotonic()
        sock.send_multipart(frames)
        if not sock.poll(int(REPLY_TIMEOUT_S * 1000)):
            self.dropped += 1
            self._renew(via)
            return None
        reply = sock.recv_multipart()
        self.slowest = max(self.slowest, time.monotonic() - began)
        return _checked_reply(reply[-1])

    def _renew(self, via: str) -> None:
        """A socket whose reply never came is replaced: a late reply must not be misread."""
        if via == "req":
            self.req.close(linger=0)
            self.req = self._socket(zmq.REQ)
        else:
            self.dealer.close(linger=0)
            self.dealer = self._socket(zmq.DEALER)

    def message(self, value: Any, via: str = "dealer") -> dict[str, Any] | None:
        """Pack a value and send it as one message frame."""
        payload: bytes = msgpack.packb(value, use_bin_type=True)
        frames = [payload] if via == "req" else [b"", payload]
        return self.send(frames, via)

    def close(self) -> None:
        self.dealer.close(linger=0)
        self.req.close(linger=0)


def _checked_reply(frame: bytes) -> dict[str, Any]:
    """Every reply is a well-formed protocol reply with a documented error code."""
    reply = msgpack.unpackb(frame, raw=False)
    assert isinstance(reply, dict) and reply.get("v") == 1, reply
    assert isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        error = reply["error"]
        assert error["code"] in ERROR_CODES, error
        assert isinstance(error["message"], str) and len(error["message"]) < 2000
    return reply


GOOD_CLIENT = """
import json, select, sys, time
from keyturn.shared.client import Client
calls, failures, slowest = 0, [], 0.0
with Client.from_home(sys.argv[1], "oncall", timeout_s=float(sys.argv[2])) as client:
    while not select.select([sys.stdin], [], [], 0.01)[0]:
        began = time.monotonic()
        try:
            client.status()
        except Exception as exc:
            failures.append(repr(exc))
        slowest = max(slowest, time.monotonic() - began)
        calls += 1
        if calls == 1:
            print("ready", flush=True)
print(json.dumps({"calls": calls, "failures": failures[:5], "slowest": slowest}))
"""
"""A well-behaved client in its own process, calling `status` until its stdin closes."""


class GoodClient:
    """The good client's process: started beside the fuzz, checked after it.

    It runs apart from the test so that the test's own pauses (garbage
    collection of many examples) are not taken for the daemon's.
    """

    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GOOD_CLIENT, str(home), str(REPLY_TIMEOUT_S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == b"ready\n", "the good client started"

    def finish(self) -> None:
        """Stop it and check that every call was answered in time."""
        out, _ = self.proc.communicate(b"stop", timeout=30)
        result = json.loads(out.splitlines()[-1])
        assert not result["failures"], result["failures"]
        assert result["calls"] > 0
        assert result["slowest"] < REPLY_TIMEOUT_S, result["slowest"]


@pytest.fixture
def watched(daemon: DaemonProcess) -> Iterator[tuple[DaemonProcess, dict[str, Any]]]:
    """The daemon, its state before the fuzz, and a good client running beside it."""
    with daemon.client() as admin:
        before = admin.status()
    good = GoodClient(daemon.home)
    yield daemon, before
    good.finish()
    _assert_unharmed(daemon, before)


def _assert_unharmed(process: DaemonProcess, before: dict[str, Any]) -> None:
    """Alive, serving, and changed only by refusals and checkpoints."""
    assert process.proc is not None and process.proc.poll() is None, process.log()
    with process.client("admin") as admin:
        after = admin.status()
    assert after["boot_id"] == before["boot_id"], "the daemon restarted"
    assert after["counts"] == before["counts"]
    assert after["lockdown"] == before["lockdown"]
    new = [
        r for r in read_records(Home(process.home).journal) if r["seq"] > before["seq"]
    ]
    assert {r["type"] for r in new} <= STATE_RECORDS, {r["type"] for r in new}
    assert after["seq"] == before["seq"] + len(new)
    assert "Traceback" not in process.log()
    assert "failed inside the daemon" not in process.log()
    with process.client("braintree") as vendor:
        fresh = vendor.request("braintree", ["payments:read"], ttl="5m", reason="ok")
    assert fresh["grant"]["state"] == "active", "a good client still gets a grant"


def _peak_rss_kb(process: DaemonProcess) -> int:
    assert process.proc is not None
    status = Path(f"/proc/{process.proc.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1])


def _interleave(process: DaemonProcess, count: int) -> None:
    """Every so often, a good client's call must succeed between hostile frames."""
    if count % GOOD_CALL_EVERY == 0:
        with process.client("oncall2") as client:
            assert client.status()["identity"] == "oncall2"


# Strategies.


LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(max_size=12) | st.binary(max_size=4), children, max_size=5
        )
    ),
    max_leaves=25,
)
"""Any msgpack value at all."""
PLAUSIBLE = st.sampled_from(
    ["braintree", "payments:read", "5m", "15m", 300, "INC-1", "grt_000000000000", ""]
)
"""Values that are right for some argument, to mix with wrong ones."""
ARGS = st.dictionaries(st.sampled_from(ARG_NAMES), VALUES | PLAUSIBLE, max_size=6)


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """A request-shaped map with wrong parts, or any value at all."""
    if draw(st.integers(0, 5)) == 0:
        return draw(VALUES)
    message: dict[Any, Any] = {
        "v": draw(st.sampled_from([1, 1, 1, 0, 2, "1", None])),
        "id": draw(st.integers(0, 2**40) | VALUES),
        "op": draw(st.sampled_from(OPS) | VALUES),
        "args": draw(ARGS | VALUES),
    }
    for key in draw(st.lists(st.sampled_from(["v", "id", "op", "args"]), max_size=2)):
        message.pop(key, None)
    message.update(draw(st.dictionaries(st.text(max_size=5), VALUES, max_size=2)))
    return message


NOT_TEXT = VALUES.filter(lambda value: not isinstance(value, str))
NOT_SCOPES = VALUES.filter(
    lambda value: (
        not (
            isinstance(value, list) and value and all(isinstance(i, str) for i in value)
        )
    )
) | st.sampled_from(["payments:read", b"payments:read", [], [b"payments:read"]])
NOT_DURATION = VALUES.filter(
    lambda value: isinstance(value, bool) or not isinstance(value, str | int)
) | st.sampled_from([b"5m", 5.0, [300], {"s": 300}])
REQUIRED = {
    "request": {"vendor": NOT_TEXT, "scopes": NOT_SCOPES, "reason": NOT_TEXT},
    "approve": {"request_id": NOT_TEXT},
    "deny": {"request_id": NOT_TEXT, "reason": NOT_TEXT},
    "cancel": {"request_id": NOT_TEXT},
    "revoke": {"grant_id": NOT_TEXT},
    "release": {"grant_id": NOT_TEXT},
    "extend": {"grant_id": NOT_TEXT, "by": NOT_DURATION},
    "lockdown": {"reason": NOT_TEXT},
}
"""For each op that changes state, its required arguments and values of a wrong type."""
VALID = {
    "vendor": "braintree",
    "scopes": ["payments:read"],
    "ttl": "5m",
    "reason": "INC-1",
    "request_id": "req_000000000000",
    "grant_id": "grt_000000000000",
    "by": "5m",
}
"""Right values for every other argument, so only the wrong one can refuse the call."""


@st.composite
def confused_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """An admin call whose required arguments are all right but one, of a wrong type."""
    op = draw(st.sampled_from(sorted(REQUIRED)))
    wrong = draw(st.sampled_from(sorted(REQUIRED[op])))
    args: dict[str, Any] = {name: VALID[name] for name in REQUIRED[op]}
    args.update(draw(st.dictionaries(st.sampled_from(ARG_NAMES), VALUES, max_size=2)))
    args[wrong] = draw(REQUIRED[op][wrong])
    return op, args


# Structure-aware fuzzing.


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
def test_malformed_messages_change_nothing(
    watched: tuple[DaemonProcess, dict[str, Any]],
) -> None:
    """C-09: request-shaped garbage from a read-only identity is answered and changes nothing."""
    process, _ = watched
    wire = Wire(process.home, "auditor")
    count = 0

    @settings(HYPOTHESIS, max_examples=STRUCTURED_CASES)
    @given(message=messages(), via=st.sampled_from(["dealer", "req"]))
    def send(message: Any, via: str) -> None:
        nonlocal count
        reply = wire.message(message, via)
        assert reply is not None, "a message within the size limits is always answered"
        if isinstance(message, dict) and reply["ok"] is False:
            assert reply["id"] in (message.get("id"), None)
        count += 1
        _interleave(process, count)

    try:
        send()
    finally:
        wire.close()


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
def test_type_confused_arguments_are_refused(
    watched: tuple[DaemonProcess, dict[str, Any]],
) -> None:
    """C-09: an admin call with one argument of a wrong type is refused, never half done."""
    process, _ = watched
    wire = Wire(process.home, "admin")
    number = 0

    @settings(HYPOTHESIS, max_examples=TYPED_CASES)
    @given(call=confused_calls(), via=st.sampled_from(["dealer", "req"]))
    def send(call: tuple[str, dict[str, Any]], via: str) -> None:
        nonlocal number
        number += 1
        op, args = call
        reply = wire.message({"v": 1, "id": number, "op": op, "args": args}, via)
        assert reply is not None
        assert reply["ok"] is False, (op, args, reply)
        assert reply["error"]["code"] not in ("internal", "duplicate_id"), reply
        _interleave(process, number)

    try:
        send()
    finally:
        wire.close()


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
def test_random_bytes_are_refused(
    watched: tuple[DaemonProcess, dict[str, Any]],
) -> None:
    """C-09: arbitrary bytes as a message are refused with bad_frame or bad_request."""
    process, _ = watched
    wire = Wire(process.home, "admin")
    count = 0

    @settings(HYPOTHESIS, max_examples=BINARY_CASES)
    @given(payload=st.binary(max_size=300), via=st.sampled_from(["dealer", "req"]))
    def send(payload: bytes, via: str) -> None:
        nonlocal count
        frames = [payload] if via == "req" else [b"", payload]
        reply = wire.send(frames, via)
        assert reply is not None and reply["ok"] is False
        assert reply["error"]["code"] in BYTE_REFUSALS, reply["error"]
        count += 1
        _interleave(process, count)

    try:
        send()
    finally:
        wire.close()


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
def test_raw_random_frames(watched: tuple[DaemonProcess, dict[str, Any]]) -> None:
    """C-09: random frames, msgpack headers with random bodies and random frame counts."""
    process, _ = watched
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    wire = Wire(process.home, "admin")
    heads = [b"\xdf", b"\xdd", b"\xdb", b"\xc6", b"\xde", b"\x8f", b"\x9f", b"\xc7"]
    try:
        for number in range(RAW_CASES):
            body = rng.randbytes(rng.choice([0, 1, 5, 40, 500, 5000]))
            payload = rng.choice(heads) + body if rng.random() < 0.5 else body
            frames = [payload] * rng.choice([1, 1, 1, 2, 3])
            via = rng.choice(["dealer", "req"])
            envelope = [] if via == "req" or rng.random() < 0.3 else [b""]
            reply = wire.send([*envelope, *frames], via)
            assert reply is not None, f"seed {seed}, case {number}"
            assert reply["ok"] is False, f"seed {seed}, case {number}"
            _interleave(process, number + 1)
    finally:
        wire.close()
    assert wire.slowest < SLOW_REPLY_S, (seed, wire.slowest)


def test_truncated_messages_are_refused(
    watched: tuple[DaemonProcess, dict[str, Any]],
) -> None:
    """C-09: every truncation of a valid request is refused as a bad frame, never run."""
    process, _ = watched
    wire = Wire(process.home, "admin")
    valid = {
        "v": 1,
        "id": "truncated",
        "op": "lockdown",
        "args": {"reason": "a lockdown that must never happen"},
    }
    payload: bytes = msgpack.packb(valid, use_bin_type=True)
    try:
        for cut in range(len(payload)):
            via = "req" if cut % 2 else "dealer"
            frames = [payload[:cut]] if via == "req" else [b"", payload[:cut]]
            reply = wire.send(frames, via)
            assert reply is not None and reply["ok"] is False
            assert reply["error"]["code"] == "bad_frame", (cut, reply)
    finally:
        wire.close()


# C-09, case by case.


def _pack(value: Any) -> bytes:
    payload: bytes = msgpack.packb(value, use_bin_type=True)
    return payload


_IDS = itertools.count(1)


def _request(**args: Any) -> bytes:
    """A valid request for an auto-approved grant, but for ``args``; each its own id."""
    base = {"vendor": "braintree", "scopes": ["payments:read"], "reason": "x"}
    message = {"v": 1, "id": f"c09-{next(_IDS)}", "op": "request", "args": base | args}
    return _pack(message)


def _deep(levels: int) -> bytes:
    return b"\x91" * levels + b"\xc0"


HOSTILE: list[tuple[str, list[bytes], str]] = [
    ("map announcing 4 billion entries", [b"\xdf\xff\xff\xff\xff\xa1v\x01"], "bad_frame"),
    ("array announcing 4 billion items", [b"\xdd\xff\xff\xff\xff\x01"], "bad_frame"),
    ("string announcing 4 GB", [b"\xdb\xff\xff\xff\xffabc"], "bad_frame"),
    ("binary announcing 4 GB", [b"\xc6\xff\xff\xff\xffabc"], "bad_frame"),
    ("truncated msgpack", [_request()[:-7]], "bad_frame"),
    ("empty frame", [b""], "bad_frame"),
    ("list for a map", [_pack([1, "c09", "status", {}])], "bad_request"),
    ("list for the args", [_pack({"v": 1, "id": 1, "op": "status", "args": [1]})], "bad_request"),
    ("string for scopes", [_request(scopes="payments:read")], "bad_request"),
    ("bytes for scopes", [_request(scopes=[b"payments:read"])], "bad_request"),
    ("bytes for a duration", [_request(ttl=b"5m")], "bad_duration"),
    ("float for a duration", [_request(ttl=300.0)], "bad_duration"),
    ("bool for a duration", [_request(ttl=True)], "bad_duration"),
    ("negative duration", [_request(ttl=-300)], "bad_duration"),
    ("duration of 2**64-1 seconds", [_request(ttl=2**64 - 1)], "bad_duration"),
    ("bytes for extend's duration",
     [_pack({"v": 1, "id": 2, "op": "extend", "args": {"grant_id": "grt_0", "by": b"5m"}})],
     "bad_duration"),
    ("10,000 levels of nesting", [_deep(10_000)], "bad_frame"),
    ("10,000 levels inside args",
     [b"\x84\xa1v\x01\xa2id\x01\xa2op\xa6status\xa4args" + _deep(10_000)], "bad_frame"),
    ("ext type in the args", [_request(ticket=msgpack.ExtType(5, b"x"))], "bad_frame"),
    ("timestamp ext for a duration", [_request(ttl=msgpack.Timestamp(300, 0))], "bad_frame"),
    ("ext type for the whole message", [_pack(msgpack.ExtType(1, b"\x00" * 16))], "bad_frame"),
    ("extra frames", [_pack({"v": 1, "id": 1, "op": "status"})] * 2, "bad_frame"),
    ("extra empty frames", [b"", _pack({"v": 1, "id": 1, "op": "status"}), b""], "bad_frame"),
    ("65 keys in one map", [_pack({str(i): i for i in range(65)})], "bad_frame"),
    ("reason of 9,000 characters", [_request(reason="r" * 9000)], "bad_frame"),
    ("1,000 scopes", [_request(scopes=["payments:read"] * 1000)], "bad_frame"),
    ("33 scopes", [_request(scopes=[f"payments:r{i}" for i in range(33)])], "invalid_scope"),
    ("binary map keys", [_pack({b"v": 1, b"id": 1, b"op": b"status"})], "bad_request"),
    ("float id", [_pack({"v": 1, "id": 1.5, "op": "status"})], "bad_request"),
    ("id of 65 characters", [_pack({"v": 1, "id": "i" * 65, "op": "status"})], "bad_request"),
    ("protocol version 2", [_pack({"v": 2, "id": 1, "op": "status"})], "unsupported_version"),
    ("unknown op", [_pack({"v": 1, "id": 1, "op": "shutdown"})], "unknown_op"),
    ("frame over 64 KiB", [_request(reason="r" * 70_000)], "too_large"),
    ("frame just under 1 MiB", [b"\xc6" + (1_000_000).to_bytes(4, "big") + bytes(1_000_000)],
     "too_large"),
]  # fmt: skip
"""(case, message frames after the envelope, the error code expected)."""


@pytest.mark.parametrize("via", ["dealer", "req"])
def test_c09_hostile_frames(
    watched: tuple[DaemonProcess, dict[str, Any]], via: str
) -> None:
    """C-09: each hostile frame gets its refusal quickly, memory stays flat, nothing runs."""
    process, before = watched
    wire = Wire(process.home, "admin")
    peak = _peak_rss_kb(process)
    try:
        for case, frames, code in HOSTILE:
            began = time.monotonic()
            reply = wire.send(frames if via == "req" else [b"", *frames], via)
            assert reply is not None, f"{case}: no reply"
            assert reply["ok"] is False, case
            assert reply["error"]["code"] == code, (case, reply["error"])
            assert time.monotonic() - began < SLOW_REPLY_S, case
    finally:
        wire.close()
    assert _peak_rss_kb(process) - peak < MEMORY_GROWTH_LIMIT_KB
    with process.client() as admin:
        assert admin.status()["seq"] == before["seq"], "no refusal here is journaled"


def test_50mb_frame_drops_the_connection_only(
    watched: tuple[DaemonProcess, dict[str, Any]],
) -> None:
    """C-09: a 50 MB frame is dropped by libzmq unread; a new socket is served at once."""
    process, _ = watched
    peak = _peak_rss_kb(process)
    wire = Wire(process.home, "admin")
    try:
        huge = b"\xc6" + (50 * 2**20).to_bytes(4, "big") + bytes(50 * 2**20)
        assert wire.send([b"", huge]) is None, "the oversized frame got an answer"
    finally:
        wire.close()

    fresh = Wire(process.home, "admin")
    try:
        for via in ("dealer", "req"):
            reply = fresh.message({"v": 1, "id": via, "op": "status"}, via)
            assert reply is not None and reply["ok"] is True
    finally:
        fresh.close()
    assert _peak_rss_kb(process) - peak < MEMORY_GROWTH_LIMIT_KB


def test_flood_of_hostile_frames_without_waiting(
    watched: tuple[DaemonProcess, dict[str, Any]],
) -> None:
    """C-09: thousands of bad frames sent without waiting are all answered, in order."""
    process, _ = watched
    wire = Wire(process.home, "admin")
    count = 2000
    try:
        for number in range(count):
            message = {"v": 1, "id": number, "op": "request", "args": {"scopes": "x"}}
            wire.dealer.send_multipart([b"", _pack(message)])
        ids = []
        while len(ids) < count and wire.dealer.poll(int(REPLY_TIMEOUT_S * 1000)):
            reply = _checked_reply(wire.dealer.recv_multipart()[-1])
            assert reply["ok"] is False
            ids.append(reply["id"])
    finally:
        wire.close()
    assert ids == list(range(count))
