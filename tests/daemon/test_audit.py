"""The journal as an auditor checks it: verify names the first bad record, export
hides nothing and leaks nothing."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import DaemonProcess, cli_json, run_cli

from keyturn.console.homes import init_home
from keyturn.daemon.audit import CSV_COLUMNS, verify_home, write_csv
from keyturn.daemon.core import Core, checkpoint_message
from keyturn.daemon.journal import GENESIS, MAGIC, Journal, iter_frames, record_hash
from keyturn.daemon.ledger import Ledger
from keyturn.shared.config import load_config
from keyturn.shared.errors import Refused
from keyturn.shared.keys import Home, load_signing_keys
from keyturn.shared.model import Grant, Request, RequestState
from keyturn.shared.times import parse_rfc3339

VERIFY_100K_LIMIT_S = 10.0
"""100,000 records must verify within this (about 1 s measured on two cores)."""
CHECKPOINT_EVERY = 4
"""Records between checkpoints in the journal the tests tamper with."""


# A journal written by the real daemon, copied for each test.


@pytest.fixture(scope="module")
def written() -> Iterator[Path]:
    """A home whose journal a real daemon wrote: grants, a review, ends, a refusal."""
    root = Path(tempfile.mkdtemp(prefix="kt-audit-", dir="/tmp"))
    shutil.rmtree(root)
    init_home(root)
    config = Home(root).config
    text = config.read_text()
    config.write_text(
        text.replace(
            "checkpoint_every = 1000", f"checkpoint_every = {CHECKPOINT_EVERY}"
        )
    )
    logs = Path(tempfile.mkdtemp(prefix="kt-log-"))
    process = DaemonProcess(root, logs / "daemon.log")
    process.start()
    try:
        _make_history(process)
    finally:
        process.stop()
    yield root
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(logs, ignore_errors=True)


def _make_history(process: DaemonProcess) -> None:
    with process.client("braintree") as vendor, process.client("oncall") as oncall:
        first = vendor.request(
            "braintree", ["payments:read"], ttl="10m", reason="INC-1"
        )
        second = vendor.request(
            "braintree", ["payments:read"], ttl="5m", reason="INC-2"
        )
        pending = vendor.request(
            "braintree", ["payments:refund"], ttl="10m", reason="r"
        )
        oncall.approve(pending["request"]["request_id"])
        oncall.revoke(first["grant"]["grant_id"], "done")
        vendor.release(second["grant"]["grant_id"])
    with process.client("auditor") as auditor:
        with pytest.raises(Refused, match="may not"):
            auditor.lockdown("not allowed")


@pytest.fixture
def copy(written: Path, tmp_path: Path) -> Home:
    """A fresh copy of the written home, to tamper with."""
    target = tmp_path / "home"
    shutil.copytree(written, target)
    return Home(target)


def _payloads(home: Home) -> list[bytes]:
    data = home.journal.read_bytes()
    frames = list(iter_frames(data, len(MAGIC)))
    assert all(payload is not None for _, _, payload in frames)
    return [payload for _, _, payload in frames if payload is not None]


def _write(home: Home, payloads: list[bytes]) -> None:
    parts = [MAGIC]
    for payload in payloads:
        parts += [struct.pack(">I", len(payload)), payload]
    home.journal.write_bytes(b"".join(parts))


def _offset(payloads: list[bytes], index: int) -> int:
    return len(MAGIC) + sum(4 + len(p) for p in payloads[:index])


def _unpack(payload: bytes) -> dict[str, Any]:
    record: dict[str, Any] = msgpack.unpackb(payload, raw=False)
    return record


def _pack(record: dict[str, Any]) -> bytes:
    payload: bytes = msgpack.packb(record, use_bin_type=True)
    return payload


def _index_of(payloads: list[bytes], kind: str, nth: int = 0) -> int:
    found = [i for i, p in enumerate(payloads) if _unpack(p)["type"] == kind]
    return found[nth]


def _first_bad(home: Home) -> dict[str, Any]:
    report = verify_home(home.root)
    assert not report.ok
    assert report.first_bad is not None
    return report.first_bad.to_json()


# A journal as the daemon left it.


def test_daemon_journal_verifies(copy: Home) -> None:
    """A journal the daemon wrote verifies: every record, every checkpoint, exit 0."""
    count = len(_payloads(copy))
    code, out = cli_json(copy.root, "audit", "verify")
    assert code == 0, out
    assert out["ok"] is True and out["first_bad"] is None
    assert out["records"] == count
    assert out["checkpoints"] >= 2
    assert out["unsigned"] == 0 and out["snapshot_seq"] == count
    assert isinstance(out["seconds"], float)
    human = run_cli(copy.root, "audit", "verify")
    assert human.returncode == 0 and "journal ok" in human.stdout


def test_empty_journal_verifies(home: Path) -> None:
    """A journal with no record yet (only its magic) verifies with zero records."""
    Home(home).journal.write_bytes(MAGIC)
    code, out = cli_json(home, "audit", "verify")
    assert (code, out["ok"], out["records"]) == (0, True, 0)


def test_no_journal_is_a_usage_error(home: Path) -> None:
    """Verifying a home without a journal says so with exit 2, not a traceback."""
    done = run_cli(home, "audit", "verify")
    assert done.returncode == 2
    assert "no journal" in done.stderr and "Traceback" not in done.stderr


# Each kind of tampering is named at the first record it touches.


def test_edited_record_is_named(copy: Home) -> None:
    """An edited record (its actor changed) is named by its seq, exit 1."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "grant.revoked")
    record = _unpack(payloads[index])
    record["actor"] = "nobody"
    payloads[index] = _pack(record)
    _write(copy, payloads)

    code, out = cli_json(copy.root, "audit", "verify")
    assert code == 1 and out["ok"] is False
    bad = out["first_bad"]
    assert bad["seq"] == record["seq"]
    assert bad["offset"] == _offset(payloads, index)
    assert "changed" in bad["problem"]
    assert out["records"] == index


