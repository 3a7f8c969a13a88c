"""The daemon as scripts and operators use it: through the real CLI and client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, cli_json, run_cli

from keyturn.shared.keys import Home, load_verify_keys
from keyturn.shared.tokens import verify_token


def request_cli(
    home: Path, vendor: str, scope: str, ttl: str, *, as_: str, reason: str = "r"
) -> tuple[int, Any]:
    """`keyturn request VENDOR SCOPE --ttl TTL --reason R --as NAME --json`."""
    return cli_json(
        home, "request", vendor, scope, "--ttl", ttl, "--reason", reason, "--as", as_
    )


def _set_config(home: Path, old: str, new: str) -> None:
    path = Home(home).config
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_auto_approved_grant(daemon: DaemonProcess) -> None:
    """A request a rule approves comes back active, with an expiry and a valid token."""
    before = time.time()
    code, out = request_cli(
        daemon.home,
        "braintree",
        "payments:read",
        "10m",
        as_="braintree",
        reason="INC-1",
    )
    assert code == 0, out
    assert out["state"] == "active"
    assert out["request_id"].startswith("req_") and out["grant_id"].startswith("grt_")
    assert out["expires_at"].endswith("Z")
    claims = verify_token(
        out["token"], load_verify_keys(Home(daemon.home)), time.time()
    )
    assert claims.grant_id == out["grant_id"] and claims.scopes == ("payments:read",)
    assert abs(claims.expires_at - (before + 600)) < 5


def test_second_approver_approves_and_time_counts_from_approval(
    daemon: DaemonProcess,
) -> None:
    """C-03: a reviewed request needs another approver; its grant lives ttl from approval."""
    code, out = request_cli(
        daemon.home, "model-host", "prompts:read", "5m", as_="oncall", reason="eval run"
    )
    assert (code, out["state"]) == (0, "pending")
    rid = out["request_id"]
    code, refused = cli_json(daemon.home, "approve", rid, "--as", "oncall")
    assert code == 1 and refused["error"]["code"] == "self_approval"
    time.sleep(1.5)
    approved_at = time.time()
    code, result = cli_json(daemon.home, "approve", rid, "--as", "oncall2")
    assert code == 0, result
    with daemon.client() as client:
        grant = client.get(rid)["grant"]
        request = client.get(rid)["request"]
    assert grant["approved_by"] == ["oncall2"]
    assert grant["activated_at"] >= approved_at - 0.5
    assert abs(grant["expires_at"] - grant["activated_at"] - 300) < 0.01
    assert request["requested_at"] < request["decided_at"]


def test_deny_then_approve_refused(daemon: DaemonProcess) -> None:
    """A denied request stays denied and creates nothing."""
    _, out = request_cli(
        daemon.home,
        "braintree",
        "payments:refund",
        "10m",
        as_="braintree",
        reason="refund 77",
    )
    rid = out["request_id"]
    code, denied = cli_json(
        daemon.home, "deny", rid, "--reason", "not today", "--as", "oncall"
    )
    assert code == 0 and denied["request"]["state"] == "denied"
    code, again = cli_json(daemon.home, "approve", rid, "--as", "oncall2")
    assert code == 1 and again["error"]["code"] == "invalid_state"
    code, listing = cli_json(daemon.home, "ls")
    assert listing["grants"] == []


def test_revoke_and_release(daemon: DaemonProcess) -> None:
    """Revoke and release end a grant once; a vendor cannot release another's grant."""
    _, a = request_cli(
        daemon.home, "braintree", "payments:read", "5m", as_="braintree", reason="r"
    )
    _, b = request_cli(
        daemon.home, "sentry", "errors:read", "5m", as_="sentry", reason="r"
    )
    code, out = cli_json(
        daemon.home, "revoke", a["grant_id"], "--reason", "done", "--as", "oncall"
    )
    assert code == 0 and out["grant"]["state"] == "revoked"
    code, out = cli_json(daemon.home, "revoke", a["grant_id"], "--as", "oncall")
    assert code == 1 and out["error"]["code"] == "invalid_state"
    code, out = cli_json(daemon.home, "release", b["grant_id"], "--as", "braintree")
    assert code == 1 and out["error"]["code"] == "forbidden"
    code, out = cli_json(daemon.home, "release", b["grant_id"], "--as", "sentry")
    assert code == 0 and out["grant"]["state"] == "released"
    with daemon.client() as client:
        assert client.verify(a["token"])["valid"] is False
        assert "revoked" in client.verify(a["token"])["reason"]


