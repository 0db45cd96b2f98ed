"""The engine's Redis clients write every command as redis-py would, plain arguments packed by hiredis."""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest
import redis
from redis.connection import Connection

from engine.command_packer import CommandPacker, command_packer
from engine.connections import redis_client

REDIS_PY = Connection()._command_packer  # redis-py's own packer, as a plain client has it


class Level(enum.IntEnum):
    LOW = 1


COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "0" * 40, 2, "wf:{a}", "wf:{a}:a", '{"op":"advance","é":"ü"}', b"x\x01\x00packed"),
    ("SET", "k", 1.5), ("SET", "k", 1e16), ("SET", "k", 0.1), ("SET", "k", -0.0), ("SET", "k", math.inf),
    ("SET", "k", 2**70), ("SET", "k", -(2**63)), ("HSET", "k", "f", "v\x00w"), ("GET", b"k"),
    ("SCRIPT LOAD", "return 1"),  # a two-word name: redis-py splits it
    ("SET", "k", Level.LOW),  # a subclass: redis-py's own path
    ("SET", "k", memoryview(b"abc")), ("SET", "k", bytearray(b"abc")),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: f"{args[0]}:{type(args[-1]).__name__}")
def test_every_command_is_written_as_redis_py_writes_it(args: tuple[Any, ...]) -> None:
    assert b"".join(CommandPacker().pack(*args)) == b"".join(REDIS_PY.pack(*args))


@pytest.mark.parametrize("bad", [True, None, [1], {"a": 1}])
def test_what_redis_py_refuses_is_refused_as_before(bad: Any) -> None:
    with pytest.raises(redis.DataError):
        CommandPacker().pack("SET", "k", bad)


def test_clients_use_it_unless_given_an_encoding_of_their_own(redis_url: str, real_redis: redis.Redis,
                                                             key_prefix: str) -> None:
    client = redis_client(redis_url)
    assert isinstance(client.connection_pool.connection_kwargs["command_packer"], CommandPacker)
    assert command_packer("redis://h/0", {"encoding": "latin-1"}) is None
    assert command_packer("redis://h/0?encoding=latin-1", {}) is None
    key = f"{key_prefix}:packed"
    try:
        pipe = client.pipeline()
        pipe.hset(key, mapping={"a": 1, "b": "é", "c": b"\x00"})
        pipe.hgetall(key)
        assert pipe.execute()[1] == {b"a": b"1", b"b": "é".encode(), b"c": b"\x00"}
        assert client.eval("return ARGV[1] .. ARGV[2]", 0, 2.5, "x") == b"2.5x"
    finally:
        client.delete(key)
        client.close()

