"""Script arguments packed into one msgpack value that Lua unpacks with `cmsgpack.unpack`.

redis-py encodes every command argument in Python; a script call carrying thousands of small
arguments spent most of the dispatcher's CPU in that loop. One msgpack blob, encoded in C, is a
single argument. Redis's bundled cmsgpack reads msgpack `str` but not `bin`, so binary values are
wrapped as `str` (Lua strings are binary-safe)."""

from __future__ import annotations

import struct
from typing import Any

import msgspec

_encoder = msgspec.msgpack.Encoder()


def lua_bytes(value: bytes) -> msgspec.Raw:
    """`value` as a msgpack str holding the raw bytes, which Lua receives unchanged."""
    n = len(value)
    if n < 32:
        head = bytes((0xA0 | n,))
    elif n < 0x100:
        head = b"\xd9" + bytes((n,))
    elif n < 0x10000:
        head = b"\xda" + struct.pack(">H", n)
    else:
        head = b"\xdb" + struct.pack(">I", n)
    return msgspec.Raw(head + value)


def pack(value: Any) -> bytes:
    return _encoder.encode(value)


class KeyList:
    """The KEYS of one script call, built as operations name them: `index(name)` is the 1-based
    index Lua reads it at, each name listed once."""

    def __init__(self, fixed: list[str]) -> None:
        self.keys = list(fixed)
        self._index = {name: i + 1 for i, name in enumerate(self.keys)}

    def index(self, name: str) -> int:
        if name not in self._index:
            self.keys.append(name)
            self._index[name] = len(self.keys)
        return self._index[name]