def test_extend_capped_at_maximum(daemon: DaemonProcess) -> None:
    """An extension stops at the maximum lifetime; past it, extend is refused."""
    _, out = request_cli(
        daemon.home, "braintree", "payments:read", "10m", as_="braintree", reason="r"
    )
    code, ext = cli_json(
        daemon.home, "extend", out["grant_id"], "--by", "1h", "--as", "braintree"
    )
    assert code == 0 and ext["capped"] is True
    with daemon.client() as client:
        grant = client.get(out["grant_id"])["grant"]
    assert abs(grant["expires_at"] - grant["activated_at"] - 900) < 0.01
    code, again = cli_json(
        daemon.home, "extend", out["grant_id"], "--by", "1m", "--as", "braintree"
    )
    assert code == 1 and again["error"]["code"] == "duration_exceeds_max"
    code, bad = cli_json(
        daemon.home, "extend", out["grant_id"], "--by", "0s", "--as", "braintree"
    )
    assert code == 2


def test_pending_request_times_out(daemon: DaemonProcess) -> None:
    """C-03: a request left pending expires on its own clock; approving it then creates nothing."""
    _set_config(daemon.home, 'pending_ttl = "15m"', 'pending_ttl = "2s"')
    time.sleep(0.3)
    with daemon.client() as client:
        client.status()  # the daemon notices the change on its next turn
    _, out = request_cli(
        daemon.home, "model-host", "prompts:read", "5m", as_="model-host", reason="r"
    )
    assert out["state"] == "pending"
    time.sleep(3.0)
    code, again = cli_json(daemon.home, "approve", out["request_id"], "--as", "oncall")
    assert code == 1 and again["error"]["code"] == "invalid_state"
    with daemon.client() as client:
        request = client.get(out["request_id"])["request"]
    assert request["state"] == "expired"
    assert "grant" not in client_get_safe(daemon, out["request_id"])


def client_get_safe(daemon: DaemonProcess, object_id: str) -> dict[str, object]:
    with daemon.client() as client:
        return client.get(object_id)


def test_lockdown_survives_restart(daemon: DaemonProcess) -> None:
    """Lockdown revokes everything, refuses new requests, and is still on after a restart."""
    _, grant = request_cli(
        daemon.home, "sentry", "errors:read", "30m", as_="sentry", reason="r"
    )
    _, pending = request_cli(
        daemon.home, "model-host", "prompts:read", "5m", as_="model-host", reason="r"
    )
    code, out = cli_json(
        daemon.home, "lockdown", "--reason", "breach", "--as", "oncall"
    )
    assert code == 0 and out["revoked"] == 1 and out["denied"] == 1
    code, out = cli_json(daemon.home, "lockdown", "--reason", "again", "--as", "oncall")
    assert code == 1 and out["error"]["code"] == "conflict"
    daemon.restart()
    code, out = request_cli(
        daemon.home, "sentry", "errors:read", "5m", as_="sentry", reason="r"
    )
    assert code == 1 and out["error"]["code"] == "lockdown"
    code, out = cli_json(daemon.home, "lift", "--as", "oncall")
    assert code == 1 and out["error"]["code"] == "forbidden"
    code, _ = cli_json(daemon.home, "lift", "--as", "admin")
    assert code == 0
    code, out = request_cli(
        daemon.home, "sentry", "errors:read", "5m", as_="sentry", reason="r"
    )
    assert code == 0 and out["state"] == "active"
    with daemon.client() as client:
        assert client.get(grant["grant_id"])["grant"]["state"] == "revoked"
        assert client.get(pending["request_id"])["request"]["state"] == "denied"


