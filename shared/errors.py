"""The error family of keyturn, designed once.

Every failure that can reach a client is a :class:`KeyturnError` with a stable
string ``code``. The daemon turns each into an error reply; the client turns
each error reply back into the same class; the command line maps the code's
category onto its exit status.

    KeyturnError
    ├── BadInput          (exit 2: the caller's input is wrong)
    ├── Refused           (exit 1: the daemon understood and said no)
    ├── Unreachable       (exit 3: no answer from the daemon)
    └── InternalError     (exit 1: the daemon failed; see its log)
"""

from __future__ import annotations

from enum import Enum
from typing import Any

__all__ = [
    "ERROR_CODES",
    "BadInput",
    "Category",
    "InternalError",
    "KeyturnError",
    "Refused",
    "Unreachable",
    "UsageError",
    "error_from_reply",
]


class Category(Enum):
    """What kind of failure a code names; the command line's exit status follows."""

    BAD_INPUT = "bad_input"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    INTERNAL = "internal"


ERROR_CODES: dict[str, Category] = {
    "bad_request": Category.BAD_INPUT,
    "bad_frame": Category.BAD_INPUT,
    "too_large": Category.BAD_INPUT,
    "unsupported_version": Category.BAD_INPUT,
    "unknown_op": Category.BAD_INPUT,
    "bad_duration": Category.BAD_INPUT,
    "unknown_vendor": Category.BAD_INPUT,
    "invalid_scope": Category.BAD_INPUT,
    "scope_not_allowed": Category.REFUSED,
    "duration_exceeds_max": Category.REFUSED,
    "policy_denied": Category.REFUSED,
    "not_found": Category.REFUSED,
    "invalid_state": Category.REFUSED,
    "forbidden": Category.REFUSED,
    "self_approval": Category.REFUSED,
    "unauthenticated": Category.REFUSED,
    "lockdown": Category.REFUSED,
    "conflict": Category.REFUSED,
    "duplicate_id": Category.REFUSED,
    "too_many_pending": Category.REFUSED,
    "expired": Category.REFUSED,
    "internal": Category.INTERNAL,
}
"""Every code the daemon can send, with its category. Documented in ARCHITECTURE.md."""


class KeyturnError(Exception):
    """A failure with a stable code that can cross the wire.

    Args:
        code: One of :data:`ERROR_CODES` (or ``unreachable`` on the client side).
        message: A sentence an operator can act on. Never holds a secret.
    """

    category = Category.INTERNAL

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, str] = {}

    def with_details(self, **details: str) -> KeyturnError:
        """Attach fields a script may act on (e.g. the ``request_id`` policy denied)."""
        self.details.update(details)
        return self

    def to_wire(self) -> dict[str, str]:
        """Return the ``error`` map of an error reply."""
        return {**self.details, "code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadInput(KeyturnError):
    """The request itself is wrong: fix the input and try again."""

    category = Category.BAD_INPUT


class UsageError(BadInput):
    """Bad usage caught on the client side, before anything was sent."""

    def __init__(self, message: str) -> None:
        super().__init__("usage", message)


class Refused(KeyturnError):
    """The daemon understood the request and refused it."""

    category = Category.REFUSED


class Unreachable(KeyturnError):
    """No answer from the daemon in time, or it refused our key at the handshake."""

    category = Category.UNREACHABLE

    def __init__(self, message: str) -> None:
        super().__init__("unreachable", message)


class InternalError(KeyturnError):
    """The daemon failed while handling a request; its log says more."""

    category = Category.INTERNAL

    def __init__(self, message: str = "internal error; see the daemon's log") -> None:
        super().__init__("internal", message)


_CLASSES: dict[Category, type[KeyturnError]] = {
    Category.BAD_INPUT: BadInput,
    Category.REFUSED: Refused,
}


def error_from_reply(error: Any) -> KeyturnError:
    """Rebuild the error an error reply carries.

    Args:
        error: The ``error`` value of a reply.

    Returns:
        The matching :class:`KeyturnError` subclass; an unknown or malformed
        error becomes an :class:`InternalError`.
    """
    if not isinstance(error, dict):
        return InternalError("malformed error reply")
    code = error.get("code")
    message = error.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return InternalError("malformed error reply")
    category = ERROR_CODES.get(code)
    if category is None or category is Category.INTERNAL:
        return InternalError(message)
    details = {
        k: v
        for k, v in error.items()
        if k not in ("code", "message") and isinstance(v, str)
    }
    return _CLASSES[category](code, message).with_details(**details)
