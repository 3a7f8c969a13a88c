"""Who may talk to the daemon: only configured keys reach the API, and each role only
its ops; every refusal is logged by fingerprint or journaled."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from conftest import DaemonProcess, cli_json

from keyturn.daemon.audit import read_records
from keyturn.shared.client import Client, connect_info
from keyturn.shared.errors import KeyturnError, Refused
from keyturn.shared.keys import Home, fingerprint

REPLY_WAIT_S = 1.5
"""A refused client waits this long to be sure no reply comes."""
LOG_WAIT_S = 5.0
"""A refusal reaches the daemon's log within this long."""


def _records(home: Path) -> list[dict[str, Any]]:
    return list(read_records(Home(home).journal))


def _status_message(op: str = "status", **args: Any) -> bytes:
    message: bytes = msgpack.packb({"v": 1, "id": 1, "op": op, "args": args})
    return message


def _no_reply(sock: zmq.Socket[bytes], payload: bytes) -> bool:
    """Send a request; True when no reply comes (or it cannot even be queued)."""
    try:
        sock.send_multipart([b"", payload], zmq.NOBLOCK)
    except zmq.Again:
        return True
    return sock.poll(int(REPLY_WAIT_S * 1000)) == 0


def _wait_log(process: DaemonProcess, text: str) -> str:
    deadline = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < deadline:
        log = process.log()
        if text in log:
            return log
        time.sleep(0.05)
    pytest.fail(f"{text!r} not in the daemon's log:\n{process.log()}")


def _stranger(process: DaemonProcess) -> tuple[Client, bytes]:
    api, _, server, _, _ = connect_info(process.home, "admin")
    public, secret = zmq.curve_keypair()
    return Client(api, server, public, secret, timeout_s=3.0), public


def _remove_identity(home: Path, name: str) -> None:
    """Delete an identity's table from keyturn.toml in one atomic replace."""
    config = Home(home).config
    text = config.read_text()
    table = re.compile(rf"\n\[identities\.{re.escape(name)}\]\n(?:[^\[\n][^\n]*\n?)*")
    shorter, count = table.subn("\n", text)
    assert count == 1, f"no [identities.{name}] table"
    temporary = config.with_suffix(".tmp")
    temporary.write_text(shorter)
    os.chmod(temporary, 0o600)
    os.replace(temporary, config)


# Keys that are not configured never reach the API.


def test_unknown_key_is_refused_at_the_handshake(daemon: DaemonProcess) -> None:
    """C-08: a client whose key is not configured is refused before any request is read."""
    before = _records(daemon.home)
    client, public = _stranger(daemon)
    with client, pytest.raises(Refused, match="refused this key"):
        client.lockdown("an attacker's lockdown")
    _wait_log(daemon, f"refused an unknown key {fingerprint(public)}")
    assert public.decode() not in daemon.log()

    with daemon.client() as admin:
        status = admin.status()
    assert status["lockdown"]["engaged"] is False
    assert _records(daemon.home) == before, "nothing was journaled"


def test_unknown_key_gets_no_reply_on_a_raw_socket(daemon: DaemonProcess) -> None:
    """C-08: a raw DEALER with an unconfigured key never gets an answer, to any op."""
    api, _, server, _, _ = connect_info(daemon.home, "admin")
    public, secret = zmq.curve_keypair()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
        server,
        public,
        secret,
    )
    sock.connect(api)
    try:
        assert _no_reply(sock, _status_message())
        assert _no_reply(sock, _status_message("lockdown", reason="x"))
    finally:
        sock.close(linger=0)
    with daemon.client() as admin:
        assert admin.status()["lockdown"]["engaged"] is False


@pytest.mark.parametrize("mechanism", ["null", "plain"])
def test_client_without_curve_is_never_served(
    daemon: DaemonProcess, mechanism: str
) -> None:
    """C-08: a client with no CURVE at all (NULL or PLAIN) gets no reply and changes nothing."""
    api = connect_info(daemon.home, "admin")[0]
    before = _records(daemon.home)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    if mechanism == "plain":
        sock.plain_username, sock.plain_password = b"admin", b"admin"
    sock.connect(api)
    try:
        assert _no_reply(sock, _status_message())
        assert _no_reply(sock, _status_message("lockdown", reason="x"))
    finally:
        sock.close(linger=0)
    assert _records(daemon.home) == before
    with daemon.client() as admin:
        assert admin.status()["lockdown"]["engaged"] is False


def test_client_without_curve_is_logged(daemon: DaemonProcess) -> None:
    """C-08: the daemon logs a refused handshake without CURVE, like any other refusal."""
    api = connect_info(daemon.home, "admin")[0]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(api)
    try:
        _no_reply(sock, _status_message())
    finally:
        sock.close(linger=0)
    deadline = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < deadline:
        if re.search(r"WARNING .*(CurveZMQ|CURVE)", daemon.log()):
            return
        time.sleep(0.05)
    pytest.fail(f"no refusal of a client without CURVE logged:\n{daemon.log()}")


