"""The wire protocol: message shapes, ops, and typed access to arguments.

A request is ``{"v": 1, "id": ..., "op": ..., "args": {...}}``; a reply is
``{"v": 1, "id": ..., "ok": true, "result": {...}}`` or the same with
``"ok": false`` and ``"error": {"code", "message"}``. See ARCHITECTURE.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from keyturn.shared.errors import BadInput, KeyturnError

__all__ = [
    "OPS",
    "PROTOCOL_VERSION",
    "Args",
    "Message",
    "client_id_of",
    "error_reply",
    "ok_reply",
    "parse_message",
]

PROTOCOL_VERSION = 1
"""The only version this build speaks."""

OPS = (
    "request",
    "approve",
    "deny",
    "cancel",
    "revoke",
    "release",
    "extend",
    "list",
    "get",
    "snapshot",
    "status",
    "lockdown",
    "lift",
    "verify",
    "force",
)
"""Every op of the API, in the order of ARCHITECTURE.md."""

MAX_ID_CHARS = 64
"""Longest client request id."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""Control and bidirectional-override characters: a terminal would act on them."""
MAX_TEXT_CHARS = 1000
"""Longest free text (reason, ticket) an argument may hold."""

_ClientId = str | int


@dataclass(frozen=True, slots=True)
class Message:
    """A request as the daemon received it, shape already checked."""

    id: _ClientId
    op: str
    args: Args


class Args:
    """Typed, checked access to an op's ``args`` map.

    Every getter raises :class:`BadInput` (``bad_request``) naming the argument
    when it is missing or of the wrong type, so a handler reads its arguments
    in one line each.
    """

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def raw(self, name: str) -> Any:
        """Return an argument as sent, or None."""
        return self._data.get(name)

    def text(self, name: str, *, required: bool = True, default: str = "") -> str:
        """Return a string argument, stripped, at most :data:`MAX_TEXT_CHARS`."""
        value = self._data.get(name)
        if value is None:
            if required:
                raise BadInput("bad_request", f"argument {name!r} is required")
            return default
        if not isinstance(value, str):
            raise BadInput("bad_request", f"argument {name!r} must be a string")
        value = value.strip()
        if _CONTROL.search(value):
            raise BadInput(
                "bad_request",
                f"argument {name!r} holds control characters; send plain text",
            )
        if len(value) > MAX_TEXT_CHARS:
            raise BadInput(
                "bad_request", f"argument {name!r} is longer than {MAX_TEXT_CHARS}"
            )
        if required and not value:
            raise BadInput("bad_request", f"argument {name!r} must not be empty")
        return value

    def flag(self, name: str) -> bool:
        """Return a boolean argument, False when absent."""
        value = self._data.get(name, False)
        if not isinstance(value, bool):
            raise BadInput("bad_request", f"argument {name!r} must be true or false")
        return value

    def strings(self, name: str) -> list[str]:
        """Return a non-empty list of strings."""
        value = self._data.get(name)
        if not isinstance(value, list) or not value:
            raise BadInput("bad_request", f"argument {name!r} must be a non-empty list")
        if not all(isinstance(item, str) for item in value):
            raise BadInput("bad_request", f"argument {name!r} must hold only strings")
        return value


def parse_message(value: Any) -> Message:
    """Check the shape of a decoded request.

    Raises:
        BadInput: ``bad_request`` for a wrong shape, ``unsupported_version``
            for another protocol version, ``unknown_op`` for an op not in
            :data:`OPS`.
    """
    if not isinstance(value, dict):
        raise BadInput("bad_request", "a message must be a map")
    client_id = value.get("id")
    if isinstance(client_id, bool) or not isinstance(client_id, str | int):
        raise BadInput("bad_request", "'id' must be a string or an integer")
    if isinstance(client_id, str) and not 0 < len(client_id) <= MAX_ID_CHARS:
        raise BadInput("bad_request", f"'id' must be 1 to {MAX_ID_CHARS} characters")
    if value.get("v") != PROTOCOL_VERSION:
        raise BadInput(
            "unsupported_version", f"protocol version must be {PROTOCOL_VERSION}"
        )
    op = value.get("op")
    if not isinstance(op, str):
        raise BadInput("bad_request", "'op' must be a string")
    if op not in OPS:
        raise BadInput("unknown_op", f"unknown op {op[:40]!r}")
    args = value.get("args", {})
    if not isinstance(args, dict):
        raise BadInput("bad_request", "'args' must be a map")
    return Message(client_id, op, Args(args))


def client_id_of(value: Any) -> _ClientId | None:
    """Return the request id of a message that failed its checks, if it has a usable one."""
    if not isinstance(value, dict):
        return None
    client_id = value.get("id")
    if isinstance(client_id, bool) or not isinstance(client_id, str | int):
        return None
    if isinstance(client_id, str) and len(client_id) > MAX_ID_CHARS:
        return None
    return client_id


def ok_reply(client_id: _ClientId | None, result: dict[str, Any]) -> dict[str, Any]:
    """Build a success reply."""
    return {"v": PROTOCOL_VERSION, "id": client_id, "ok": True, "result": result}


def error_reply(client_id: _ClientId | None, error: KeyturnError) -> dict[str, Any]:
    """Build an error reply."""
    return {
        "v": PROTOCOL_VERSION,
        "id": client_id,
        "ok": False,
        "error": error.to_wire(),
    }
