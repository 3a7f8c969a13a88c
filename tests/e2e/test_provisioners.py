"""Provisioners that fail or hang never hold up anything else (C-05)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, cli_json
from test_crash_and_cases import journal_records

from keyturn.shared.keys import Home

HANGING_PROVISIONER = """#!/bin/sh
[ "$1" = grant ] && exit 0
[ -f "{flag}" ] && exit 0
echo "$KEYTURN_GRANT_ID" >> "{log}"
sleep 30
"""
GRANTS_OF_OTHERS = 10_000
STUCK_GRANTS = 12


def _add_stuck_vendor(home: Path) -> Path:
    script = home / "provision.sh"
    flag = home / "provisioner-back"
    script.write_text(
        HANGING_PROVISIONER.format(flag=flag, log=home / "revoke-tries.log")
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    config = Home(home).config
    text = config.read_text().replace(
        "\n# Identities made by",
        f"""
[vendors.stuck]
name = "Stuck Inc"
scopes = ["files:read"]
max_ttl = "1h"

[vendors.stuck.provisioner]
command = ["{script}"]
timeout = "1s"

[[rules]]
name = "stuck-reads"
vendors = ["stuck"]
scopes = ["files:read"]
action = "approve"

# Identities made by""",
        1,
    )
    config.write_text(text)
    return flag


def _bulk_grants(
    daemon: DaemonProcess, vendor: str, scope: str, count: int, ttl: int
) -> list[str]:
    ids: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with daemon.client("oncall") as client:
            for _ in range(n):
                gid = client.request(vendor, [scope], ttl=ttl, reason="bulk")["grant"][
                    "grant_id"
                ]
                with lock:
                    ids.append(gid)

    shares = [count // 8 + (1 if i < count % 8 else 0) for i in range(8)]
    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids


def test_stuck_revocation_blocks_nothing_else(daemon: DaemonProcess) -> None:
    """C-05: with one vendor's provisioner down, lockdown, expiry, ls and request stay prompt."""
    flag = _add_stuck_vendor(daemon.home)
    time.sleep(0.2)
    with daemon.client() as client:
        client.status()
    stuck = _bulk_grants(daemon, "stuck", "files:read", STUCK_GRANTS, 3600)
    others = _bulk_grants(daemon, "sentry", "errors:read", GRANTS_OF_OTHERS, 3600)
    with daemon.client("oncall") as client:
        client.revoke(stuck[0], "first")
        assert client.get(stuck[0])["grant"]["state"] == "revoking"
        short = client.request("braintree", ["payments:read"], ttl=2, reason="t")[
            "grant"
        ]
        time.sleep(2.5)
        assert client.get(short["grant_id"])["grant"]["state"] == "expired"

        began = time.monotonic()
        result = client.lockdown("provisioner test")
        assert time.monotonic() - began < 3.0
        assert result["revoked"] == STUCK_GRANTS - 1 + GRANTS_OF_OTHERS

        began = time.monotonic()
        listing = client.list()
        assert time.monotonic() - began < 1.0
    states = {g["grant_id"]: g["state"] for g in listing["grants"]}
    assert set(states) == set(stuck), "every other grant ended at once"
    assert set(states.values()) == {"revoking"}
    assert not set(others) & set(states)

    time.sleep(3.5)
    tries = [
        r for r in journal_records(daemon.home) if r["type"] == "provisioner.failed"
    ]
    assert {r["grant_id"] for r in tries} >= {stuck[0]}
    assert max(r["attempt"] for r in tries if r["grant_id"] == stuck[0]) >= 2

    code, out = cli_json(
        daemon.home, "force", stuck[0], "--reason", "vendor confirmed by phone"
    )
    assert code == 0 and out["grant"]["state"] == "revoked"
    code, out = cli_json(
        daemon.home, "force", stuck[1], "--reason", "x", "--as", "oncall"
    )
    assert code == 1 and out["error"]["code"] == "forbidden"
    forced = [
        r
        for r in journal_records(daemon.home)
        if r["type"] == "grant.revoked" and r["grant"]["grant_id"] == stuck[0]
    ]
    assert (
        len(forced) == 1
        and forced[0]["forced"] is True
        and forced[0]["actor"] == "admin"
    )

    flag.touch()
    deadline = time.monotonic() + 70
    remaining: list[Any] = stuck
    while remaining and time.monotonic() < deadline:
        time.sleep(1)
        with daemon.client() as client:
            remaining = client.list()["grants"]
    assert remaining == [], "revocations finish once the provisioner is back"
    assert os.path.exists(daemon.home / "revoke-tries.log")
