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
from keyturn.shared.model import Role

__all__ = ["API_DOMAIN", "EVENTS_DOMAIN", "HandshakeWatch", "ZapHandler"]

logger = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
API_DOMAIN = b"keyturn.api"
"""ZAP domain of the API socket: every configured identity."""
EVENTS_DOMAIN = b"keyturn.events"
"""ZAP domain of the event stream: every identity but vendors' requesters, since
events name every vendor's grants and reasons."""
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
        version, request_id, domain, address, _routing, mechanism = frames[:6]
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
        if domain != API_DOMAIN and identity.role is Role.REQUESTER:
            logger.warning(
                "refused %s (%s) on the event stream: requesters see only their own "
                "requests, through the API",
                identity.name,
                fingerprint(key),
            )
            self.refused += 1
            return [version, request_id, b"400", b"not for requesters", b"", b""]
        logger.debug(
            "accepted %s (%s) at the handshake", identity.name, fingerprint(key)
        )
        return [version, request_id, b"200", b"OK", key.encode("ascii"), b""]

    def close(self) -> None:
        """Unbind (only after the server sockets are closed)."""
        self.socket.close(linger=0)


HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
"""Socket events of a refused handshake."""
REFUSAL_LOG_INTERVAL_S = 10.0
"""A peer that keeps retrying is logged once per this interval, with a count."""


class HandshakeWatch:
    """Logs handshakes that fail before the ZAP handler hears of them.

    libzmq refuses a client without CURVE (or with a broken handshake) at the
    greeting, so no ZAP request is made for it; the server sockets' monitors
    report those refusals instead. Retrying peers are logged with a count, not
    once per retry.

    Args:
        sockets: The server sockets to watch, by a name for the log.
    """

    def __init__(self, sockets: dict[str, zmq.Socket[bytes]]) -> None:
        self.monitors = {
            sock.get_monitor_socket(HANDSHAKE_FAILURES): name
            for name, sock in sockets.items()
        }
        self._last_logged: dict[tuple[str, int], float] = {}
        self._suppressed: dict[tuple[str, int], int] = {}

    def add(self, name: str, sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
        """Watch one more socket; returns its monitor, to be polled."""
        monitor = sock.get_monitor_socket(HANDSHAKE_FAILURES)
        self.monitors[monitor] = name
        return monitor

    def remove(self, name: str, sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
        """Stop watching a socket; returns its monitor, for the caller to close."""
        sock.disable_monitor()
        monitor = next(m for m, n in self.monitors.items() if n == name)
        del self.monitors[monitor]
        return monitor

    def handle_ready(self, monitor: zmq.Socket[bytes], now: float) -> None:
        """Read the monitor's events and log the refusals."""
        from zmq.utils.monitor import recv_monitor_message

        while monitor.poll(0):
            event = recv_monitor_message(monitor)
            self._note(
                self.monitors[monitor], int(event["event"]), int(event["value"]), now
            )

    def _note(self, name: str, kind: int, value: int, now: float) -> None:
        key = (name, kind)
        if (
            now - self._last_logged.get(key, -REFUSAL_LOG_INTERVAL_S)
            < REFUSAL_LOG_INTERVAL_S
        ):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        repeats = self._suppressed.pop(key, 0)
        self._last_logged[key] = now
        why = "no CurveZMQ handshake (a client without CURVE, or a broken one)"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = f"authentication failed (status {value})"
        more = f"; {repeats} more since the last report" if repeats else ""
        logger.warning("refused a handshake on the %s socket: %s%s", name, why, more)

    def close(self) -> None:
        """Close the monitor sockets."""
        for monitor in self.monitors:
            monitor.close(linger=0)
