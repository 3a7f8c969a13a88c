"""Tokens as the system a vendor calls checks them: offline with the public keys,
online with the daemon, and across a key rotation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProcess, cli_json, run_cli

from keyturn.console.homes import init_home
from keyturn.daemon.audit import verify_home
from keyturn.shared.keys import Home, load_signing_keys
from keyturn.shared.model import Grant
from keyturn.shared.times import parse_rfc3339
from keyturn.shared.tokens import issue_token


def _grant(process: DaemonProcess, ttl: str = "10m") -> dict[str, Any]:
    with process.client("braintree") as client:
        result = client.request("braintree", ["payments:read"], ttl=ttl, reason="INC-7")
    assert result["grant"]["state"] == "active"
    return result


def _verify(home: Path, token: str, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out = cli_json(home, "token", "verify", token, *extra)
    assert isinstance(out, dict), out
    return code, out


def _flip(token: str, part: int, position: int) -> str:
    pieces = token.split(".")
    text = pieces[part]
    replacement = "A" if text[position] != "A" else "B"
    pieces[part] = text[:position] + replacement + text[position + 1 :]
    return ".".join(pieces)


# Offline.


def test_valid_token_verifies_offline(daemon: DaemonProcess) -> None:
    """A fresh token verifies with only the public keys, the daemon stopped."""
    result = _grant(daemon)
    with daemon.client() as client:
        key_id = client.status()["key_id"]
    daemon.stop()

    code, out = _verify(daemon.home, result["token"])
    assert code == 0, out
    assert out["valid"] is True and out["reason"] == "valid"
    assert out["grant_id"] == result["grant"]["grant_id"]
    assert out["vendor"] == "braintree" and out["scopes"] == ["payments:read"]
    assert out["key_id"] == key_id
    expires = parse_rfc3339(out["expires_at"])
    assert expires == pytest.approx(result["grant"]["expires_at"], abs=0.001)
    assert 590 < out["remaining_s"] <= 600
    human = run_cli(daemon.home, "token", "verify", result["token"])
    assert human.returncode == 0 and human.stdout.startswith("valid: grant ")


def test_tampered_token_is_invalid(daemon: DaemonProcess) -> None:
    """A token with one character changed, in its claims or its signature, is invalid."""
    token = _grant(daemon)["token"]
    for part, position in ((1, 12), (2, 5), (2, -3)):
        code, out = _verify(daemon.home, _flip(token, part, position))
        assert code == 1 and out["valid"] is False
        assert out["reason"] in (
            "token signature does not verify",
            "token is malformed",
        ), out


def test_token_of_another_payload_is_invalid(daemon: DaemonProcess) -> None:
    """The signature of one grant's token does not carry another grant's claims."""
    first, second = _grant(daemon)["token"], _grant(daemon)["token"]
    spliced = ".".join([*first.split(".")[:2], second.split(".")[2]])
    code, out = _verify(daemon.home, spliced)
    assert code == 1 and out["reason"] == "token signature does not verify"


def test_expired_token_is_invalid(daemon: DaemonProcess) -> None:
    """A token past its grant's expiry is invalid and says it expired."""
    token = _grant(daemon, ttl="1s")["token"]
    time.sleep(1.2)
    code, out = _verify(daemon.home, token)
    assert (code, out["valid"], out["reason"]) == (1, False, "token has expired")
    human = run_cli(daemon.home, "token", "verify", token)
    assert human.returncode == 1 and "expired" in human.stdout


