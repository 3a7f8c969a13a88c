"""Key files: CurveZMQ key pairs for the daemon and each identity, Ed25519 signing keys.

Secret key files are written owner-only (0600) and refused when anyone else
may read them: pyzmq's own writer leaves them world-readable.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "KeyFileError",
    "SigningKey",
    "Home",
    "default_home",
    "fingerprint",
    "load_curve_public",
    "load_curve_secret",
    "load_signing_keys",
    "load_verify_keys",
    "new_signing_key",
    "write_curve_pair",
]

_SECRET_MODE = 0o600
_PUBLIC_MODE = 0o644


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or readable by others."""


@dataclass(frozen=True)
class Home:
    """The paths of one state folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "keyturn.toml"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def signing(self) -> Path:
        return self.root / "keys" / "signing"

    @property
    def journal(self) -> Path:
        return self.root / "journal.ktj"

    @property
    def snapshot(self) -> Path:
        return self.root / "snapshot.json"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    def secret_key(self, identity: str) -> Path:
        """Path of an identity's (or ``daemon``'s) CurveZMQ secret key file."""
        return self.keys / f"{identity}.key_secret"

    def public_key(self, identity: str) -> Path:
        """Path of an identity's (or ``daemon``'s) CurveZMQ public key file."""
        return self.keys / f"{identity}.key"


def default_home() -> Path:
    """``$KEYTURN_HOME``, else ``$XDG_STATE_HOME/keyturn``, else ``~/.local/state/keyturn``."""
    explicit = os.environ.get("KEYTURN_HOME")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "keyturn"


def fingerprint(public: bytes | str) -> str:
    """A short, stable fingerprint of a public key or token, safe to log."""
    data = public.encode() if isinstance(public, str) else public
    return "fp:" + hashlib.sha256(data).hexdigest()[:16]


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file with its mode set from the first byte (no window of wider access)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def _read_secret(path: Path) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path}: secret key file is missing") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read ({exc.strerror})") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: secret key file is readable by others "
            f"(mode {stat.S_IMODE(info.st_mode):o}); run chmod 600 on it"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read ({exc.strerror})") from exc


def write_curve_pair(home: Home, identity: str) -> str:
    """Make a CurveZMQ key pair for an identity and return its Z85 public key."""
    public, secret = zmq.curve_keypair()
    header = f"# keyturn CurveZMQ key pair of {identity!r}\n"
    _write(
        home.public_key(identity),
        f"{header}public-key = {public.decode()}\n".encode(),
        _PUBLIC_MODE,
    )
    body = f"{header}public-key = {public.decode()}\nsecret-key = {secret.decode()}\n"
    _write(home.secret_key(identity), body.encode(), _SECRET_MODE)
    return public.decode()


def _field(text: str, name: str, path: Path) -> bytes:
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            value = value.strip().strip('"')
            if len(value) != 40:
                break
            return value.encode()
    raise KeyFileError(f"{path}: no valid {name} line")


def load_curve_secret(home: Home, identity: str) -> tuple[bytes, bytes]:
    """Load an identity's (public, secret) Z85 CurveZMQ keys, refusing loose modes.

    Raises:
        KeyFileError: missing, unreadable, malformed or readable by others.
    """
    path = home.secret_key(identity)
    text = _read_secret(path).decode("ascii", "replace")
    return _field(text, "public-key", path), _field(text, "secret-key", path)


def load_curve_public(home: Home, identity: str) -> bytes:
    """Load an identity's (or the daemon's) Z85 public key.

    Raises:
        KeyFileError: missing or malformed.
    """
    path = home.public_key(identity)
    try:
        text = path.read_text("ascii", "replace")
    except OSError as exc:
        raise KeyFileError(
            f"{path}: cannot read the public key ({exc.strerror})"
        ) from exc
    return _field(text, "public-key", path)


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key that signs tokens and journal checkpoints."""

    key_id: str
    private: Ed25519PrivateKey


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return "k" + hashlib.sha256(raw).hexdigest()[:12]


def new_signing_key(home: Home) -> SigningKey:
    """Make a new Ed25519 signing key; it signs from now on, older ones still verify."""
    home.signing.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    kid = _key_id(private.public_key())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    numbers = [
        int(p.name.split("-", 1)[0])
        for p in home.signing.glob("*.pem")
        if p.name[:4].isdigit()
    ]
    order = max(numbers, default=-1) + 1
    _write(home.signing / f"{order:04d}-{kid}.pem", pem, _SECRET_MODE)
    _write(home.signing / f"{order:04d}-{kid}.pub", public_pem, _PUBLIC_MODE)
    return SigningKey(kid, private)


def load_signing_keys(home: Home) -> list[SigningKey]:
    """Load every signing key, oldest first; the last one signs.

    Raises:
        KeyFileError: when there is none or one is unreadable or loose.
    """
    keys = []
    for path in sorted(home.signing.glob("*.pem")):
        try:
            private = serialization.load_pem_private_key(
                _read_secret(path), password=None
            )
        except ValueError as exc:
            raise KeyFileError(f"{path}: not a PEM private key") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: not an Ed25519 key")
        keys.append(SigningKey(_key_id(private.public_key()), private))
    if not keys:
        raise KeyFileError(f"{home.signing}: no signing key; run `keyturn init`")
    return keys


def load_verify_keys(home: Home) -> dict[str, Ed25519PublicKey]:
    """Load every public signing key by key id (enough to verify tokens offline)."""
    out: dict[str, Ed25519PublicKey] = {}
    for path in sorted(home.signing.glob("*.pub")):
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"{path}: not a readable public key") from exc
        if isinstance(public, Ed25519PublicKey):
            out[_key_id(public)] = public
    return out