def test_deleted_record_is_named(copy: Home) -> None:
    """A deleted record is named as missing, at the place it was."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "grant.revoked")
    seq = _unpack(payloads[index])["seq"]
    del payloads[index]
    _write(copy, payloads)

    bad = _first_bad(copy)
    assert bad["seq"] == seq
    assert bad["offset"] == _offset(payloads, index)
    assert "missing" in bad["problem"]


def test_inserted_record_with_forged_link_is_named(copy: Home) -> None:
    """A record inserted with a correctly computed prev and the next seq is named."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "grant.revoked")
    before = _unpack(payloads[index - 1])
    forged = {
        "seq": before["seq"] + 1,
        "type": "lockdown.lifted",
        "at": before["at"],
        "actor": "admin",
        "prev": record_hash(payloads[index - 1]),
    }
    payloads.insert(index, _pack(forged))
    _write(copy, payloads)

    bad = _first_bad(copy)
    assert bad["seq"] == forged["seq"]
    assert bad["offset"] == _offset(payloads, index)
    assert "inserted" in bad["problem"]


def test_inserted_record_with_wrong_link_is_named(copy: Home) -> None:
    """A record inserted without a valid prev is named as not part of the chain."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "grant.released")
    before = _unpack(payloads[index - 1])
    forged = {**before, "seq": before["seq"] + 1, "prev": bytes(32), "actor": "x"}
    payloads.insert(index, _pack(forged))
    _write(copy, payloads)

    bad = _first_bad(copy)
    assert bad["seq"] == forged["seq"]
    assert bad["offset"] == _offset(payloads, index)
    assert "inserted" in bad["problem"]


def test_reordered_records_are_named(copy: Home) -> None:
    """Two records swapped: the first seq out of place is named."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "grant.revoked")
    seq = _unpack(payloads[index])["seq"]
    payloads[index], payloads[index + 1] = payloads[index + 1], payloads[index]
    _write(copy, payloads)

    bad = _first_bad(copy)
    assert bad["seq"] == seq
    assert bad["offset"] == _offset(payloads, index)
    assert "out of order" in bad["problem"]


