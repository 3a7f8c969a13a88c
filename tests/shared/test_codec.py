"""The msgpack codec refuses hostile frames before they cost anything (C-09)."""

from __future__ import annotations

import msgpack
import pytest

from keyturn.shared.codec import (
    MAX_ARRAY_LEN,
    MAX_FRAME_BYTES,
    MAX_MAP_LEN,
    decode,
    encode,
)
from keyturn.shared.errors import BadInput
from keyturn.shared.protocol import parse_message


def _code(frame: bytes) -> str:
    with pytest.raises(BadInput) as caught:
        decode(frame)
    return caught.value.code


def test_good_message_round_trips() -> None:
    """A well-formed request decodes to what was sent."""
    message = {"v": 1, "id": "a-1", "op": "status", "args": {}}
    assert decode(encode(message)) == message


def test_oversized_frame_refused_before_decoding() -> None:
    """C-09: a frame over the limit is too_large."""
    assert _code(b"\x00" * (MAX_FRAME_BYTES + 1)) == "too_large"


@pytest.mark.parametrize(
    "frame",
    [
        b"\xdf\xff\xff\xff\xff",  # a map announcing 4 billion entries
        b"\xdd\xff\xff\xff\xff",  # an array announcing 4 billion entries
        b"\x91" * 10_000 + b"\xc0",  # 10,000 levels of nesting
        msgpack.packb(msgpack.ExtType(5, b"boom")),  # an ext type
        msgpack.packb({"a": 1})[:-1],  # truncated
        b"\xc1",  # a never-used byte
        msgpack.packb({"a": 1}) + b"\x00",  # extra data
        msgpack.packb({1: 2}),  # non-string map key
        msgpack.packb(list(range(MAX_ARRAY_LEN + 1))),
        msgpack.packb({str(i): i for i in range(MAX_MAP_LEN + 1)}),
        msgpack.packb("x" * 9000),
        msgpack.packb(b"x" * 2000),
    ],
)
def test_hostile_frames_are_bad_frame(frame: bytes) -> None:
    """C-09: each hostile shape is refused as bad_frame, quickly."""
    assert _code(frame) == "bad_frame"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ([1, 2], "bad_request"),
        ({"v": 1, "op": "status"}, "bad_request"),
        ({"v": 1, "id": True, "op": "status"}, "bad_request"),
        ({"v": 1, "id": "x" * 65, "op": "status"}, "bad_request"),
        ({"v": 2, "id": 1, "op": "status"}, "unsupported_version"),
        ({"v": 1, "id": 1, "op": "explode"}, "unknown_op"),
        ({"v": 1, "id": 1, "op": 5}, "bad_request"),
        ({"v": 1, "id": 1, "op": "status", "args": []}, "bad_request"),
    ],
)
def test_wrong_shapes_get_their_code(value: object, code: str) -> None:
    """Valid msgpack of the wrong shape is refused with a precise code."""
    with pytest.raises(BadInput) as caught:
        parse_message(value)
    assert caught.value.code == code
