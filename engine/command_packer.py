"""How the engine's Redis clients write a command on the wire: by hiredis, argument for argument.

redis-py (with hiredis installed) runs every argument of every command through its Python
``Encoder`` before it hands the tuple to ``hiredis.pack_command``, which encodes strings, bytes,
integers and floats itself, to the same bytes (a string as UTF-8, a number as ``repr`` writes
it). That is most of the cost of sending a command: about 16 us of a worker's CPU for the
13 arguments of a step's EVALSHA, 4 us packed by hiredis alone.

:class:`CommandPacker` hands a command whose arguments are all plain ``str``, ``bytes``, ``int``
or ``float`` to hiredis as it is; any other command (another type, a subclass such as a bool
or an enum, a memoryview, a command name of two words like ``SCRIPT LOAD``) goes to redis-py's
own packer, which packs or refuses it exactly as before. The clients made by
:func:`engine.connections.redis_client` use it (``command_packer``, a connection option of
redis-py); without hiredis they keep redis-py's pure-Python packer.
"""

from __future__ import annotations

from typing import Any

from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer
from redis.utils import HIREDIS_AVAILABLE

__all__ = ["CommandPacker", "command_packer"]

#: The argument types hiredis packs to the bytes redis-py's encoder would give (exact types only).
_PLAIN = frozenset({str, bytes, int, float})
#: redis-py's own buffer cutoff and encoding (UTF-8, strict): what its default packer is built with.
_BUFFER_CUTOFF = 6000
_ENCODER = Encoder("utf-8", "strict", False)


class CommandPacker:
    """A redis-py command packer: plain arguments straight to ``hiredis.pack_command``, the rest to redis-py's."""

    def __init__(self) -> None:
        import hiredis

        self._pack_command = hiredis.pack_command
        fallback = PythonRespSerializer(_BUFFER_CUTOFF, _ENCODER.encode)
        self._fallback = HiredisRespSerializer(fallback.pack, _ENCODER.encode).pack

    def pack(self, *args: Any) -> list[bytes]:
        """The command ``args`` in the Redis protocol, as one or more chunks."""
        name = args[0]
        if type(name) is str and " " not in name and _PLAIN.issuperset(map(type, args)):
            return [self._pack_command(args)]
        return self._fallback(*args)


def command_packer(url: str, options: dict[str, Any]) -> CommandPacker | None:
    """The packer for a client of ``url`` with ``options``; None (redis-py's own) when hiredis is not
    installed or the client is given an encoding of its own (this packer writes UTF-8)."""
    if not HIREDIS_AVAILABLE or "encoding" in url or any(name.startswith("encoding") for name in options):
        return None
    return CommandPacker()