def test_copied_record_is_named(copy: Home) -> None:
    """An earlier record copied to the end (a replay) is named as a copy."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "grant.active")
    payloads.append(payloads[index])
    _write(copy, payloads)

    bad = _first_bad(copy)
    assert bad["seq"] == _unpack(payloads[index])["seq"]
    assert bad["offset"] == _offset(payloads, len(payloads) - 1)
    assert "again" in bad["problem"]


def test_bytes_cut_from_the_middle_are_named(copy: Home) -> None:
    """Bytes cut out of a record in the middle make it unreadable, named by its seq."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "grant.active", 1)
    seq = _unpack(payloads[index])["seq"]
    start = _offset(payloads, index) + 30
    data = copy.journal.read_bytes()
    copy.journal.write_bytes(data[:start] + data[start + 20 :])

    code, out = cli_json(copy.root, "audit", "verify")
    assert code == 1
    bad = out["first_bad"]
    assert bad["seq"] == seq
    assert bad["offset"] == _offset(payloads, index)
    assert "unreadable" in bad["problem"]
    assert f"seq {seq + 1}" in bad["problem"], "says where records resume"


def test_torn_last_record_is_named(copy: Home) -> None:
    """A journal cut in the middle of its last record names that record as torn."""
    payloads = _payloads(copy)
    last = len(payloads) - 1
    data = copy.journal.read_bytes()
    copy.journal.write_bytes(data[: _offset(payloads, last) + 9])

    bad = _first_bad(copy)
    assert bad["seq"] == _unpack(payloads[last])["seq"]
    assert bad["offset"] == _offset(payloads, last)
    assert "torn" in bad["problem"]


def test_lost_tail_is_found_with_the_snapshot(copy: Home) -> None:
    """A journal cut at a record boundary before the snapshot's seq lost its tail."""
    payloads = _payloads(copy)
    kept = len(payloads) - 2
    _write(copy, payloads[:kept])

    bad = _first_bad(copy)
    assert bad["seq"] == kept + 1
    assert bad["offset"] == copy.journal.stat().st_size
    assert "tail was lost" in bad["problem"]


def test_edited_last_record_is_found_with_the_snapshot(copy: Home) -> None:
    """An edit of the last record, which nothing chains to, meets the snapshot."""
    payloads = _payloads(copy)
    record = _unpack(payloads[-1])
    record["at"] = record["at"] + 1
    payloads[-1] = _pack(record)
    _write(copy, payloads)

    bad = _first_bad(copy)
    assert bad["seq"] == record["seq"]
    assert "snapshot" in bad["problem"]


def test_wrong_checkpoint_signature_is_named(copy: Home) -> None:
    """A checkpoint whose signature was altered is named by its seq."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "audit.checkpoint")
    record = _unpack(payloads[index])
    record["sig"] = bytes([record["sig"][0] ^ 1]) + record["sig"][1:]
    payloads[index] = _pack(record)
    _write(copy, payloads)

    bad = _first_bad(copy)
    assert bad["seq"] == record["seq"]
    assert bad["offset"] == _offset(payloads, index)
    assert "signature does not verify" in bad["problem"]


def test_checkpoint_by_unknown_key_is_named(copy: Home) -> None:
    """A checkpoint by a key whose public half is not in keys/signing is named."""
    for public in copy.signing.glob("*.pub"):
        public.rename(public.with_suffix(".gone"))
    payloads = _payloads(copy)
    index = _index_of(payloads, "audit.checkpoint")

    bad = _first_bad(copy)
    assert bad["seq"] == _unpack(payloads[index])["seq"]
    assert "unknown key" in bad["problem"]


def test_recomputed_chain_is_caught_by_the_next_checkpoint(copy: Home) -> None:
    """An editor who recomputes every hash after an edit meets the next signature."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "grant.revoked")
    head = record_hash(payloads[index - 1])
    for position in range(index, len(payloads)):
        record = _unpack(payloads[position])
        if position == index:
            record["actor"] = "nobody"
        record["prev"] = head
        payloads[position] = _pack(record)
        head = record_hash(payloads[position])
    _write(copy, payloads)
    checkpoint = next(
        i
        for i in range(index, len(payloads))
        if _unpack(payloads[i])["type"] == "audit.checkpoint"
    )

    bad = _first_bad(copy)
    assert bad["seq"] == _unpack(payloads[checkpoint])["seq"]
    assert "signature does not verify" in bad["problem"]


