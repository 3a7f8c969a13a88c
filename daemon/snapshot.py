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

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tinydb import TinyDB
from tinydb.middlewares import CachingMiddleware
from tinydb.storages import Storage

from keyturn.shared.model import Grant, Request

__all__ = ["AtomicJSONStorage", "SnapshotData", "SnapshotWriter", "load_snapshot"]

logger = logging.getLogger(__name__)

_CHUNK_DOCS = 500
_PRIVATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


class AtomicJSONStorage(Storage):
    """A TinyDB storage that never leaves a torn file behind.

    Args:
        path: The JSON file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.digest = b""
        """SHA-256 of the file as last written."""

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
        # Owner-only, like the journal: the state names vendors and reasons.
        with os.fdopen(os.open(temporary, _PRIVATE_FLAGS, 0o600), "wb") as raw:
            handle = _HashingWriter(raw)
            _write_tables(handle, data)
            raw.flush()
            os.fsync(raw.fileno())
        self.digest = handle.hash.digest()
        os.replace(temporary, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Nothing stays open between writes."""


class _HashingWriter:
    """Writes text as UTF-8 and hashes what it writes."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.hash.update(data)
        self.raw.write(data)


def signed_message(digest: bytes) -> bytes:
    """What a snapshot's signature covers: the SHA-256 of the whole file."""
    return b"keyturn-snapshot\x00" + digest


def _signature_path(path: Path) -> Path:
    return path.with_name(path.name + ".sig")


def _write_signature(path: Path, kid: str, signature: bytes, digest: bytes) -> None:
    target = _signature_path(path)
    temporary = target.with_suffix(".tmp")
    body = json.dumps({"sha256": digest.hex(), "kid": kid, "sig": signature.hex()})
    with os.fdopen(
        os.open(temporary, _PRIVATE_FLAGS, 0o600), "w", encoding="utf-8"
    ) as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)


def check_signature(path: Path, keys: Mapping[str, Ed25519PublicKey]) -> None:
    """Check that the snapshot is the one the daemon wrote and signed.

    Raises:
        ValueError: no signature, an unknown key, or a file that does not match it.
    """
    try:
        meta = json.loads(_signature_path(path).read_text(encoding="utf-8"))
        digest = hashlib.sha256(path.read_bytes()).digest()
        public = keys[meta["kid"]]
        public.verify(bytes.fromhex(meta["sig"]), signed_message(digest))
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: no signature beside it") from exc
    except KeyError as exc:
        raise ValueError(f"{path}: signed by an unknown key") from exc
    except (InvalidSignature, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(
            f"{path}: does not match its signature (changed since written)"
        ) from exc
    if meta.get("sha256") != digest.hex():
        raise ValueError(
            f"{path}: does not match its signature (changed since written)"
        )


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
    grants: Mapping[str, Grant] = field(default_factory=dict)
    requests: Mapping[str, Request] = field(default_factory=dict)


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

    def __init__(self, objects: Mapping[str, Grant] | Mapping[str, Request]) -> None:
        self._objects: list[Grant | Request] = list(objects.values())

    def __getitem__(self, key: str) -> Any:
        return self._objects[int(key) - 1].to_wire()

    def __iter__(self) -> Any:
        return (str(number) for number in range(1, len(self._objects) + 1))

    def __len__(self) -> int:
        return len(self._objects)

    def items(self) -> Any:
        return ((str(n), obj.to_wire()) for n, obj in enumerate(self._objects, start=1))


def load_snapshot(
    path: Path, keys: Mapping[str, Ed25519PublicKey]
) -> SnapshotData | None:
    """Read the snapshot through TinyDB, or None when there is none.

    Raises:
        ValueError: the file exists but is not a readable snapshot, or is not
            the one the daemon signed.
    """
    if not path.exists():
        return None
    check_signature(path, keys)
    # The cache parses the file once, not once per table.
    db = TinyDB(path, storage=CachingMiddleware(AtomicJSONStorage))  # type: ignore[no-untyped-call]
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
        sign: Signs a message with the daemon's key; returns (key id, signature).
        on_error: Called (in the writer thread) with the exception of a failed write.
    """

    def __init__(
        self,
        path: Path,
        sign: Callable[[bytes], tuple[str, bytes]],
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.path = path
        self._storage = AtomicJSONStorage(path)
        self._thread: threading.Thread | None = None
        self._on_error = on_error
        self._sign = sign
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
            digest = self._storage.digest
            kid, signature = self._sign(signed_message(digest))
            _write_signature(self.path, kid, signature, digest)
            self.written_seq = snap.seq
            self.last_duration_s = time.monotonic() - began
        except Exception as exc:  # noqa: BLE001 - reported, the journal still holds everything
            logger.error("snapshot write to %s failed: %s", self.path, exc)
            if self._on_error:
                self._on_error(exc)
