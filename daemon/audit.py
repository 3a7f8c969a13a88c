"""Audit over the journal file: verify its chain and signatures, export its records.

Pure functions over files, no sockets and no daemon: an auditor runs them on
a copy of the state folder as well as on a live one.

Verification walks every frame in order and stops at the first record that
does not verify, naming its ``seq``, its byte offset and what is wrong:

- the frame is unreadable (damage, bytes cut out, or a torn last write);
- the record does not chain to the one before it: the record before was
  edited, this one was edited, inserted or replaced;
- its ``seq`` is not the next one: records were deleted, reordered or copied;
- a checkpoint names an unknown key, covers the wrong range, or its Ed25519
  signature over (its ``seq``, the chain head before it) does not verify;
- the snapshot disagrees with the journal: the journal ends before the
  snapshot's ``seq`` (its tail was lost), or the record at that ``seq`` is
  not the one the snapshot saw.

A chain hash alone can be recomputed by whoever edits the file; the signed
checkpoints are what an editor cannot forge, so the records after the last
checkpoint (``unsigned`` in the report) are protected by the chain and the
snapshot only.
"""

from __future__ import annotations

import csv
import json
import math
import mmap
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyturn.daemon.core import checkpoint_message
from keyturn.daemon.journal import (
    GENESIS,
    MAGIC,
    decode_frame,
    find_next_record,
    iter_frames,
    record_hash,
)
from keyturn.shared.keys import Home, load_verify_keys
from keyturn.shared.times import parse_rfc3339, rfc3339
from keyturn.shared.tokens import TOKEN_PREFIX, token_fingerprint

__all__ = [
    "CSV_COLUMNS",
    "Bound",
    "Finding",
    "JournalUnreadable",
    "SnapshotMark",
    "VerifyReport",
    "export_record",
    "parse_bound",
    "read_records",
    "read_snapshot_mark",
    "select_records",
    "verify_home",
    "verify_journal",
    "write_csv",
    "write_jsonl",
]

CHECKPOINT_TYPE = "audit.checkpoint"
"""The record type whose signature covers the chain before it."""
HASH_WINDOW = 4096
"""Recent records remembered by hash, to tell an insertion or a copy from an edit."""
TORN_RETRIES = 3
"""Times a torn tail is read again when the file grew meanwhile (a live daemon)."""
CSV_COLUMNS = (
    "seq",
    "at",
    "type",
    "actor",
    "grant_id",
    "request_id",
    "vendor",
    "scopes",
    "state",
    "detail",
)
"""The columns of ``keyturn audit export --format csv``."""

