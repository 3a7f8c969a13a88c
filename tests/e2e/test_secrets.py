"""No secret leaves through a side door: private keys and tokens never appear in the
daemon's log, the event stream, the audit journal or export, or an error message."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from conftest import DaemonProcess, run_cli
from cryptography.hazmat.primitives import serialization

from keyturn.shared.client import Client, connect_info
from keyturn.shared.errors import KeyturnError
from keyturn.shared.keys import Home, load_curve_secret, load_signing_keys

WATCH_READY_S = 1.5
"""Time for `keyturn watch` to connect and subscribe before events go out."""
WATCH_CATCH_UP_S = 10.0
"""Time for `keyturn watch` to print the last event."""


class DebugDaemon(DaemonProcess):
    """The real daemon logging at DEBUG, the most it ever says."""

    def start(self, *, wait: bool = True) -> None:
        """Start with ``--log-level debug`` and wait until it answers."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed right after the start
        command = [sys.executable, "-m", "keyturn.console.cli", "daemon"]
        command += ["--home", str(self.home), "--log-level", "debug"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
        self.proc = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        log.close()
        if wait:
            self.wait_ready()


@pytest.fixture
def chatty(home: Path, tmp_path: Path) -> Iterator[DebugDaemon]:
    """A daemon logging at DEBUG on a fresh home."""
    process = DebugDaemon(home, tmp_path / "daemon.log")
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


def _key_secrets(home: Path) -> dict[str, str]:
    """Every private key of the home, in each form it could leak in."""
    paths = Home(home)
    found: dict[str, str] = {}
    for path in sorted(paths.keys.glob("*.key_secret")):
        name = path.name.removesuffix(".key_secret")
        found[f"{name} curve secret"] = load_curve_secret(paths, name)[1].decode()
    for number, key in enumerate(load_signing_keys(paths)):
        raw = key.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        found[f"signing key {number} hex"] = raw.hex()
        found[f"signing key {number} base64"] = base64.b64encode(raw).decode()[:40]
        found[f"signing key {number} base64url"] = base64.urlsafe_b64encode(
            raw
        ).decode()[:40]
    for path in sorted(paths.signing.glob("*.pem")):
        body = "".join(path.read_text().splitlines()[1:-1])
        found[f"{path.name} PEM body"] = body
    return found


def _token_secrets(tokens: list[str]) -> dict[str, str]:
    """Each token, and its signature alone (the claims are public: grant fields)."""
    found = {}
    for number, token in enumerate(tokens):
        found[f"token {number}"] = token
        found[f"token {number} signature"] = token.rsplit(".", 1)[1]
    return found


def _assert_clean(where: str, text: str, secrets: dict[str, str]) -> None:
    leaked = [name for name, secret in secrets.items() if secret in text]
    assert not leaked, f"{where} holds {leaked}"


def _tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    return f"{head}.{payload}.{signature[:-4]}AAAA"


def _make_tokens(process: DaemonProcess) -> tuple[list[str], list[str]]:
    """Grants of every kind, and ids of what was made; returns (tokens, grant ids)."""
    tokens: list[str] = []
    grants: list[str] = []
    with process.client("braintree") as vendor:
        made = vendor.request("braintree", ["payments:read"], ttl="5m", reason="INC-1")
        tokens.append(made["token"])
        grants.append(made["grant"]["grant_id"])
        tokens.append(vendor.get(grants[0])["token"])
        tokens.append(vendor.extend(grants[0], "2m")["token"])
    with process.client("model-host") as host, process.client("oncall") as oncall:
        pending = host.request("model-host", ["prompts:read"], ttl="5m", reason="eval")
        oncall.approve(pending["request"]["request_id"])
        got = host.get(pending["request"]["request_id"])
        tokens.append(got["token"])
        grants.append(got["grant"]["grant_id"])
    return tokens, grants


def _provoke_errors(
    process: DaemonProcess, tokens: list[str], grants: list[str]
) -> str:
    """Every kind of refusal, through the client and the CLI; returns what was said."""
    said: list[str] = []
    with process.client("admin") as admin:
        for token in (
            tokens[0],
            _tampered(tokens[0]),
            tokens[0] + "x",
            "kt1." + "A" * 90,
        ):
            said.append(repr(admin.verify(token)))
        for op, args in (
            ("verify", {"token": tokens[0].encode()}),
            ("extend", {"grant_id": grants[0], "by": tokens[0]}),
            ("revoke", {"grant_id": tokens[0]}),
            ("get", {"id": tokens[1]}),
            ("request", {"vendor": tokens[2], "scopes": [tokens[2]], "reason": "x"}),
        ):
            with pytest.raises(KeyturnError) as refused:
                admin.call(op, args)
            said.append(f"{refused.value.code}: {refused.value.message}")
        admin.revoke(grants[0], "leak test")
        admin.lockdown("leak test")
        admin.lift("leak test")
    commands = [
        ("token", "verify", _tampered(tokens[3])),
        ("token", "verify", tokens[0], "--online"),
        ("token", "verify", tokens[3] + "x"),
        ("request", "braintree", "payments:admin", "--ttl", "5m", "--reason", "x"),
        ("extend", grants[1], "--by", "99h"),
        ("revoke", tokens[3]),
        ("approve", tokens[3]),
        ("lockdown", "--reason", "x", "--as", "auditor"),
    ]
    for command in commands:
        for flags in ((), ("--json",)):
            done = run_cli(process.home, *command, *flags)
            assert done.returncode != 0 or command[1] == "verify", (command, done)
            said.append(done.stdout + done.stderr)
    return "\n".join(said)


def _stranger_knocks(process: DaemonProcess) -> None:
    """An unknown key tries to connect: its refusal is logged (with a fingerprint only)."""
    api, _, server, _, _ = connect_info(process.home, "admin")
    public, secret = zmq.curve_keypair()
    with Client(api, server, public, secret, timeout_s=2.0) as client:
        with pytest.raises(KeyturnError):
            client.status()


def test_no_secret_in_logs_events_exports_or_errors(
    chatty: DebugDaemon, tmp_path: Path
) -> None:
    """Keys and tokens never show in the log, `watch`, `audit export` or error messages."""
    home = chatty.home
    watch_out = tmp_path / "watch.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYTURN_")}
    with open(watch_out, "wb") as sink:
        watch = subprocess.Popen(
            [sys.executable, "-m", "keyturn.console.cli", "watch", "--json"]
            + ["--heartbeats", "--home", str(home)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        time.sleep(WATCH_READY_S)
        tokens, grants = _make_tokens(chatty)
        errors = _provoke_errors(chatty, tokens, grants)
        _stranger_knocks(chatty)
        with chatty.client() as admin:
            last = admin.status()["seq"]
        _wait_for(watch_out, f'"seq": {last},')
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=10)
    chatty.stop()

    secrets = _key_secrets(home) | _token_secrets(tokens)
    key_files = "".join(
        p.read_text() for p in Home(home).keys.rglob("*") if p.is_file()
    )
    assert all(secrets[name] in key_files for name in secrets if "curve" in name)
    assert len(chatty.log().splitlines()) > 20, "the DEBUG log says a lot"
    assert len(set(tokens)) >= 3, "extend issued a new token"
    watched = watch_out.read_text()
    assert '"type": "grant.active"' in watched and "token_fp" in watched
    _assert_clean("the daemon's log", chatty.log(), secrets)
    _assert_clean("`keyturn watch --json`", watched, secrets)
    _assert_clean("error messages", errors, secrets)
    for fmt in ("jsonl", "csv"):
        done = run_cli(home, "audit", "export", "--format", fmt)
        assert done.returncode == 0 and "grant.active" in done.stdout
        _assert_clean(
            f"`audit export --format {fmt}`", done.stdout + done.stderr, secrets
        )
    journal = Home(home).journal.read_bytes().decode("latin-1")
    _assert_clean("the journal", journal, secrets)
    _assert_clean("the snapshot", Home(home).snapshot.read_text(), secrets)
    verify = run_cli(home, "audit", "verify")
    _assert_clean("`audit verify`", verify.stdout + verify.stderr, secrets)


def test_secret_key_text_is_not_echoed_on_a_bad_key_file(home: Path) -> None:
    """A loose secret key file is refused by name, without printing what is in it."""
    paths = Home(home)
    secret = load_curve_secret(paths, "admin")[1].decode()
    os.chmod(paths.secret_key("admin"), 0o644)
    done = run_cli(home, "status")
    assert done.returncode == 2
    assert "admin.key_secret" in done.stderr and "chmod 600" in done.stderr
    assert secret not in done.stdout + done.stderr


def _wait_for(path: Path, text: str) -> None:
    deadline = time.monotonic() + WATCH_CATCH_UP_S
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        time.sleep(0.1)
    pytest.fail(f"`keyturn watch` did not print {text!r}:\n{path.read_text()[-2000:]}")