def test_short_grant_expires_on_time_and_watch_sees_it(daemon: DaemonProcess) -> None:
    """A 2 s grant is expired within 1 s of its deadline, and `keyturn watch` shows it."""
    command = [
        sys.executable,
        "-m",
        "keyturn.console.cli",
        "watch",
        "--json",
        "--home",
        str(daemon.home),
    ]
    watch = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the subscription is in place before the grant is made
        _, out = request_cli(
            daemon.home, "braintree", "payments:read", "2s", as_="braintree", reason="r"
        )
        assert watch.stdout is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            event = json.loads(watch.stdout.readline())
            if (
                event["type"] == "grant.expired"
                and event["grant_id"] == out["grant_id"]
            ):
                seen = time.time()
                break
        else:
            raise AssertionError("no grant.expired event within 10 s")
        assert {"seq", "type", "at", "actor"} <= set(event)
        expires = event["grant"]["expires_at"]
        from keyturn.shared.times import parse_rfc3339

        assert 0 <= seen - parse_rfc3339(expires) < 1.0
        assert event["actor"] == "system"
    finally:
        watch.terminate()
        watch.wait(5)
        if watch.stdout is not None:
            watch.stdout.close()


def test_bad_input_gets_clear_errors(daemon: DaemonProcess) -> None:
    """Bad usage exits 2, refusals exit 1, and nothing changes."""
    with daemon.client() as client:
        seq = client.status()["seq"]
    cases = [
        (
            ["request", "nobody", "a:b", "--ttl", "5m", "--reason", "r"],
            2,
            "unknown_vendor",
        ),
        (
            ["request", "braintree", "payments:read", "--ttl", "0s", "--reason", "r"],
            2,
            "bad_duration",
        ),
        (
            ["request", "braintree", "payments:read", "--ttl", "soon", "--reason", "r"],
            2,
            "bad_duration",
        ),
        (
            ["request", "braintree", "Payments", "--ttl", "5m", "--reason", "r"],
            2,
            "invalid_scope",
        ),
        (
            ["request", "braintree", "email:send", "--ttl", "5m", "--reason", "r"],
            1,
            "scope_not_allowed",
        ),
        (["approve", "req_000000000000"], 1, "not_found"),
        (["revoke", "grt_000000000000"], 1, "not_found"),
        (
            [
                "request",
                "sentry",
                "errors:read",
                "--ttl",
                "5m",
                "--reason",
                "r",
                "--as",
                "braintree",
            ],
            1,
            "forbidden",
        ),
    ]
    for args, status, code in cases:
        got, out = cli_json(daemon.home, *args)
        assert (got, out["error"]["code"]) == (status, code), args
    with daemon.client() as client:
        after = client.status()
    assert after["counts"] == {"active": 0, "revoking": 0, "pending": 0}
    assert (
        after["seq"] == seq + 1
    )  # only the refusal of the forbidden request is recorded


def test_unreachable_daemon_reported_quickly(home: Path) -> None:
    """With no daemon, every command says so with exit 3 within 5 s."""
    for args in (
        ["status"],
        ["ls"],
        ["request", "sentry", "errors:read", "--ttl", "1m", "--reason", "r"],
    ):
        began = time.monotonic()
        done = run_cli(home, *args)
        assert done.returncode == 3, done.stderr
        assert time.monotonic() - began < 5.0
        assert "daemon" in done.stderr + done.stdout


def test_invalid_config_stops_daemon_with_named_key(home: Path) -> None:
    """A broken configuration stops the daemon at start, naming the file and key."""
    _set_config(home, 'max_ttl = "30m"', 'max_ttl = "30 minutes"')
    done = run_cli(home, "daemon")
    assert done.returncode != 0
    assert "keyturn.toml" in done.stderr and "max_ttl" in done.stderr


