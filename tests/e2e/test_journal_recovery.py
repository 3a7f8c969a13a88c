"""A daemon starting on a journal a crash or a disk left behind: a torn tail is cut and
recorded, damage anywhere else stops it with a message that names the journal."""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import DaemonProcess, cli_json

from keyturn.daemon.audit import read_records, verify_home
from keyturn.daemon.journal import MAGIC, iter_frames
from keyturn.shared.errors import KeyturnError
from keyturn.shared.keys import Home

START_FAIL_TIMEOUT_S = 15.0
"""A daemon that refuses to start has exited by then."""


@pytest.fixture
def slow_snapshots(home: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon that snapshots only at its first turn, so its journal runs ahead of it."""
    config = Home(home).config
    text = config.read_text()
    config.write_text(
        text.replace('snapshot_interval = "5s"', 'snapshot_interval = "1h"')
    )
    process = DaemonProcess(home, tmp_path / "daemon.log")
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


def _grants(process: DaemonProcess, count: int) -> list[str]:
    ids = []
    with process.client("braintree") as client:
        for number in range(count):
            result = client.request(
                "braintree", ["payments:read"], ttl="10m", reason=f"INC-{number}"
            )
            ids.append(result["grant"]["grant_id"])
    return ids


def _frames(home: Path) -> list[tuple[int, int]]:
    """(offset, end) of every frame of the journal."""
    data = Home(home).journal.read_bytes()
    return [(start, end) for start, end, _ in iter_frames(data, len(MAGIC))]


def _records(home: Path) -> list[dict[str, Any]]:
    return list(read_records(Home(home).journal))


def _append(home: Path, data: bytes) -> None:
    with open(Home(home).journal, "ab") as handle:
        handle.write(data)


def _start_refused(process: DaemonProcess) -> tuple[int, str]:
    """Start the daemon expecting it to refuse; return its exit status and log."""
    process.start(wait=False)
    assert process.proc is not None
    deadline = time.monotonic() + START_FAIL_TIMEOUT_S
    while process.proc.poll() is None and time.monotonic() < deadline:
        if _answers(process):
            process.proc.kill()
            process.proc.wait()
            pytest.fail(f"the daemon started on a damaged journal:\n{process.log()}")
        time.sleep(0.05)
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()
        pytest.fail(f"the daemon neither served nor exited:\n{process.log()}")
    return process.proc.returncode, process.log()


def _answers(process: DaemonProcess) -> bool:
    try:
        with process.client(timeout_s=0.3) as client:
            client.status()
    except KeyturnError:
        return False
    return True


def _assert_cut_and_serving(process: DaemonProcess, garbage: int, last: int) -> None:
    records = _records(process.home)
    cut = [r for r in records if r["type"] == "journal.cut"]
    assert len(cut) == 1, cut
    assert cut[0]["seq"] == last + 1 and cut[0]["bytes_cut"] == garbage
    assert cut[0]["actor"] == "system" and cut[0]["reason"]
    assert records[last]["type"] == "journal.cut"
    assert records[last + 1]["type"] == "daemon.started"
    assert "cut a torn last journal record" in process.log()
    with process.client("braintree") as client:
        fresh = client.request("braintree", ["payments:read"], ttl="5m", reason="after")
    assert fresh["grant"]["state"] == "active"


# A torn tail is cut, recorded, and service goes on.


def test_garbage_after_a_clean_stop_is_cut_and_recorded(daemon: DaemonProcess) -> None:
    """Bytes that are no whole record after the last one are cut at start and recorded."""
    grant_id = _grants(daemon, 1)[0]
    daemon.stop()
    last = _records(daemon.home)[-1]["seq"]
    garbage = struct.pack(">I", 300) + os.urandom(41)
    _append(daemon.home, garbage)

    daemon.start()
    _assert_cut_and_serving(daemon, len(garbage), last)
    with daemon.client() as client:
        assert client.get(grant_id)["grant"]["state"] == "active"
    daemon.stop()
    assert verify_home(daemon.home).ok


def test_partial_length_prefix_is_cut(daemon: DaemonProcess) -> None:
    """A tail shorter than a length prefix (a write cut after two bytes) is cut."""
    daemon.stop()
    last = _records(daemon.home)[-1]["seq"]
    _append(daemon.home, b"\x00\x00")
    daemon.start()
    _assert_cut_and_serving(daemon, 2, last)


def test_half_written_record_after_a_crash_is_cut(
    slow_snapshots: DaemonProcess,
) -> None:
    """A record half written when the daemon died is cut; the grants before it stay."""
    process = slow_snapshots
    kept, _lost = _grants(process, 2)
    process.kill()
    frames = _frames(process.home)
    start, end = frames[-1]
    journal = Home(process.home).journal
    data = journal.read_bytes()
    journal.write_bytes(data[: start + (end - start) // 2])
    last = len(frames) - 1

    process.start()
    _assert_cut_and_serving(process, (end - start) // 2, last)
    with process.client() as client:
        assert client.get(kept)["grant"]["state"] == "active"
    process.stop()
    report = verify_home(process.home)
    assert report.ok, report.first_bad


def test_cut_is_in_the_audit_trail(daemon: DaemonProcess) -> None:
    """The cut is a record like any other, and the journal verifies after it."""
    daemon.stop()
    _append(daemon.home, b"\x00\x00\x00\x10abc")
    daemon.start()
    daemon.stop()
    code, _ = cli_json(daemon.home, "audit", "verify")
    assert code == 0
    cut = [r for r in _records(daemon.home) if r["type"] == "journal.cut"]
    assert cut and cut[0]["bytes_cut"] == 7


def test_restart_starts_from_the_snapshot(daemon: DaemonProcess) -> None:
    """A clean restart loads the snapshot it wrote and replays nothing before it."""
    _grants(daemon, 2)
    with daemon.client("oncall") as oncall:
        oncall.request("model-host", ["prompts:read"], ttl="5m", reason="pending")
    daemon.stop()
    seq = _records(daemon.home)[-1]["seq"]
    daemon.start()
    log = daemon.log()
    assert "snapshot unreadable" not in log, log
    assert f"snapshot at {seq}, 0 journal records replayed" in log, log


# Damage anywhere but the tail stops the daemon and changes nothing.


def test_damaged_record_in_the_middle_stops_the_daemon(
    slow_snapshots: DaemonProcess,
) -> None:
    """A damaged record with records after it stops the daemon, naming the journal."""
    process = slow_snapshots
    _grants(process, 3)
    process.kill()
    frames = _frames(process.home)
    start, end = frames[len(frames) // 2 + 1]
    journal = Home(process.home).journal
    data = bytearray(journal.read_bytes())
    data[start + 10 : start + 20] = b"\xc1" * 10
    journal.write_bytes(bytes(data))

    code, log = _start_refused(process)
    assert code != 0
    assert f"journal {journal}" in log and "damaged" in log
    assert "keyturn audit verify" in log
    assert journal.read_bytes() == bytes(data), "a refused start changes nothing"


def test_edited_record_in_the_middle_stops_the_daemon(
    slow_snapshots: DaemonProcess,
) -> None:
    """A record edited after the snapshot point breaks the chain and stops the daemon."""
    process = slow_snapshots
    _grants(process, 3)
    process.kill()
    journal = Home(process.home).journal
    data = journal.read_bytes()
    start, end = _frames(process.home)[3]
    record = msgpack.unpackb(data[start + 4 : end], raw=False)
    record["actor"] = "somebody-else"
    payload = msgpack.packb(record, use_bin_type=True)
    edited = data[:start] + struct.pack(">I", len(payload)) + payload + data[end:]
    journal.write_bytes(edited)

    code, log = _start_refused(process)
    assert code != 0
    assert f"journal {journal}" in log and "does not chain" in log
    assert journal.read_bytes() == edited


def test_journal_shorter_than_its_snapshot_stops_the_daemon(
    daemon: DaemonProcess,
) -> None:
    """A journal that lost records the snapshot had seen stops the daemon."""
    _grants(daemon, 2)
    daemon.stop()
    frames = _frames(daemon.home)
    journal = Home(daemon.home).journal
    shortened = journal.read_bytes()[: frames[-3][1]]
    journal.write_bytes(shortened)

    code, log = _start_refused(daemon)
    assert code != 0
    assert f"journal {journal}" in log and "shorter" in log
    assert journal.read_bytes() == shortened


def test_corrupt_length_in_the_middle_stops_the_daemon(
    slow_snapshots: DaemonProcess,
) -> None:
    """A length prefix damaged in the middle is damage, not a torn tail to cut away."""
    process = slow_snapshots
    _grants(process, 3)
    process.kill()
    frames = _frames(process.home)
    start, _ = frames[len(frames) // 2]
    journal = Home(process.home).journal
    data = bytearray(journal.read_bytes())
    data[start : start + 4] = struct.pack(">I", 0xFFFFFFF0)
    journal.write_bytes(bytes(data))

    code, log = _start_refused(process)
    assert code != 0
    assert f"journal {journal}" in log and "damaged" in log
    assert journal.read_bytes() == bytes(data), "records after the damage are kept"


def test_start_after_a_refusal_and_a_repair(slow_snapshots: DaemonProcess) -> None:
    """After a refused start, the repaired journal starts: no lock or state is left."""
    process = slow_snapshots
    _grants(process, 2)
    process.kill()
    journal = Home(process.home).journal
    original = journal.read_bytes()
    start, _ = _frames(process.home)[2]
    journal.write_bytes(original[: start + 8] + b"\xc1" * 8 + original[start + 16 :])
    code, _ = _start_refused(process)
    assert code != 0

    journal.write_bytes(original)
    process.start()
    assert process.stop(signal.SIGTERM) == 0
    assert verify_home(process.home).ok
