"""The msgpack codec with its limits: pure functions, no sockets.

A frame is refused before it is decoded when it is larger than
:data:`MAX_FRAME_BYTES`; while decoding, strings, binaries, arrays and maps are
bounded and ext types are refused, so a hostile frame can neither make the
decoder allocate much nor smuggle objects in.
"""

from __future__ import annotations

from typing import Any

import msgpack

from keyturn.shared.errors import BadInput

__all__ = [
    "MAX_ARRAY_LEN",
    "MAX_FRAME_BYTES",
    "MAX_MAP_LEN",
    "MAX_STR_LEN",
    "decode",
    "decode_record",
    "encode",
]

MAX_FRAME_BYTES = 64 * 1024
"""Largest message a client may send."""
MAX_STR_LEN = 8 * 1024
"""Longest string inside a message."""
MAX_BIN_LEN = 1024
"""Longest binary inside a message."""
MAX_ARRAY_LEN = 256
"""Most elements in one array of a message."""
MAX_MAP_LEN = 64
"""Most keys in one map of a message."""


def encode(value: Any) -> bytes:
    """Encode a value as msgpack (binary and text kept apart)."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise BadInput("bad_frame", f"msgpack ext type {code} is not accepted")


def decode(frame: bytes) -> Any:
    """Decode one client message within the limits.

    Args:
        frame: The raw frame as received.

    Returns:
        The decoded value (any msgpack shape; the protocol layer checks it).

    Raises:
        BadInput: ``too_large`` past :data:`MAX_FRAME_BYTES`; ``bad_frame`` for
            truncated or malformed msgpack, ext types, too deep nesting, or a
            container past its limit.
    """
    if len(frame) > MAX_FRAME_BYTES:
        raise BadInput(
            "too_large",
            f"message of {len(frame)} bytes; the limit is {MAX_FRAME_BYTES}",
        )
    try:
        return msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=MAX_STR_LEN,
            max_bin_len=MAX_BIN_LEN,
            max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except BadInput:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, RecursionError) as exc:
        raise BadInput(
            "bad_frame", f"not a valid msgpack message ({_why(exc)})"
        ) from exc


def decode_record(data: bytes) -> Any:
    """Decode a journal record or an event written by keyturn itself."""
    return msgpack.unpackb(data, raw=False)


def _why(exc: Exception) -> str:
    if isinstance(exc, msgpack.ExtraData):
        return "extra data after the message"
    text = str(exc) or type(exc).__name__
    return text[:120]
