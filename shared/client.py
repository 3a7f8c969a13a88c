"""The Python client that scripts import.

    from keyturn.shared.client import Client

    with Client.from_home("/var/lib/keyturn", identity="oncall") as client:
        result = client.request("braintree", ["payments:read"], ttl="15m", reason="INC-4411")

A :class:`Client` talks to the daemon's ROUTER socket through a DEALER socket,
so a call that timed out leaves it usable: a late reply to an old call is
recognised by its id and dropped, never taken as the answer to a new one.
:class:`Subscriber` reads the event stream.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from keyturn.shared.codec import decode_record, encode
from keyturn.shared.config import DEFAULT_API, DEFAULT_EVENTS, ConfigError, load_config
from keyturn.shared.errors import Refused, Unreachable, error_from_reply
from keyturn.shared.keys import Home, fingerprint, load_curve_public, load_curve_secret
from keyturn.shared.protocol import PROTOCOL_VERSION

__all__ = ["DEFAULT_TIMEOUT_S", "Client", "Subscriber", "connect_info"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 4.5
"""How long a call waits for its reply; an unreachable daemon is reported by then."""
SUB_RCVHWM = 200_000
"""Events a subscriber buffers before the oldest are dropped (a gap it then repairs)."""

_AUTH_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL


def connect_info(
    home: Path | str | None, identity: str
) -> tuple[str, str, bytes, bytes, bytes]:
    """Return (api endpoint, events endpoint, server key, public, secret) for an identity.

    A configuration that is missing stops here; one that was broken while the
    daemon runs does not: the daemon keeps the last good one, so the client
    falls back to the default endpoints and says so, and an operator can still
    reach it (for a lockdown, say).

    Raises:
        keyturn.shared.config.ConfigError: there is no configuration.
        keyturn.shared.keys.KeyFileError: a key file is missing or loose.
    """
    from keyturn.shared.keys import default_home

    root = Path(home) if home is not None else default_home()
    paths = Home(root)
    public, secret = load_curve_secret(paths, identity)
    server = load_curve_public(paths, "daemon")
    try:
        config = load_config(paths.config)
        api, events = config.endpoint("api", root), config.endpoint("events", root)
    except ConfigError as exc:
        if not paths.config.exists():
            raise
        logger.warning("%s; using the default endpoints", exc)
        api = DEFAULT_API.replace("{home}", str(root))
        events = DEFAULT_EVENTS.replace("{home}", str(root))
    return api, events, server, public, secret


def _secure(
    sock: zmq.Socket[bytes], server: bytes, public: bytes, secret: bytes
) -> None:
    sock.curve_serverkey = server
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.linger = 0


def _ipc_missing(endpoint: str) -> bool:
    return endpoint.startswith("ipc://") and not os.path.exists(
        endpoint[len("ipc://") :]
    )


class Client:
    """A connection to the daemon's API as one identity.

    Args:
        endpoint: The daemon's API endpoint.
        server_key: The daemon's Z85 public key.
        public: This identity's Z85 public key.
        secret: This identity's Z85 secret key.
        timeout_s: How long each call waits for its reply by default.
    """

    def __init__(
        self,
        endpoint: str,
        server_key: bytes,
        public: bytes,
        secret: bytes,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._public = public
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._keys = (server_key, public, secret)
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._connect()

    def _connect(self) -> None:
        # IMMEDIATE: a message is queued only on a connection whose handshake
        # is done, so nothing waits in the socket for a daemon that is down
        # and gets carried out, unseen, when it comes back.
        self._socket = self._context.socket(zmq.DEALER)
        _secure(self._socket, *self._keys)
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        self._monitor = self._socket.get_monitor_socket(_AUTH_EVENTS)
        self._socket.connect(self.endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    @classmethod
    def from_home(
        cls,
        home: Path | str | None = None,
        identity: str = "admin",
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Client:
        """Connect as an identity whose keys live in a state folder."""
        api, _, server, public, secret = connect_info(home, identity)
        return cls(api, server, public, secret, timeout_s=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the sockets; pending replies are dropped."""
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)

    def new_id(self) -> str:
        """A fresh client request id (pass it again to retry a call safely)."""
        return f"{self._prefix}-{next(self._ids)}"

    def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send one op and wait for its reply.

        Args:
            op: The op's name.
            args: Its arguments.
            request_id: Reuse an id to retry an earlier call without doing it twice.
            timeout_s: Override the client's timeout for this call.

        Returns:
            The reply's ``result`` map.

        Raises:
            KeyturnError: the daemon's error, or :class:`Unreachable` when no
                reply came in time.
        """
        if _ipc_missing(self.endpoint):
            raise Unreachable(f"no daemon is listening at {self.endpoint}")
        rid = request_id or self.new_id()
        message = {"v": PROTOCOL_VERSION, "id": rid, "op": op, "args": args or {}}
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait_s
        try:
            self._send(encode(message), deadline)
            return self._wait(rid, deadline)
        except Unreachable as exc:
            # Start afresh: nothing of this call stays queued, and a late reply
            # goes to a socket that no longer exists.
            self.close()
            self._connect()
            raise Unreachable(f"{exc.message} within {wait_s:g}s") from None

    def _send(self, payload: bytes, deadline: float) -> None:
        while True:
            try:
                self._socket.send_multipart([b"", payload], zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unreachable(f"could not connect to the daemon at {self.endpoint}")
            if self._monitor.poll(min(10, max(1, int(left * 1000)))):
                self._check_monitor()

    def _wait(self, rid: str, deadline: float) -> dict[str, Any]:
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(self._poller.poll(max(1, int(left * 1000))))
            if self._monitor in ready:
                self._check_monitor()
            if self._socket in ready:
                reply = self._read_reply()
                if reply is not None and reply.get("id") in (rid, None):
                    # An error without an id answers a message the daemon could
                    # not read; only this call's message is in flight.
                    return self._result(reply)
        raise Unreachable(f"no reply from the daemon at {self.endpoint}")

    def _check_monitor(self) -> None:
        event = recv_monitor_message(self._monitor)
        if event["event"] & _AUTH_EVENTS:
            raise Refused(
                "unauthenticated",
                f"the daemon refused this key ({fingerprint(self._public)}) at the handshake",
            )

    def _read_reply(self) -> dict[str, Any] | None:
        frames = self._socket.recv_multipart()
        try:
            reply = decode_record(frames[-1])
        except (ValueError, TypeError, msgpack.ExtraData):
            logger.debug("dropped an undecodable reply")
            return None
        if not isinstance(reply, dict):
            return None
        return reply

    @staticmethod
    def _result(reply: dict[str, Any]) -> dict[str, Any]:
        if reply.get("ok") is True and isinstance(reply.get("result"), dict):
            result: dict[str, Any] = reply["result"]
            return result
        raise error_from_reply(reply.get("error"))

    # One method per op, so scripts read as what they do.

    def request(
        self,
        vendor: str,
        scopes: list[str],
        *,
        ttl: str | int,
        reason: str,
        ticket: str = "",
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Ask for scopes of a vendor.

        Returns:
            ``request``, and when policy approved it at once ``grant`` and ``token``.
        """
        args = {"vendor": vendor, "scopes": scopes, "ttl": ttl, "reason": reason}
        if ticket:
            args["ticket"] = ticket
        return self.call("request", args, request_id=request_id)

    def approve(self, request_id: str) -> dict[str, Any]:
        """Approve a pending request."""
        return self.call("approve", {"request_id": request_id})

    def deny(self, request_id: str, reason: str) -> dict[str, Any]:
        """Deny a pending request."""
        return self.call("deny", {"request_id": request_id, "reason": reason})

    def cancel(self, request_id: str) -> dict[str, Any]:
        """Withdraw one's own pending request."""
        return self.call("cancel", {"request_id": request_id})

    def revoke(self, grant_id: str, reason: str = "") -> dict[str, Any]:
        """End a grant now."""
        return self.call("revoke", {"grant_id": grant_id, "reason": reason})

    def release(self, grant_id: str) -> dict[str, Any]:
        """Give back one's own grant before it expires."""
        return self.call("release", {"grant_id": grant_id})

    def extend(self, grant_id: str, by: str | int) -> dict[str, Any]:
        """Lengthen a grant, never past its maximum."""
        return self.call("extend", {"grant_id": grant_id, "by": by})

    def list(self, *, all: bool = False, vendor: str = "") -> dict[str, Any]:
        """Grants and requests; live ones only unless ``all``."""
        args: dict[str, Any] = {"all": all}
        if vendor:
            args["vendor"] = vendor
        return self.call("list", args)

    def get(self, object_id: str) -> dict[str, Any]:
        """One request or grant by id."""
        return self.call("get", {"id": object_id})

    def snapshot(self) -> dict[str, Any]:
        """The live state with the ``seq`` it reflects."""
        return self.call("snapshot")

    def status(self) -> dict[str, Any]:
        """Counts, ``seq``, lockdown, and who we are."""
        return self.call("status")

    def lockdown(self, reason: str) -> dict[str, Any]:
        """Revoke every grant and refuse new ones until lifted."""
        return self.call("lockdown", {"reason": reason})

    def lift(self, reason: str = "") -> dict[str, Any]:
        """End a lockdown."""
        return self.call("lift", {"reason": reason})

    def verify(self, token: str) -> dict[str, Any]:
        """Ask the daemon whether a token is valid now (revocation included)."""
        return self.call("verify", {"token": token})


