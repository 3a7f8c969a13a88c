"""The snapshot: the ledger's state at one ``seq``, kept in TinyDB, written atomically.

TinyDB's stock JSON storage rewrites its file in place, which a crash can
leave half-written; :class:`AtomicJSONStorage` writes a temporary file,
fsyncs it, renames it over the old one and fsyncs the folder, so a reader
sees either the old snapshot or the new one. It serialises one document at a
time, so a background write never holds the interpreter for long.

Tables: ``meta`` (one document: ``seq``, ``offset``, ``head``, ``lockdown``),
``grants`` and ``requests``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from keyturn.shared.model import Grant, Request

__all__ = ["AtomicJSONStorage", "SnapshotData", "SnapshotWriter", "load_snapshot"]

logger = logging.getLogger(__name__)

_CHUNK_DOCS = 500


class AtomicJSONStorage(Storage):
    """A TinyDB storage that never leaves a torn file behind.

    Args:
        path: The JSON file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        """Return the stored tables, or None for a missing or empty file."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: not a snapshot")
        return data

    def write(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the file atomically with ``data``."""
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            _write_tables(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Nothing stays open between writes."""


def _write_tables(handle: Any, data: Mapping[str, Mapping[str, Any]]) -> None:
    handle.write("{")
    for t_index, (table, docs) in enumerate(data.items()):
        handle.write(("," if t_index else "") + json.dumps(table) + ":{")
        chunk: list[str] = []
        first = True
        for doc_id, doc in docs.items():
            chunk.append(
                json.dumps(doc_id) + ":" + json.dumps(doc, separators=(",", ":"))
            )
            if len(chunk) >= _CHUNK_DOCS:
                handle.write(("" if first else ",") + ",".join(chunk))
                chunk, first = [], False
        if chunk:
            handle.write(("" if first else ",") + ",".join(chunk))
        handle.write("}")
    handle.write("}")


@dataclass
class SnapshotData:
    """A consistent picture of the ledger at one ``seq``."""

    seq: int
    offset: int
    """Journal offset just past record ``seq``."""
    head: bytes
    """Chain hash of record ``seq``."""
    lockdown: dict[str, Any]
    grants: dict[str, Grant] = field(default_factory=dict)
    requests: dict[str, Request] = field(default_factory=dict)


def _to_tables(snap: SnapshotData) -> dict[str, Mapping[str, Any]]:
    meta = {
        "seq": snap.seq,
        "offset": snap.offset,
        "head": snap.head.hex(),
        "lockdown": snap.lockdown,
    }
    return {
        "meta": {"1": meta},
        "grants": _Lazy(snap.grants),
        "requests": _Lazy(snap.requests),
    }


class _Lazy(Mapping[str, Any]):
    """Turns model objects into TinyDB documents one at a time, as the writer walks them.

    TinyDB document ids are whole numbers (it reads them back with ``int``), so
    documents are numbered in order; the object's own id is a field inside.
    """

    def __init__(self, objects: dict[str, Grant] | dict[str, Request]) -> None:
        self._objects = list(objects.values())

    def __getitem__(self, key: str) -> Any:
        return self._objects[int(key) - 1].to_wire()

    def __iter__(self) -> Any:
        return (str(number) for number in range(1, len(self._objects) + 1))

    def __len__(self) -> int:
        return len(self._objects)

    def items(self) -> Any:
        return ((str(n), obj.to_wire()) for n, obj in enumerate(self._objects, start=1))


def load_snapshot(path: Path) -> SnapshotData | None:
    """Read the snapshot through TinyDB, or None when there is none.

    Raises:
        ValueError: the file exists but is not a readable snapshot.
    """
    if not path.exists():
        return None
    db = TinyDB(path, storage=AtomicJSONStorage)
    try:
        metas = db.table("meta").all()
        if not metas:
            return None
        meta = metas[0]
        grants = {
            doc["grant_id"]: Grant.from_wire(doc) for doc in db.table("grants").all()
        }
        requests = {
            doc["request_id"]: Request.from_wire(doc)
            for doc in db.table("requests").all()
        }
        return SnapshotData(
            seq=int(meta["seq"]),
            offset=int(meta["offset"]),
            head=bytes.fromhex(meta["head"]),
            lockdown=dict(meta["lockdown"]),
            grants=grants,
            requests=requests,
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable snapshot ({exc})") from exc
    finally:
        db.close()


class SnapshotWriter:
    """Writes snapshots in a background thread, one at a time, never on the request path.

    Args:
        path: The snapshot file.
        on_error: Called (in the writer thread) with the exception of a failed write.
    """

    def __init__(
        self, path: Path, on_error: Callable[[Exception], None] | None = None
    ) -> None:
        self.path = path
        self._storage = AtomicJSONStorage(path)
        self._thread: threading.Thread | None = None
        self._on_error = on_error
        self.written_seq = 0
        self.last_duration_s = 0.0
        """How long the last write took; the daemon spaces writes by it."""

    @property
    def busy(self) -> bool:
        """Whether a write is still under way."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, snap: SnapshotData) -> bool:
        """Begin writing a snapshot unless one is being written; return whether it began."""
        if self.busy:
            return False
        self._thread = threading.Thread(
            target=self._write, args=(snap,), name="keyturn-snapshot", daemon=True
        )
        self._thread.start()
        return True

    def write_now(self, snap: SnapshotData) -> None:
        """Write a snapshot in this thread (at shutdown), after any under way."""
        self.wait()
        self._write(snap)

    def wait(self) -> None:
        """Wait for a write under way."""
        if self._thread is not None:
            self._thread.join()

    def _write(self, snap: SnapshotData) -> None:
        began = time.monotonic()
        try:
            self._storage.write(_to_tables(snap))
            self.written_seq = snap.seq
            self.last_duration_s = time.monotonic() - began
        except Exception as exc:  # noqa: BLE001 - reported, the journal still holds everything
            logger.error("snapshot write to %s failed: %s", self.path, exc)
            if self._on_error:
                self._on_error(exc)
