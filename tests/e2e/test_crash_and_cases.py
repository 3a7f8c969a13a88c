"""Crashes, restarts and races: what was acknowledged stays true (C-01, C-02, C-04, C-06)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess

from keyturn.daemon.journal import MAGIC, iter_frames
from keyturn.shared.codec import decode_record
from keyturn.shared.errors import KeyturnError, Unreachable
from keyturn.shared.keys import Home


def journal_records(home: Path) -> list[dict[str, Any]]:
    """Every record in a home's journal, read straight from the file."""
    data = Home(home).journal.read_bytes()
    assert data.startswith(MAGIC)
    return [
        decode_record(p) for _, _, p in iter_frames(data, len(MAGIC)) if p is not None
    ]


def _grant(client: Any, vendor: str, scope: str, ttl: int | str) -> dict[str, Any]:
    result: dict[str, Any] = client.request(vendor, [scope], ttl=ttl, reason="test")
    return result


def test_sigkill_under_concurrent_requests_loses_nothing_acknowledged(
    daemon: DaemonProcess,
) -> None:
    """Grants acknowledged before a SIGKILL survive it; passed deadlines expire at start."""
    acknowledged: list[dict[str, Any]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(vendor: str, scope: str) -> None:
        with daemon.client(vendor, timeout_s=1.0) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    result = client.request(
                        vendor, [scope], ttl=1 + n % 3, reason="load"
                    )
                except KeyturnError:
                    continue
                with lock:
                    acknowledged.append(result["grant"])

    threads = [
        threading.Thread(target=worker, args=pair)
        for pair in [("braintree", "payments:read"), ("sentry", "errors:read")] * 2
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    daemon.kill()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) > 20
    time.sleep(
        3.5
    )  # every acknowledged grant's deadline passes while the daemon is down
    daemon.start()
    with daemon.client() as client:
        for grant in acknowledged:
            found = client.get(grant["grant_id"])["grant"]
            assert found["state"] == "expired", found
    expired = [r for r in journal_records(daemon.home) if r["type"] == "grant.expired"]
    by_grant: dict[str, list[dict[str, Any]]] = {}
    for record in expired:
        by_grant.setdefault(record["grant"]["grant_id"], []).append(record)
    for grant in acknowledged:
        assert len(by_grant[grant["grant_id"]]) == 1
    late = [r for r in expired if r["while_down"]]
    assert late, "grants whose deadline passed while down are expired at start"
    for record in late:
        assert record["noticed_at"] > record["deadline"]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
def test_deadlines_that_pass_while_down(
    daemon: DaemonProcess, stop_signal: int
) -> None:
    """C-04: 1 s expired once at start, 5 s keeps its deadline, 1 h untouched, revoke stays."""
    with daemon.client("oncall") as client:
        one = _grant(client, "sentry", "errors:read", 1)["grant"]
        five = _grant(client, "sentry", "errors:read", 5)["grant"]
        hour = _grant(client, "sentry", "errors:read", "1h")["grant"]
        gone = _grant(client, "sentry", "errors:read", "1h")["grant"]
        client.revoke(gone["grant_id"], "done")
    time.sleep(0.3)
    daemon.stop(stop_signal)
    time.sleep(2.5)
    daemon.start()
    with daemon.client() as client:
        assert client.get(one["grant_id"])["grant"]["state"] == "expired"
        still = client.get(five["grant_id"])["grant"]
        assert still["state"] == "active"
        assert still["expires_at"] == five["expires_at"]
        assert 0.5 < still["expires_at"] - time.time() < 3.0
        assert client.get(hour["grant_id"])["grant"] == hour
        assert client.get(gone["grant_id"])["grant"]["state"] == "revoked"
    records = [
        r
        for r in journal_records(daemon.home)
        if r["type"] == "grant.expired" and r["grant"]["grant_id"] == one["grant_id"]
    ]
    assert len(records) == 1
    assert records[0]["while_down"] is True
    assert records[0]["deadline"] == one["expires_at"]
    assert records[0]["noticed_at"] > one["expires_at"]


def test_overlapping_grants_are_independent(daemon: DaemonProcess) -> None:
    """C-01: when grant A ends, grant B for the same scope stays active and its token valid."""
    with daemon.client("braintree") as client:
        a = client.request("braintree", ["payments:read"], ttl=2, reason="A")
        b = client.request("braintree", ["payments:read"], ttl=30, reason="B")
        time.sleep(2.6)
        assert client.get(a["grant"]["grant_id"])["grant"]["state"] == "expired"
        assert client.get(b["grant"]["grant_id"])["grant"]["state"] == "active"
        assert client.verify(b["token"])["valid"] is True
        assert client.verify(a["token"])["valid"] is False
        c = client.request("braintree", ["payments:read"], ttl=30, reason="C")
        client.release(c["grant"]["grant_id"])
        assert client.verify(b["token"])["valid"] is True


def test_extend_racing_expiry_and_revoke_has_one_history(daemon: DaemonProcess) -> None:
    """C-02: extensions racing a deadline or a revoke leave one history, after restarts too."""
    with daemon.client("braintree") as client:
        grant = client.request("braintree", ["payments:read"], ttl=1, reason="race")[
            "grant"
        ]
    gid = grant["grant_id"]
    outcomes: list[str] = []

    def extender() -> None:
        with daemon.client("braintree") as client:
            deadline = time.time() + 2.0
            while time.time() < deadline:
                try:
                    client.extend(gid, 1)
                    outcomes.append("extended")
                except KeyturnError as exc:
                    outcomes.append(exc.code)

    def revoker() -> None:
        time.sleep(0.8)
        with daemon.client("oncall") as client:
            try:
                client.revoke(gid, "race")
                outcomes.append("revoked")
            except KeyturnError as exc:
                outcomes.append("revoke:" + exc.code)

    threads = [threading.Thread(target=extender) for _ in range(3)] + [
        threading.Thread(target=revoker)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = [
        r
        for r in journal_records(daemon.home)
        if r.get("grant", {}).get("grant_id") == gid
    ]
    kinds = [r["type"] for r in records]
    assert kinds[0] == "grant.active"
    ends = [
        k for k in kinds if k in ("grant.expired", "grant.revoked", "grant.released")
    ]
    assert len(ends) == 1
    assert kinds.index(ends[0]) == len(kinds) - 1, "nothing follows the end"
    assert kinds.count("grant.extended") == outcomes.count("extended")
    with daemon.client() as client:
        final = client.get(gid)["grant"]["state"]
    assert "grant." + final == ends[0]
    daemon.restart()
    with daemon.client() as client:
        assert client.get(gid)["grant"]["state"] == final


def test_timed_out_call_leaves_client_usable(daemon: DaemonProcess) -> None:
    """C-06: after a call times out, the next call gets its own answer, never the late one."""
    with daemon.client("oncall") as client:
        with pytest.raises(Unreachable):
            client.call(
                "request",
                {
                    "vendor": "sentry",
                    "scopes": ["errors:read"],
                    "ttl": 60,
                    "reason": "x",
                },
                timeout_s=0.0001,
            )
        status = client.status()
        assert "counts" in status and "grant" not in status
        time.sleep(0.2)
        assert client.call("status")["identity"] == "oncall"


def test_retried_request_is_done_once(daemon: DaemonProcess) -> None:
    """C-06: a retry with the same id returns the first result; reusing an id is refused."""
    with daemon.client("sentry") as client:
        rid = client.new_id()
        first = client.request(
            "sentry", ["errors:read"], ttl=60, reason="x", request_id=rid
        )
        again = client.request(
            "sentry", ["errors:read"], ttl=60, reason="x", request_id=rid
        )
        assert again["grant"]["grant_id"] == first["grant"]["grant_id"]
        with pytest.raises(KeyturnError) as caught:
            client.request(
                "sentry", ["errors:read"], ttl=120, reason="x", request_id=rid
            )
        assert caught.value.code == "duplicate_id"
        assert len(client.list()["grants"]) == 1


def test_restart_starts_from_the_snapshot(daemon: DaemonProcess) -> None:
    """A restart loads the snapshot and replays only the journal after it."""
    with daemon.client("sentry") as client:
        grants = [
            client.request("sentry", ["errors:read"], ttl="1h", reason="s")
            for _ in range(5)
        ]
    daemon.restart()
    log = daemon.log()
    assert "snapshot unreadable" not in log
    last = [line for line in log.splitlines() if "recovered seq" in line][-1]
    assert "snapshot at 0," not in last
    assert "0 journal records replayed" in last
    assert Home(daemon.home).snapshot.stat().st_mode & 0o077 == 0, "owner-only"
    with daemon.client() as client:
        live = {g["grant_id"] for g in client.list()["grants"]}
    assert live == {g["grant"]["grant_id"] for g in grants}


def test_call_reported_unreachable_is_never_carried_out_later(
    daemon: DaemonProcess,
) -> None:
    """A revoke reported unreachable while the daemon was down does not happen when it returns."""
    with daemon.client("oncall", timeout_s=1.0) as client:
        grant = client.request("sentry", ["errors:read"], ttl="1h", reason="x")["grant"]
        daemon.kill()
        with pytest.raises(Unreachable):
            client.revoke(grant["grant_id"], "while down")
        daemon.start()
        time.sleep(0.5)
        assert client.get(grant["grant_id"])["grant"]["state"] == "active"
