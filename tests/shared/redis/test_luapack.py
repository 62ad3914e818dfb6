"""Script arguments packed as one msgpack value reach Lua byte for byte, whatever their size."""

import pytest

from shared.redis import luapack

ECHO = "local t = cmsgpack.unpack(ARGV[1]); return t"


@pytest.mark.parametrize("size", [0, 1, 31, 32, 255, 256, 65_535, 65_536, 300_000])
async def test_binary_values_arrive_unchanged(r, size):
    value = bytes((i * 7 + 3) % 256 for i in range(size))  # not valid UTF-8, includes NULs
    echoed = await r.eval(ECHO, 0, luapack.pack([luapack.lua_bytes(value), "text", 42]))
    assert echoed == [value, b"text", 42]


async def test_plain_bytes_are_refused_by_redis_cmsgpack(r):
    """Why lua_bytes exists: msgpack `bin` (how bytes encode by default) is unreadable in Redis's Lua."""
    with pytest.raises(Exception, match="Bad data format"):
        await r.eval(ECHO, 0, luapack.pack([b"\x00\xff"]))