def test_not_a_journal(copy: Home) -> None:
    """A file that is not a journal at all fails at byte 0 with no seq."""
    copy.journal.write_bytes(b"hello, this is not a journal")
    bad = _first_bad(copy)
    assert (bad["seq"], bad["offset"]) == (None, 0)
    assert "not a keyturn journal" in bad["problem"]


def test_human_report_names_the_record(copy: Home) -> None:
    """Without --json the report names the journal, seq, byte and problem."""
    payloads = _payloads(copy)
    index = _index_of(payloads, "grant.revoked")
    del payloads[index]
    _write(copy, payloads)

    done = run_cli(copy.root, "audit", "verify")
    assert done.returncode == 1
    assert str(copy.journal) in done.stdout
    assert f"byte {_offset(payloads, index)}" in done.stdout
    assert "missing" in done.stdout


# Scale.


def _build(home: Home, count: int) -> None:
    """Write ``count`` records through the daemon's own Core and Journal."""
    journal = Journal(home.journal)
    journal.read()
    journal.open_for_append()
    core = Core(load_config(home.config), journal, Ledger(), load_signing_keys(home))
    now = time.time()
    number = 0
    while journal.last_seq < count - 1:
        request = Request(
            request_id=f"req_{number:012x}",
            vendor="braintree",
            scopes=("payments:read",),
            ttl_s=900,
            reason="load",
            requested_by="braintree",
            requested_at=now,
            expires_at=now + 900,
            approvals_needed=0,
        )
        approved = replace(request, state=RequestState.APPROVED)
        core.emit("request.approved", "policy", request=approved)
        grant = Grant(
            grant_id=f"grt_{number:012x}",
            request_id=request.request_id,
            vendor="braintree",
            scopes=request.scopes,
            requested_by="braintree",
            approved_by=("policy",),
            activated_at=now,
            expires_at=now + 900,
            max_expires_at=now + 900,
        )
        core.emit("grant.active", "policy", grant=grant, token_fp="tk:0123456789abcdef")
        core.ledger.grants.clear()
        core.ledger.decided_requests.clear()
        if core.checkpoint_due():
            core.checkpoint()
        number += 1
    core.checkpoint()
    journal.commit()
    journal.close()


def test_100k_records_verify_in_seconds(home: Path) -> None:
    """An auditor verifies 100,000 records (100 checkpoints) in seconds."""
    paths = Home(home)
    _build(paths, 100_000)
    report = verify_home(home)
    assert report.ok, report.first_bad
    assert report.records == 100_000
    assert report.checkpoints == 100
    assert report.seconds < VERIFY_100K_LIMIT_S, report.seconds


def test_checkpoint_message_is_what_is_signed(home: Path) -> None:
    """A checkpoint signs its own seq and the chain head before it, nothing else."""
    paths = Home(home)
    _build(paths, 10)
    records = [_unpack(p) for p in _payloads(paths)]
    last = records[-1]
    assert last["type"] == "audit.checkpoint" and last["upto"] == last["seq"] - 1
    key = load_signing_keys(paths)[-1].private.public_key()
    key.verify(last["sig"], checkpoint_message(last["seq"], last["prev"]))
    assert records[0]["prev"] == GENESIS


# Export.


def _export(home: Home, *args: str) -> tuple[int, str, str]:
    done = run_cli(home.root, "audit", "export", *args)
    return done.returncode, done.stdout, done.stderr


