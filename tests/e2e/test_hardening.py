"""What an attacker or a careless edit tries, refused without harm."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import DaemonProcess, cli_json, run_cli

from keyturn.shared.client import Subscriber
from keyturn.shared.errors import KeyturnError
from keyturn.shared.keys import Home


def test_control_characters_in_text_are_refused(daemon: DaemonProcess) -> None:
    """A vendor cannot send terminal escape codes to the approvers' screens."""
    for reason in (
        "hi\x1b]0;TITLE\x07",
        "a\x1b[2Jb",
        "line\nbreak",
        "rtl\u202eevil",
    ):
        code, out = cli_json(
            daemon.home,
            "request",
            "braintree",
            "payments:refund",
            "--ttl",
            "5m",
            "--reason",
            reason,
            "--as",
            "braintree",
        )
        assert (code, out["error"]["code"]) == (2, "bad_request"), reason
    with daemon.client() as client:
        assert client.status()["counts"]["pending"] == 0


def test_requesters_cannot_read_the_event_stream(daemon: DaemonProcess) -> None:
    """One vendor never sees another's grants, reasons or tickets on the event stream."""
    with (
        Subscriber.from_home(daemon.home, "braintree") as vendor,
        daemon.subscriber("auditor") as auditor,
    ):
        time.sleep(0.5)
        with daemon.client("sentry") as client:
            client.request("sentry", ["errors:read"], ttl="5m", reason="sentry-private")
        assert auditor.recv(timeout_s=3.0) is not None
        assert vendor.recv(timeout_s=1.0) is None
    assert "refused braintree" in daemon.log()


def test_removed_identity_loses_its_open_subscription(daemon: DaemonProcess) -> None:
    """C-08: a key removed from the configuration stops receiving events it was subscribed to."""
    with Subscriber.from_home(daemon.home, "auditor") as sub:
        time.sleep(0.5)
        config = Home(daemon.home).config
        text = config.read_text()
        start = text.index("[identities.auditor]")
        end = text.index("[identities.", start + 1)
        config.write_text(text[:start] + text[end:])
        time.sleep(1.5)
        while sub.recv(timeout_s=0.2) is not None:
            pass
        with daemon.client("sentry") as client:
            client.request("sentry", ["errors:read"], ttl="5m", reason="after removal")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            event = sub.recv(timeout_s=0.2)
            assert event is None or event.get("type") == "daemon.heartbeat" and False, (
                event
            )


def test_altered_snapshot_is_not_trusted(daemon: DaemonProcess) -> None:
    """A snapshot edited on disk is ignored: the journal decides, and the grant stays revoked."""
    with daemon.client("oncall") as client:
        grant = client.request("sentry", ["errors:read"], ttl="1h", reason="x")["grant"]
        client.revoke(grant["grant_id"], "done")
    daemon.stop()
    path = Home(daemon.home).snapshot
    data = json.loads(path.read_text())
    for doc in data["grants"].values():
        if doc["grant_id"] == grant["grant_id"]:
            doc["state"] = "active"
            doc["scopes"] = ["errors:read", "errors:admin"]
    path.write_text(json.dumps(data))
    daemon.start()
    assert "does not match its signature" in daemon.log()
    with daemon.client() as client:
        assert client.get(grant["grant_id"])["grant"]["state"] == "revoked"
        assert client.list()["grants"] == []


def test_extend_rechecks_what_the_vendor_may_hold(daemon: DaemonProcess) -> None:
    """A grant whose scope was taken from its vendor is not extended."""
    with daemon.client("sentry") as client:
        grant = client.request("sentry", ["errors:read"], ttl="5m", reason="x")["grant"]
    config = Home(daemon.home).config
    config.write_text(config.read_text().replace('"errors:read",', "", 1))
    time.sleep(1.5)
    with daemon.client("sentry") as client, pytest.raises(KeyturnError) as caught:
        client.extend(grant["grant_id"], "1m")
    assert caught.value.code == "scope_not_allowed"


def test_pending_requests_per_identity_are_bounded(daemon: DaemonProcess) -> None:
    """One identity cannot flood the approvers' queue."""
    with daemon.client("braintree") as client:
        for _ in range(100):
            client.request("braintree", ["payments:refund"], ttl="5m", reason="flood")
        with pytest.raises(KeyturnError) as caught:
            client.request("braintree", ["payments:refund"], ttl="5m", reason="flood")
        assert caught.value.code == "too_many_pending"
    with daemon.client("sentry") as other:
        other.request("sentry", ["errors:resolve"], ttl="5m", reason="unaffected")


def test_broken_configuration_still_lets_operators_lock_down(
    daemon: DaemonProcess,
) -> None:
    """A syntax error in keyturn.toml keeps the last good one running, and lockdown still works."""
    config = Home(daemon.home).config
    config.write_text(config.read_text() + "\n[[rules\n")
    time.sleep(1.2)
    code, out = cli_json(daemon.home, "lockdown", "--reason", "emergency")
    assert code == 0 and out["lockdown"]["engaged"] is True
    assert "invalid" in daemon.log()


def test_long_text_is_a_clear_error_not_unreachable(daemon: DaemonProcess) -> None:
    """A reason past the message limits is refused as bad input at once."""
    done = run_cli(
        daemon.home,
        "request",
        "braintree",
        "payments:read",
        "--ttl",
        "5m",
        "--reason",
        "A" * 16_000,
        "--as",
        "braintree",
    )
    assert done.returncode == 2, done.stderr
    assert "unreachable" not in done.stderr


def test_token_has_one_spelling(daemon: DaemonProcess, home: Path) -> None:
    """An altered spelling of a valid token (padding, alphabet, spare bits) is refused."""
    with daemon.client("sentry") as client:
        token = client.request("sentry", ["errors:read"], ttl="5m", reason="x")["token"]
    head, payload, signature = token.split(".")
    variants = [
        f"{token}==",
        f"{head}.{payload}.{signature}=",
        f"{head}.{payload.replace('-', '+').replace('_', '/')}.{signature}",
    ]
    assert run_cli(home, "token", "verify", token).returncode == 0
    for variant in variants:
        if variant != token:
            assert run_cli(home, "token", "verify", variant).returncode == 1, variant
