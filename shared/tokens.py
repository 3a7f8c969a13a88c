"""Grant tokens: compact, header-safe, signed with Ed25519.

A token is ``kt1.<payload>.<signature>``, both parts base64url without
padding. The payload is a msgpack map: ``gid`` (grant id), ``ven`` (vendor),
``scp`` (scopes), ``iat`` (issued), ``nbf`` (not before), ``exp`` (expiry, Unix
seconds) and ``kid`` (the signing key's id). The signature covers
``kt1.<payload>``. Signatures are deterministic, so the daemon can issue the
same token again from the grant without ever storing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyturn.shared.keys import SigningKey
from keyturn.shared.model import Grant

__all__ = [
    "TOKEN_PREFIX",
    "TokenClaims",
    "TokenInvalid",
    "issue_token",
    "token_fingerprint",
    "verify_token",
]

TOKEN_PREFIX = "kt1"
"""Version tag of the token format."""
MAX_TOKEN_CHARS = 2048
"""A longer string is not one of our tokens."""
CLOCK_SKEW_S = 5.0
"""How far a verifier's clock may be behind the issuer's for ``nbf``."""


class TokenInvalid(Exception):
    """A token does not verify; the message says why, without the token."""


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    grant_id: str
    vendor: str
    scopes: tuple[str, ...]
    issued_at: float
    not_before: float
    expires_at: float
    key_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(grant: Grant, key: SigningKey) -> str:
    """Sign a token for an active grant (same grant and key, same token)."""
    payload = msgpack.packb(
        {
            "gid": grant.grant_id,
            "ven": grant.vendor,
            "scp": list(grant.scopes),
            "iat": grant.activated_at,
            "nbf": grant.activated_at,
            "exp": grant.expires_at,
            "kid": key.key_id,
        },
        use_bin_type=True,
    )
    signed = f"{TOKEN_PREFIX}.{_b64(payload)}"
    return f"{signed}.{_b64(key.private.sign(signed.encode()))}"


def token_fingerprint(token: str) -> str:
    """A fingerprint of a token that may appear in logs and exports."""
    return "tk:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def verify_token(
    token: str, keys: dict[str, Ed25519PublicKey], now: float
) -> TokenClaims:
    """Check a token's signature and times offline.

    Args:
        token: The token as presented.
        keys: Public signing keys by key id.
        now: The verifier's current Unix time.

    Returns:
        The claims of a valid token.

    Raises:
        TokenInvalid: malformed, unknown key, bad signature, not yet valid, or expired.
    """
    claims = _claims(token, keys)
    if now + CLOCK_SKEW_S < claims.not_before:
        raise TokenInvalid("token is not valid yet")
    if now >= claims.expires_at:
        raise TokenInvalid("token has expired")
    return claims


def _claims(token: str, keys: dict[str, Ed25519PublicKey]) -> TokenClaims:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise TokenInvalid("not a keyturn token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise TokenInvalid("not a keyturn token")
    try:
        payload: Any = msgpack.unpackb(_unb64(parts[1]), raw=False)
        signature = _unb64(parts[2])
    except (ValueError, TypeError, binascii.Error, msgpack.ExtraData) as exc:
        raise TokenInvalid("token is malformed") from exc
    if _b64(_unb64(parts[1])) != parts[1] or _b64(signature) != parts[2]:
        raise TokenInvalid("token is not in canonical form")
    claims = _parse_claims(payload)
    public = keys.get(claims.key_id)
    if public is None:
        raise TokenInvalid(f"token was signed by unknown key {claims.key_id[:20]!r}")
    try:
        public.verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature as exc:
        raise TokenInvalid("token signature does not verify") from exc
    return claims


def _parse_claims(payload: Any) -> TokenClaims:
    try:
        claims = TokenClaims(
            grant_id=str(payload["gid"]),
            vendor=str(payload["ven"]),
            scopes=tuple(str(s) for s in payload["scp"]),
            issued_at=float(payload["iat"]),
            not_before=float(payload["nbf"]),
            expires_at=float(payload["exp"]),
            key_id=str(payload["kid"]),
        )
    except (TypeError, KeyError, ValueError) as exc:
        raise TokenInvalid("token is malformed") from exc
    return claims