def test_key_removed_while_running_is_refused(daemon: DaemonProcess) -> None:
    """C-08: a key removed from keyturn.toml is refused at once, connected or new."""
    public = connect_info(daemon.home, "oncall")[3]
    with daemon.client("oncall") as oncall:
        assert oncall.status()["identity"] == "oncall"
        _remove_identity(daemon.home, "oncall")

        with pytest.raises(Refused) as refused:
            oncall.lockdown("from a removed key")
        assert refused.value.code == "unauthenticated"
        with pytest.raises(Refused):
            oncall.status()
    _wait_log(daemon, f"key no longer configured ({fingerprint(public)})")

    with daemon.client("oncall", timeout_s=3.0) as again:
        with pytest.raises(Refused, match="refused this key"):
            again.status()
    _wait_log(daemon, f"refused an unknown key {fingerprint(public)}")

    kinds = [r["type"] for r in _records(daemon.home)]
    assert "config.reloaded" in kinds and "lockdown.engaged" not in kinds
    with daemon.client("oncall2") as other:
        assert other.status()["identity"] == "oncall2", "other keys are still served"


# Configured keys reach only what their role allows.


FORBIDDEN = [
    ("auditor", "request", {"vendor": "braintree", "scopes": ["payments:read"],
                            "ttl": "5m", "reason": "x"}),
    ("auditor", "lockdown", {"reason": "x"}),
    ("auditor", "revoke", {"grant_id": "grt_000000000000"}),
    ("auditor", "approve", {"request_id": "req_000000000000"}),
    ("oncall", "lift", {"reason": "x"}),
    ("braintree", "request", {"vendor": "sentry", "scopes": ["errors:read"],
                              "ttl": "5m", "reason": "x"}),
    ("braintree", "approve", {"request_id": "req_000000000000"}),
    ("braintree", "lockdown", {"reason": "x"}),
]  # fmt: skip
"""(identity, op, args) that the identity's role does not allow."""


def test_forbidden_ops_are_refused_and_journaled(daemon: DaemonProcess) -> None:
    """An identity asking beyond its role gets `forbidden`, journaled as access.refused."""
    with daemon.client() as admin:
        before = admin.status()
    for identity, op, args in FORBIDDEN:
        with daemon.client(identity) as client:
            with pytest.raises(Refused) as refused:
                client.call(op, args)
        assert refused.value.code == "forbidden", (identity, op)

    with daemon.client() as admin:
        after = admin.status()
    assert after["seq"] == before["seq"] + len(FORBIDDEN)
    assert after["counts"] == before["counts"]
    assert after["lockdown"] == before["lockdown"]
    new = [r for r in _records(daemon.home) if r["seq"] > before["seq"]]
    assert [r["type"] for r in new] == ["access.refused"] * len(FORBIDDEN)
    assert [(r["actor"], r["op"]) for r in new] == [(i, o) for i, o, _ in FORBIDDEN]
    assert all("may" in r["reason"] for r in new)


def test_other_refusals_are_not_access_refusals(daemon: DaemonProcess) -> None:
    """Refusals that are not about the role (not found, self approval) journal nothing."""
    with daemon.client("oncall") as oncall:
        pending = oncall.request("model-host", ["prompts:read"], ttl="5m", reason="x")
        seq = oncall.status()["seq"]
        for op, args in (
            ("revoke", {"grant_id": "grt_000000000000"}),
            ("approve", {"request_id": pending["request"]["request_id"]}),
        ):
            with pytest.raises(KeyturnError) as refused:
                oncall.call(op, args)
            assert refused.value.code in ("not_found", "self_approval")
        assert oncall.status()["seq"] == seq


def test_cli_reports_forbidden(daemon: DaemonProcess) -> None:
    """The command line shows `forbidden` with exit 1, and the refusal is journaled."""
    code, out = cli_json(daemon.home, "lockdown", "--reason", "x", "--as", "auditor")
    assert code == 1 and out["error"]["code"] == "forbidden"
    refused = [r for r in _records(daemon.home) if r["type"] == "access.refused"]
    assert refused[-1]["actor"] == "auditor" and refused[-1]["op"] == "lockdown"


# Without its own keys the daemon does not start.


def test_daemon_without_a_signing_key_refuses_to_start(
    home: Path, tmp_path: Path
) -> None:
    """C-08: a daemon with no signing key refuses to start and binds nothing."""
    for pem in Home(home).signing.glob("*.pem"):
        pem.unlink()
    process = DaemonProcess(home, tmp_path / "daemon.log")
    process.start(wait=False)
    assert process.proc is not None
    assert process.proc.wait(timeout=15) != 0
    assert "key material" in process.log() and "no signing key" in process.log()
    assert not Path(connect_info(home, "admin")[0].removeprefix("ipc://")).exists()
