"""The ZAP handler: who may complete a CurveZMQ handshake with the daemon.

libzmq asks the socket bound at ``inproc://zeromq.zap.01`` about every
handshake; with no handler bound, CURVE accepts any client key at all. The
daemon therefore binds this handler before it binds any endpoint, and it runs
in the daemon's own loop, so when the loop stops, handshakes stop with it
(they fail closed). An accepted client's User-Id is its Z85 public key; every
message is authorised again against the configuration as it is at that
moment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq
from zmq.utils import z85

from keyturn.shared.config import Identity
from keyturn.shared.keys import fingerprint

__all__ = ["ZAP_DOMAIN", "ZapHandler"]

logger = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"keyturn"
"""Set on every server socket so that ZAP is always consulted."""
_CURVE_KEY_BYTES = 32


class ZapHandler:
    """Answers ZAP requests from the identities of the current configuration.

    Args:
        context: The context the daemon's sockets live in.
        identities: Returns the identities by Z85 public key, as configured now.
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        identities: Callable[[], dict[str, Identity]],
    ) -> None:
        self._identities = identities
        self.socket = context.socket(zmq.REP)
        self.socket.linger = 0
        self.socket.bind(ZAP_ENDPOINT)
        self.refused = 0

    def handle_ready(self) -> None:
        """Answer every ZAP request waiting."""
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.socket.send_multipart(self._answer(frames))

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < 6:
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _routing, mechanism = frames[:6]
        credentials = frames[6:]
        if (
            mechanism != b"CURVE"
            or len(credentials) != 1
            or len(credentials[0]) != _CURVE_KEY_BYTES
        ):
            logger.warning(
                "refused a %s handshake from %s: CurveZMQ is required",
                mechanism.decode(errors="replace"),
                address.decode(errors="replace") or "local",
            )
            self.refused += 1
            return [version, request_id, b"400", b"CURVE required", b"", b""]
        key = z85.encode(credentials[0]).decode("ascii")
        identity = self._identities().get(key)
        if identity is None:
            logger.warning(
                "refused an unknown key %s at the handshake (%s)",
                fingerprint(key),
                address.decode(errors="replace") or "local",
            )
            self.refused += 1
            return [version, request_id, b"400", b"unknown key", b"", b""]
        logger.debug(
            "accepted %s (%s) at the handshake", identity.name, fingerprint(key)
        )
        return [version, request_id, b"200", b"OK", key.encode("ascii"), b""]

    def close(self) -> None:
        """Unbind (only after the server sockets are closed)."""
        self.socket.close(linger=0)