def test_token_of_an_unknown_key_is_invalid(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    """A well-formed token signed by a key this home does not know is invalid."""
    other = tmp_path / "other"
    init_home(other)
    stranger = load_signing_keys(Home(other))[-1]
    now = time.time()
    grant = Grant(
        grant_id="grt_000000000000",
        request_id="req_000000000000",
        vendor="braintree",
        scopes=("payments:read",),
        requested_by="braintree",
        approved_by=("policy",),
        activated_at=now,
        expires_at=now + 600,
        max_expires_at=now + 600,
    )
    code, out = _verify(daemon.home, issue_token(grant, stranger))
    assert code == 1 and "unknown key" in out["reason"]


@pytest.mark.parametrize(
    "text", ["hello", "kt1.x", "kt2.a.b", "kt1.!!!.???", "x" * 5000]
)
def test_garbage_is_not_a_token(home: Path, text: str) -> None:
    """Anything that is not a token is invalid (exit 1), never a crash."""
    code, out = _verify(home, text)
    assert code == 1 and out["valid"] is False
    assert out["reason"] in ("not a keyturn token", "token is malformed"), out


def test_token_read_from_stdin(daemon: DaemonProcess) -> None:
    """`token verify -` reads the token from stdin, keeping it out of the process list."""
    token = _grant(daemon)["token"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    command = [sys.executable, "-m", "keyturn.console.cli", "token", "verify", "-"]
    done = subprocess.run(
        [*command, "--home", str(daemon.home)],
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("valid: ")


# Online.


def test_online_check_of_a_live_grant(daemon: DaemonProcess) -> None:
    """--online asks the daemon too; a live grant's token is valid both ways."""
    result = _grant(daemon)
    code, out = _verify(daemon.home, result["token"], "--online")
    assert code == 0, out
    assert out["online"]["valid"] is True
    assert out["online"]["grant"]["grant_id"] == result["grant"]["grant_id"]


def test_online_check_sees_revocation(daemon: DaemonProcess) -> None:
    """A revoked grant's token still verifies offline, and online it is revoked."""
    result = _grant(daemon)
    with daemon.client("oncall") as client:
        client.revoke(result["grant"]["grant_id"], "incident")

    code, out = _verify(daemon.home, result["token"])
    assert code == 0, "offline, nothing knows about the revocation"
    code, out = _verify(daemon.home, result["token"], "--online")
    assert (code, out["valid"], out["reason"]) == (1, False, "grant was revoked")
    human = run_cli(daemon.home, "token", "verify", result["token"], "--online")
    assert human.returncode == 1 and "revoked" in human.stdout


def test_online_check_sees_release(daemon: DaemonProcess) -> None:
    """A released grant's token is invalid online."""
    result = _grant(daemon)
    with daemon.client("braintree") as client:
        client.release(result["grant"]["grant_id"])
    code, out = _verify(daemon.home, result["token"], "--online", "--as", "auditor")
    assert (code, out["reason"]) == (1, "grant was released")


def test_online_check_without_daemon_is_unreachable(daemon: DaemonProcess) -> None:
    """--online with no daemon listening exits 3, within the CLI's time limit."""
    token = _grant(daemon)["token"]
    daemon.stop()
    began = time.monotonic()
    code, out = _verify(daemon.home, token, "--online")
    assert code == 3 and out["error"]["code"] == "unreachable"
    assert time.monotonic() - began < 10


# Rotation.


def test_rotation_keeps_old_tokens_valid(daemon: DaemonProcess) -> None:
    """After `keys rotate` and a restart, new tokens use the new key and old ones verify."""
    old = _grant(daemon)
    with daemon.client() as client:
        old_kid = client.status()["key_id"]

    code, out = cli_json(daemon.home, "keys", "rotate")
    assert code == 0, out
    new_kid = out["key_id"]
    assert new_kid != old_kid and out["keys"] == 2
    daemon.restart()

    with daemon.client() as client:
        assert client.status()["key_id"] == new_kid
    new = _grant(daemon)
    assert _verify(daemon.home, new["token"])[1]["key_id"] == new_kid
    for token in (old["token"], new["token"]):
        code, out = _verify(daemon.home, token, "--online")
        assert code == 0, out
    with daemon.client("braintree") as client:
        again = client.get(old["grant"]["grant_id"])["token"]
    assert again == old["token"], "the old grant's token is still issued by its key"

    daemon.stop()
    report = verify_home(daemon.home)
    assert report.ok, report.first_bad
    assert report.checkpoints >= 2


def test_rotation_human_output(home: Path) -> None:
    """`keys rotate` says which key it made and that older keys stay."""
    done = run_cli(home, "keys", "rotate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("new signing key k")
    assert len(list(Home(home).signing.glob("*.pub"))) == 2
    assert len(load_signing_keys(Home(home))) == 2