def test_export_jsonl_has_every_record(copy: Home) -> None:
    """JSON lines hold every record in order; hashes as hex, times as RFC 3339."""
    payloads = _payloads(copy)
    code, out, _ = _export(copy)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, len(payloads) + 1))
    for line, payload in zip(lines, payloads, strict=True):
        record = _unpack(payload)
        assert line["type"] == record["type"] and line["actor"] == record["actor"]
        assert bytes.fromhex(line["prev"]) == record["prev"]
        assert parse_rfc3339(line["at"]) == pytest.approx(record["at"], abs=0.001)
        if "sig" in record:
            assert bytes.fromhex(line["sig"]) == record["sig"]
    active = [r for r in lines if r["type"] == "grant.active"]
    assert active and all(r["token_fp"].startswith("tk:") for r in active)
    assert "kt1." not in out


def test_export_bounds_by_seq_and_time(copy: Home) -> None:
    """--since and --until take a seq or an RFC 3339 time, both ends included."""
    code, out, _ = _export(copy, "--since", "3", "--until", "7")
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [3, 4, 5, 6, 7]

    everything = [json.loads(line) for line in _export(copy)[1].splitlines()]
    middle = everything[len(everything) // 2]
    code, out, _ = _export(copy, "--since", middle["at"])
    after = [json.loads(line) for line in out.splitlines()]
    assert middle["seq"] in [r["seq"] for r in after]
    assert all(parse_rfc3339(r["at"]) >= parse_rfc3339(middle["at"]) for r in after)
    code, out, _ = _export(copy, "--until", middle["at"])
    before = [json.loads(line) for line in out.splitlines()]
    assert middle["seq"] in [r["seq"] for r in before]
    assert len({r["seq"] for r in before} | {r["seq"] for r in after}) == len(
        everything
    )


def test_export_bad_bound_is_a_usage_error(copy: Home) -> None:
    """A bound that is neither a seq nor a time is refused with exit 2, no output."""
    code, out, err = _export(copy, "--since", "last tuesday")
    assert code == 2 and out == ""
    assert "RFC 3339" in err


def test_export_csv_columns(copy: Home) -> None:
    """CSV has the documented columns; the rest of each record is JSON in detail."""
    code, out, _ = _export(copy, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == len(_payloads(copy))
    revoked = next(r for r in rows if r["type"] == "grant.revoked")
    assert revoked["grant_id"].startswith("grt_") and revoked["request_id"].startswith(
        "req_"
    )
    assert revoked["vendor"] == "braintree" and revoked["scopes"] == "payments:read"
    assert revoked["state"] == "revoked" and revoked["actor"] == "oncall"
    detail = json.loads(revoked["detail"])
    assert detail["grant"]["end_reason"] == "done" and len(detail["prev"]) == 64
    checkpoint = next(r for r in rows if r["type"] == "audit.checkpoint")
    assert len(json.loads(checkpoint["detail"])["sig"]) == 128


def test_export_csv_cells_never_run_as_formulas() -> None:
    """A cell that a spreadsheet would run as a formula is written as text."""
    out = io.StringIO()
    record = {"seq": 1, "at": 1.0, "type": "x", "actor": "=HYPERLINK(1)", "prev": b"\0"}
    write_csv(iter([record]), out)
    row = list(csv.reader(io.StringIO(out.getvalue())))[1]
    assert row[3] == "'=HYPERLINK(1)"


def test_export_of_a_damaged_journal_says_where_it_stopped(copy: Home) -> None:
    """Export writes every record before unreadable bytes, then names the offset."""
    payloads = _payloads(copy)
    index = len(payloads) // 2
    data = copy.journal.read_bytes()
    cut = _offset(payloads, index) + 10
    copy.journal.write_bytes(data[:cut] + b"\xff" * 20 + data[cut + 20 :])
    code, out, err = _export(copy)
    assert code == 1
    assert len(out.splitlines()) == index
    assert f"offset {_offset(payloads, index)}" in err