def test_second_daemon_on_same_home_refused(daemon: DaemonProcess) -> None:
    """Only one daemon runs on a home; the second names the first's pid."""
    done = run_cli(daemon.home, "daemon")
    assert done.returncode != 0
    assert "another keyturn daemon" in done.stderr
    assert daemon.proc is not None and str(daemon.proc.pid) in done.stderr


def test_init_refuses_existing_home(home: Path) -> None:
    """`keyturn init` never overwrites a home."""
    done = run_cli(home, "init")
    assert done.returncode == 2 and "never overwrites" in done.stderr


def test_request_wait_returns_when_approved(daemon: DaemonProcess) -> None:
    """`request --wait` returns the grant as soon as an approver approves it."""
    command = [
        sys.executable,
        "-m",
        "keyturn.console.cli",
        "request",
        "model-host",
        "prompts:read",
        "--ttl",
        "5m",
        "--reason",
        "eval",
        "--as",
        "model-host",
        "--wait",
        "20",
        "--json",
        "--home",
        str(daemon.home),
    ]
    waiting = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        pending: list[dict[str, object]] = []
        while not pending and time.monotonic() < deadline:
            time.sleep(0.2)
            pending = cli_json(daemon.home, "ls")[1]["requests"]
        assert pending, "the request is pending while the command waits"
        began = time.monotonic()
        code, _ = cli_json(
            daemon.home, "approve", str(pending[0]["request_id"]), "--as", "oncall"
        )
        assert code == 0
        out, _ = waiting.communicate(timeout=10)
        assert time.monotonic() - began < 2.0
        result = json.loads(out)
        assert waiting.returncode == 0
        assert result["state"] == "active" and result["token"].startswith("kt1.")
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()


def test_loose_or_missing_key_files_are_refused(home: Path) -> None:
    """C-08: secret keys readable by others are refused; a daemon without its keys won't start."""
    keys = Home(home).keys
    (keys / "oncall.key_secret").chmod(0o644)
    done = run_cli(home, "status", "--as", "oncall")
    assert done.returncode == 2 and "readable by others" in done.stderr
    (keys / "daemon.key_secret").chmod(0o640)
    done = run_cli(home, "daemon")
    assert done.returncode != 0 and "daemon.key_secret" in done.stderr
    (keys / "daemon.key_secret").unlink()
    done = run_cli(home, "daemon")
    assert done.returncode != 0 and "missing" in done.stderr


def test_running_daemon_picks_up_a_rotated_key(daemon: DaemonProcess) -> None:
    """After `keyturn keys rotate`, new tokens use the new key at once; old ones still verify."""
    with daemon.client("sentry") as client:
        old = client.request("sentry", ["errors:read"], ttl="10m", reason="before")
        old_kid = client.status()["key_id"]
    code, _ = cli_json(daemon.home, "keys", "rotate")
    assert code == 0
    time.sleep(1.5)
    with daemon.client("sentry") as client:
        assert client.status()["key_id"] != old_kid
        new = client.request("sentry", ["errors:read"], ttl="10m", reason="after")
        assert new["grant"]["key_id"] != old_kid
        assert client.verify(old["token"])["valid"] is True
        assert client.verify(new["token"])["valid"] is True
    assert run_cli(daemon.home, "token", "verify", old["token"]).returncode == 0


def test_viewer_reads_but_changes_nothing(daemon: DaemonProcess) -> None:
    """The viewer identity made by init sees the state and may change none of it."""
    code, out = cli_json(daemon.home, "ls", "--as", "viewer")
    assert code == 0 and out == {"grants": [], "requests": []}
    code, out = request_cli(daemon.home, "sentry", "errors:read", "5m", as_="viewer")
    assert code == 1 and out["error"]["code"] == "forbidden"
