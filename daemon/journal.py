"""The journal: an append-only, hash-chained file that is both write-ahead log and audit trail.

Layout: the 8-byte magic ``KTJOURN1``, then one frame per record: a 4-byte
big-endian length and the msgpack record. Every record holds ``prev``, the
SHA-256 of the previous record's bytes (32 zero bytes before the first), so
any edit, deletion, insertion or reordering breaks the chain at the first
record it touches.

Records are appended to a buffer as they are made and written with one
``fsync`` per batch (group commit); nobody is answered or told before that.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

__all__ = [
    "GENESIS",
    "MAGIC",
    "Journal",
    "JournalDamaged",
    "ScanResult",
    "decode_frame",
    "find_next_record",
    "iter_frames",
    "record_hash",
]

logger = logging.getLogger(__name__)

MAGIC = b"KTJOURN1"
"""The first bytes of every journal file."""
GENESIS = bytes(32)
"""``prev`` of the first record."""
MAX_RECORD_BYTES = 16 * 1024 * 1024
"""No record is larger; a larger length prefix means damage."""

_LENGTH = struct.Struct(">I")


class JournalDamaged(Exception):
    """The journal is damaged somewhere other than a torn last record.

    Attributes:
        seq: The sequence number of the first bad record, when known.
        offset: Its byte offset in the file.
    """

    def __init__(
        self, message: str, *, seq: int | None = None, offset: int = 0
    ) -> None:
        super().__init__(message)
        self.seq = seq
        self.offset = offset


def record_hash(payload: bytes) -> bytes:
    """The chain hash of one record's bytes."""
    return hashlib.sha256(payload).digest()


@dataclass
class ScanResult:
    """What reading the journal found."""

    records: list[dict[str, Any]]
    """Records after the starting point, in order."""
    end_offset: int
    """Where the next record goes."""
    head: bytes
    """Hash of the last good record."""
    last_seq: int
    torn_bytes: int = 0
    """Bytes of a torn last record that were cut off."""
    torn_reason: str = ""


def iter_frames(
    data: bytes | memoryview | mmap.mmap, start: int
) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield (offset, end, payload) per frame; payload is None for one that runs past the end."""
    size = len(data)
    offset = start
    while offset < size:
        if size - offset < _LENGTH.size:
            yield offset, size, None
            return
        (length,) = _LENGTH.unpack_from(data, offset)
        end = offset + _LENGTH.size + length
        if length == 0 or length > MAX_RECORD_BYTES or end > size:
            yield offset, size, None
            return
        yield offset, end, bytes(data[offset + _LENGTH.size : end])
        offset = end


def decode_frame(payload: bytes) -> dict[str, Any] | None:
    """A frame's record, or None when it is not a readable record with a ``seq``."""
    try:
        record = msgpack.unpackb(payload, raw=False)
    except (ValueError, TypeError, msgpack.ExtraData):
        return None
    if not isinstance(record, dict):
        return None
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None
    return record


def scan(
    data: bytes, start: int, head: bytes, last_seq: int, *, base: int = 0
) -> ScanResult:
    """Check the chain from ``start`` on and return the records found.

    A bad frame with no whole later record after it is a torn write (a crash
    in the middle of an append), reported in ``torn_bytes``; a bad frame that
    a later record follows is damage, whatever its length prefix claims.
    ``base`` is the file offset of ``data[0]``, so offsets are reported as in
    the file.

    Raises:
        JournalDamaged: the chain breaks anywhere but at a torn last record.
    """
    records: list[dict[str, Any]] = []
    end_offset = start
    for offset, end, payload in iter_frames(data, start):
        record = decode_frame(payload) if payload is not None else None
        problem = _problem(record, head, last_seq)
        if problem:
            if end >= len(data) and find_next_record(data, offset, last_seq) is None:
                torn = len(data) - offset
                return ScanResult(records, base + offset, head, last_seq, torn, problem)
            raise JournalDamaged(
                f"journal record at byte {base + offset} (after seq {last_seq}): {problem}",
                seq=last_seq + 1,
                offset=base + offset,
            )
        assert payload is not None and record is not None
        records.append(record)
        head = record_hash(payload)
        last_seq = record["seq"]
        end_offset = end
    return ScanResult(records, base + end_offset, head, last_seq)