_TIME_KEYS = frozenset({"at", "deadline"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""Cells starting with these are formulas to a spreadsheet."""


class JournalUnreadable(Exception):
    """The journal holds bytes that are not records, so reading stopped there.

    Attributes:
        offset: Byte offset of the first unreadable frame.
        after_seq: The ``seq`` of the last record read before it.
    """

    def __init__(self, message: str, *, offset: int, after_seq: int) -> None:
        super().__init__(message)
        self.offset = offset
        self.after_seq = after_seq


@dataclass(frozen=True)
class Finding:
    """The first record that does not verify."""

    seq: int | None
    """The ``seq`` of the record at fault (the one expected there, when missing)."""
    offset: int
    """Byte offset in the journal file where the fault is."""
    problem: str
    """What is wrong, in a sentence."""

    def to_json(self) -> dict[str, Any]:
        """Return the finding as the ``first_bad`` map of ``audit verify --json``."""
        return {"seq": self.seq, "offset": self.offset, "problem": self.problem}


@dataclass(frozen=True)
class SnapshotMark:
    """Where the snapshot says the journal was: its ``seq``, offset and chain hash."""

    seq: int
    offset: int | None = None
    head: bytes | None = None


@dataclass
class VerifyReport:
    """What verifying a journal found."""

    ok: bool
    records: int
    """Records that verified (all of them when ``ok``)."""
    checkpoints: int
    """Checkpoints whose signatures verified."""
    first_bad: Finding | None
    seconds: float
    last_seq: int
    """The ``seq`` of the last record that verified."""
    unsigned: int
    """Records after the last verified checkpoint."""
    snapshot_seq: int | None

    def to_json(self) -> dict[str, Any]:
        """Return the report as ``audit verify --json`` prints it."""
        return {
            "ok": self.ok,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "first_bad": self.first_bad.to_json() if self.first_bad else None,
            "seconds": round(self.seconds, 3),
            "last_seq": self.last_seq,
            "unsigned": self.unsigned,
            "snapshot_seq": self.snapshot_seq,
        }


# Verification.


def verify_home(root: Path) -> VerifyReport:
    """Verify the journal of a state folder with its public keys and snapshot.

    Args:
        root: The state folder.

    Returns:
        The report.

    Raises:
        FileNotFoundError: there is no journal.
        keyturn.shared.keys.KeyFileError: a public signing key is unreadable.
    """
    home = Home(root)
    if not home.journal.exists():
        raise FileNotFoundError(f"{home.journal}: no journal here")
    keys = load_verify_keys(home)
    # The snapshot first: a live daemon's journal only grows past it.
    mark = read_snapshot_mark(home.snapshot)
    return verify_journal(home.journal, keys, mark)


def verify_journal(
    path: Path, keys: dict[str, Ed25519PublicKey], snapshot: SnapshotMark | None = None
) -> VerifyReport:
    """Walk the chain and every checkpoint signature of a journal file.

    Args:
        path: The journal file.
        keys: Public signing keys by key id.
        snapshot: What the snapshot says, to find a lost tail; None to skip.

    Returns:
        The report; ``first_bad`` names the first record that does not verify.
    """
    began = time.perf_counter()
    for _ in range(TORN_RETRIES):
        size = path.stat().st_size
        walker = _Walker(keys, snapshot)
        with _mapped(path) as data:
            finding = walker.walk(data)
        if not walker.torn:
            break
        if path.stat().st_size == size:
            break
    return VerifyReport(
        ok=finding is None,
        records=walker.records,
        checkpoints=walker.checkpoints,
        first_bad=finding,
        seconds=time.perf_counter() - began,
        last_seq=walker.last_seq,
        unsigned=walker.records - walker.signed,
        snapshot_seq=snapshot.seq if snapshot else None,
    )


class _mapped:
    """The file's bytes, memory-mapped read-only (empty bytes for an empty file)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed in __exit__
        self._map: mmap.mmap | None = None

    def __enter__(self) -> bytes | mmap.mmap:
        if os.fstat(self._file.fileno()).st_size == 0:
            return b""
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def __exit__(self, *exc: object) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()


@dataclass
class _Frame:
    """One frame as found: where it is, and its record if it holds one."""

    offset: int
    end: int
    record: dict[str, Any] | None
    digest: bytes

    @property
    def seq(self) -> int:
        assert self.record is not None
        seq: int = self.record["seq"]
        return seq

    @property
    def prev(self) -> Any:
        assert self.record is not None
        return self.record.get("prev")


def _frames(data: bytes | mmap.mmap) -> Iterator[_Frame]:
    for offset, end, payload in iter_frames(data, len(MAGIC)):
        if payload is None:
            yield _Frame(offset, end, None, b"")
            return
        yield _Frame(offset, end, decode_frame(payload), record_hash(payload))


class _Walker:
    """Walks the frames once, keeping the chain head and recent records."""

    def __init__(
        self, keys: dict[str, Ed25519PublicKey], mark: SnapshotMark | None
    ) -> None:
        self.keys = keys
        self.mark = mark
        self.head = GENESIS
        self.last_seq = 0
        self.records = 0
        self.checkpoints = 0
        self.signed = 0
        self.size = 0
        self.data: bytes | mmap.mmap = b""
        self.recent: deque[_Frame] = deque()
        self.by_hash: dict[bytes, _Frame] = {}
        self.torn = False

    def walk(self, data: bytes | mmap.mmap) -> Finding | None:
        self.data, self.size = data, len(data)
        if data[: len(MAGIC)] != MAGIC:
            return Finding(
                None, 0, "not a keyturn journal: the file does not start with KTJOURN1"
            )
        frames = _frames(data)
        current = next(frames, None)
        while current is not None:
            following = next(frames, None)
            finding = self.check(current, following)
            if finding is not None:
                return finding
            self.accept(current)
            current = following
        return self.check_end()

    def accept(self, frame: _Frame) -> None:
        self.head, self.last_seq = frame.digest, frame.seq
        self.records += 1
        self.recent.append(frame)
        self.by_hash[frame.digest] = frame
        if len(self.recent) > HASH_WINDOW:
            self.by_hash.pop(self.recent.popleft().digest, None)

    def disown(self, frame: _Frame) -> None:
        """Take back the last accepted record: it is the one at fault."""
        self.records -= 1
        self.last_seq = frame.seq - 1
        if frame.record is not None and frame.record.get("type") == CHECKPOINT_TYPE:
            self.checkpoints -= 1

    def check(self, frame: _Frame, following: _Frame | None) -> Finding | None:
        if frame.record is None:
            return self.unreadable(frame)
        expected = self.last_seq + 1
        if frame.prev == self.head and frame.seq == expected:
            return self.check_checkpoint(frame) or self.check_snapshot(frame)
        if frame.prev == self.head:
            return self.wrong_seq(frame, following, expected)
        if frame.seq == expected:
            return self.broken_link(frame, following, expected)
        return self.out_of_place(frame, following, expected)

    # What a break in the chain means.

    def unreadable(self, frame: _Frame) -> Finding:
        expected = self.last_seq + 1
        resumes = find_next_record(self.data, frame.offset + 1, self.last_seq)
        if resumes is None and frame.end >= self.size:
            self.torn = True
            return Finding(
                expected,
                frame.offset,
                f"torn last record: the last {self.size - frame.offset} bytes are "
                "not a whole record (a write cut short; the daemon cuts them at "
                "its next start)",
            )
        where = (
            f"; records resume at byte {resumes[0]} with seq {resumes[1]}"
            if resumes
            else ""
        )
        return Finding(
            expected,
            frame.offset,
            f"unreadable record where seq {expected} belongs: damaged, or bytes were "
            f"cut out of the journal here{where}",
        )

    def wrong_seq(
        self, frame: _Frame, following: _Frame | None, expected: int
    ) -> Finding:
        written = following is not None and following.prev == frame.digest
        if frame.seq > expected and written:
            return Finding(expected, frame.offset, _missing(expected, frame.seq))
        return Finding(
            expected,
            frame.offset,
            f"the record where seq {expected} belongs says seq {frame.seq}: "
            "its seq was changed",
        )

    def broken_link(
        self, frame: _Frame, following: _Frame | None, expected: int
    ) -> Finding:
        after = following if following is not None and following.record else None
        if after is not None and after.prev == frame.digest:
            return self.changed_before(frame, expected)
        if after is not None and after.prev == self.head:
            return Finding(
                expected,
                frame.offset,
                f"seq {expected} here is not part of the chain: it was inserted or "
                f"replaced (seq {after.seq} after it chains to seq {expected - 1})",
            )
        if following is None and expected > 1:
            return self.changed_before(frame, expected)
        return Finding(
            expected,
            frame.offset,
            f"seq {expected} was changed after it was written "
            f"(it no longer chains to seq {expected - 1})",
        )

    def changed_before(self, frame: _Frame, expected: int) -> Finding:
        if expected == 1:
            return Finding(
                1,
                frame.offset,
                "seq 1 does not start the chain (its prev is not the genesis hash): "
                "records before it were removed or it was changed",
            )
        before = self.recent[-1]
        self.disown(before)
        return Finding(
            before.seq,
            before.offset,
            f"seq {before.seq} was changed after it was written: its hash no longer "
            f"matches the prev of seq {expected}",
        )

    def out_of_place(
        self, frame: _Frame, following: _Frame | None, expected: int
    ) -> Finding:
        copied = self.by_hash.get(frame.digest)
        if copied is not None:
            return Finding(
                frame.seq,
                frame.offset,
                f"seq {frame.seq} appears again after seq {expected - 1}: "
                f"a copy of the record at byte {copied.offset}",
            )
        anchor = self.by_hash.get(frame.prev) if isinstance(frame.prev, bytes) else None
        if anchor is not None:
            return self.inserted_after(anchor, frame)
        after = following if following is not None and following.record else None
        if frame.seq > expected and after is not None and after.seq < frame.seq:
            return Finding(
                expected,
                frame.offset,
                f"seq {expected} is out of order: seq {frame.seq} comes before it",
            )
        if frame.seq > expected:
            return Finding(expected, frame.offset, _missing(expected, frame.seq))
        return Finding(
            expected,
            frame.offset,
            f"seq {frame.seq} appears where seq {expected} belongs: "
            "records were reordered or replayed",
        )

    def inserted_after(self, anchor: _Frame, frame: _Frame) -> Finding:
        index = next(i for i, item in enumerate(self.recent) if item is anchor)
        first = self.recent[index + 1]
        count = len(self.recent) - index - 1
        return Finding(
            first.seq,
            first.offset,
            f"seq {first.seq} is not part of the chain: {count} record(s) were "
            f"inserted after seq {anchor.seq} "
            f"(seq {frame.seq} chains to seq {anchor.seq})",
        )

    # Checks of records that chain.

    def check_checkpoint(self, frame: _Frame) -> Finding | None:
        record = frame.record
        assert record is not None
        if record.get("type") != CHECKPOINT_TYPE:
            return None
        kid = record.get("kid")
        public = self.keys.get(kid) if isinstance(kid, str) else None
        if public is None:
            return Finding(
                frame.seq,
                frame.offset,
                f"checkpoint signed by unknown key {str(kid)[:20]!r}: "
                "no such public key in keys/signing",
            )
        if record.get("upto") != frame.seq - 1:
            return Finding(
                frame.seq,
                frame.offset,
                f"checkpoint says it covers up to seq {record.get('upto')!r} "
                f"but stands at seq {frame.seq}",
            )
        signature = record.get("sig")
        try:
            if not isinstance(signature, bytes):
                raise InvalidSignature
            public.verify(signature, checkpoint_message(frame.seq, frame.prev))
        except InvalidSignature:
            return Finding(
                frame.seq,
                frame.offset,
                f"checkpoint signature does not verify with key {kid}: the records up "
                f"to seq {frame.seq - 1} are not the ones the daemon signed",
            )
        self.checkpoints += 1
        self.signed = self.records + 1
        return None

    def check_snapshot(self, frame: _Frame) -> Finding | None:
        mark = self.mark
        if mark is None or frame.seq != mark.seq:
            return None
        if mark.head is not None and mark.head != frame.digest:
            return Finding(
                frame.seq,
                frame.offset,
                f"seq {frame.seq} is not the record the snapshot saw: "
                "it was changed after the snapshot was written",
            )
        if mark.offset is not None and mark.offset != frame.end:
            return Finding(
                frame.seq,
                frame.offset,
                f"seq {frame.seq} ends at byte {frame.end} but the snapshot says "
                f"{mark.offset}: bytes before it were added or removed",
            )
        return None

    def check_end(self) -> Finding | None:
        mark = self.mark
        if mark is not None and mark.seq > self.last_seq:
            return Finding(
                self.last_seq + 1,
                self.size,
                f"the journal ends at seq {self.last_seq} but the snapshot is at "
                f"seq {mark.seq}: its tail was lost "
                f"(seq {self.last_seq + 1} to {mark.seq})",
            )
        return None


def _missing(expected: int, found: int) -> str:
    gone = (
        f"seq {expected}" if found == expected + 1 else f"seq {expected} to {found - 1}"
    )
    return f"{gone} missing (deleted): seq {found} follows seq {expected - 1}"


def read_snapshot_mark(path: Path) -> SnapshotMark | None:
    """Read the ``seq``, offset and head of a TinyDB snapshot.

    Returns:
        The mark, or None when there is no readable snapshot.
    """
    try:
        tables = json.loads(path.read_text(encoding="utf-8"))
        docs = tables["meta"]
        meta = docs.get("1") or next(iter(docs.values()))
        seq = int(meta["seq"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration):
        return None
    offset = meta.get("offset")
    head = meta.get("head")
    try:
        head_bytes = bytes.fromhex(head) if isinstance(head, str) else None
    except ValueError:
        head_bytes = None
    return SnapshotMark(seq, offset if isinstance(offset, int) else None, head_bytes)


# Reading and export.


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Yield every record of a journal file in order, without checking the chain.

    Raises:
        JournalUnreadable: after the last readable record, when bytes follow it
            that are not a record (or the file is not a journal).
    """
    with _mapped(path) as data:
        if data[: len(MAGIC)] != MAGIC:
            raise JournalUnreadable(
                f"{path} is not a keyturn journal", offset=0, after_seq=0
            )
        last_seq = 0
        for frame in _frames(data):
            if frame.record is None:
                raise JournalUnreadable(
                    f"{path}: unreadable bytes at offset {frame.offset} after seq "
                    f"{last_seq}; run `keyturn audit verify`",
                    offset=frame.offset,
                    after_seq=last_seq,
                )
            last_seq = frame.seq
            yield frame.record


@dataclass(frozen=True)
class Bound:
    """One end of an export's range: a ``seq`` or a time."""

    kind: Literal["seq", "time"]
    value: float


def parse_bound(text: str) -> Bound:
    """Read ``--since``/``--until``: a whole number is a ``seq``, else an RFC 3339 time.

    Raises:
        ValueError: neither.
    """
    text = text.strip()
    if text.isdigit():
        return Bound("seq", int(text))
    try:
        return Bound("time", parse_rfc3339(text))
    except ValueError as exc:
        raise ValueError(
            f"{text[:40]!r} is neither a seq nor an RFC 3339 time "
            "such as 2026-01-31T09:00:00Z"
        ) from exc


def select_records(
    records: Iterator[dict[str, Any]], since: Bound | None, until: Bound | None
) -> Iterator[dict[str, Any]]:
    """Keep the records within both bounds (each inclusive)."""
    for record in records:
        if since is not None and _key(record, since) < since.value:
            continue
        if until is not None and _key(record, until) > until.value:
            if until.kind == "seq":
                return
            continue
        yield record


def _key(record: dict[str, Any], bound: Bound) -> float:
    value = record.get("seq" if bound.kind == "seq" else "at", 0)
    if not isinstance(value, int | float):
        return 0.0
    if bound.kind == "time":
        # Times are shown to the millisecond; a time copied from an export
        # must include the record it was copied from.
        return math.floor(value * 1000) / 1000
    return float(value)


def export_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record made fit to leave keyturn: bytes as hex, times as RFC 3339, no token.

    The daemon never journals a token, only its fingerprint; a string that is
    a token all the same is replaced by its fingerprint here.
    """
    out: dict[str, Any] = _plain(record)
    return out


def _plain(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return value.hex()
    if (
        isinstance(value, str)
        and value.startswith(TOKEN_PREFIX + ".")
        and value.count(".") == 2
    ):
        return token_fingerprint(value)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and (key in _TIME_KEYS or key.endswith("_at")):
        return rfc3339(value) if value else None
    return value


def write_jsonl(records: Iterator[dict[str, Any]], out: IO[str]) -> int:
    """Write records as JSON lines; return how many."""
    count = 0
    for record in records:
        out.write(json.dumps(export_record(record), ensure_ascii=False) + "\n")
        count += 1
    return count


def write_csv(records: Iterator[dict[str, Any]], out: IO[str]) -> int:
    """Write records as CSV with :data:`CSV_COLUMNS`; return how many."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for record in records:
        writer.writerow(_csv_row(export_record(record)))
        count += 1
    return count


def _csv_row(record: dict[str, Any]) -> list[str]:
    rest = dict(record)
    row = [rest.pop(name, "") for name in ("seq", "at", "type", "actor")]
    subject = {
        name: _pull(rest, name)
        for name in ("grant_id", "request_id", "vendor", "scopes", "state")
    }
    scopes = subject["scopes"]
    subject["scopes"] = " ".join(scopes) if isinstance(scopes, list) else scopes
    row += list(subject.values())
    cells = ["" if value is None else _cell(value) for value in row]
    return [*cells, json.dumps(rest, ensure_ascii=False, sort_keys=True)]


def _pull(rest: dict[str, Any], name: str) -> Any:
    """Take a field from the record or its grant or request, and drop it there."""
    if name in rest and not isinstance(rest[name], dict | list):
        return rest.pop(name)
    value = None
    for kind in ("grant", "request"):
        obj = rest.get(kind)
        if isinstance(obj, dict) and name in obj:
            if value is None:
                value = obj[name]
            if obj[name] == value:
                rest[kind] = {k: v for k, v in obj.items() if k != name}
    return value


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text