class Subscriber:
    """The daemon's event stream as one identity.

    Args:
        endpoint: The daemon's events endpoint.
        server_key: The daemon's Z85 public key.
        public: This identity's Z85 public key.
        secret: This identity's Z85 secret key.
        topics: Prefixes to subscribe to; everything by default.
    """

    def __init__(
        self,
        endpoint: str,
        server_key: bytes,
        public: bytes,
        secret: bytes,
        topics: tuple[str, ...] = ("",),
    ) -> None:
        self.endpoint = endpoint
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        _secure(self.socket, server_key, public, secret)
        self.socket.setsockopt(zmq.RCVHWM, SUB_RCVHWM)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.socket.connect(endpoint)

    @classmethod
    def from_home(
        cls,
        home: Path | str | None = None,
        identity: str = "admin",
        topics: tuple[str, ...] = ("",),
    ) -> Subscriber:
        """Subscribe as an identity whose keys live in a state folder."""
        _, events, server, public, secret = connect_info(home, identity)
        return cls(events, server, public, secret, topics)

    def recv(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """Return the next event, or None when none came within the timeout."""
        if timeout_s is not None and not self.socket.poll(int(timeout_s * 1000)):
            return None
        frames = self.socket.recv_multipart()
        try:
            event = decode_record(frames[-1])
        except (ValueError, TypeError, msgpack.ExtraData):
            return None
        return event if isinstance(event, dict) else None

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