_SEQ_KEY = b"\xa3seq"
"""Every record is a map whose first key is ``seq``: how a later record is found."""
_MAP_HEADERS = (1, 3, 5)
"""Bytes of a msgpack map header before the first key: fixmap, map16, map32."""


def find_next_record(
    data: bytes | mmap.mmap, start: int, last_seq: int
) -> tuple[int, int] | None:
    """The first whole, readable record at or after ``start`` with a ``seq`` above
    ``last_seq``: (its offset, its seq), or None. Used to tell damage from a torn end.
    """
    at = data.find(_SEQ_KEY, start)
    while at != -1:
        for header in _MAP_HEADERS:
            offset = at - header - _LENGTH.size
            if offset < start:
                continue
            _, _, payload = next(iter_frames(data, offset), (0, 0, None))
            record = decode_frame(payload) if payload is not None else None
            if record is not None and record["seq"] > last_seq:
                return offset, int(record["seq"])
        at = data.find(_SEQ_KEY, at + 1)
    return None


def _problem(record: dict[str, Any] | None, head: bytes, last_seq: int) -> str:
    if record is None:
        return "not a readable record"
    if record.get("prev") != head:
        return f"seq {record['seq']} does not chain to the record before it"
    if record["seq"] != last_seq + 1:
        return f"seq {record['seq']} follows seq {last_seq}"
    return ""


# TODO(journal-segments): the journal grows without end; it needs segments that a
# snapshot lets the daemon retire (and archive) so start and audit stay bounded.
class Journal:
    """The open journal of a running daemon.

    Args:
        path: The journal file; created with its magic when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.head = GENESIS
        self.last_seq = 0
        self.offset = len(MAGIC)
        self._pending: list[bytes] = []
        self._file: BinaryIO | None = None

    def read(
        self, start: int = 0, head: bytes = GENESIS, last_seq: int = 0
    ) -> ScanResult:
        """Read the records after a known point (the snapshot's) and cut a torn tail.

        Raises:
            JournalDamaged: the file is not a journal, or is damaged before its end.
        """
        self._ensure_file()
        begin = max(start, len(MAGIC))
        with open(self.path, "rb") as handle:
            if handle.read(len(MAGIC)) != MAGIC:
                raise JournalDamaged(
                    f"{self.path} is not a keyturn journal (bad magic)"
                )
            size = os.fstat(handle.fileno()).st_size
            if begin > size:
                raise JournalDamaged(
                    f"{self.path} is shorter ({size} bytes) than the snapshot says ({begin})",
                    offset=size,
                )
            handle.seek(begin)
            data = handle.read()
        result = scan(data, 0, head, last_seq, base=begin)
        if result.torn_bytes:
            self._cut(result.end_offset)
        self.head, self.last_seq, self.offset = (
            result.head,
            result.last_seq,
            result.end_offset,
        )
        return result

    def _ensure_file(self) -> None:
        if self.path.exists():
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, MAGIC)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.path.parent)

    def _cut(self, offset: int) -> None:
        with open(self.path, "r+b") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())

    def open_for_append(self) -> None:
        """Open the file for appending at the end found by :meth:`read`."""
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - lives with the daemon

    def append(self, record: dict[str, Any]) -> bytes:
        """Chain a record, buffer it for the next commit, and return its bytes.

        The record gets ``prev``; its ``seq`` must follow the last one.
        """
        record["prev"] = self.head
        payload: bytes = msgpack.packb(record, use_bin_type=True)
        self.head = record_hash(payload)
        self.last_seq = record["seq"]
        self._pending.append(_LENGTH.pack(len(payload)))
        self._pending.append(payload)
        return payload

    @property
    def dirty(self) -> bool:
        """Whether records wait for a commit."""
        return bool(self._pending)

    def commit(self) -> None:
        """Write the buffered records and fsync once.

        Raises:
            OSError: the write or the fsync failed; the daemon must stop,
                since it can no longer promise durability.
        """
        if not self._pending:
            return
        assert self._file is not None, "open_for_append() first"
        data = b"".join(self._pending)
        self._pending.clear()
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written:] if written else view
        # fdatasync suffices for an append: it also flushes the new file size.
        os.fdatasync(self._file.fileno())
        self.offset += len(data)

    def close(self) -> None:
        """Close the file (commit first)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
