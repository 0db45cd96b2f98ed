"""The store's documents: how they are written and read (compact JSON by :mod:`engine.jsoncodec`,
zlib-compressed when long), and the typed documents of its state-change operations.

A :class:`Placement` says where a change leaves an instance (node, status, and the index
entries that go with them); :class:`NewInstance` is one instance to create; :class:`Applied`
is what an operation did; :class:`Envelope` is a step message the same script pushes. Activity
records are :class:`engine.instance.Activity`.
"""

from __future__ import annotations

import struct as _struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any

from engine.instance import Activity, InstanceStatus
from engine.jsoncodec import dumps, encode, loads
from engine.keyspace import text

try:  # ISA-L's deflate: the same zlib streams, several times faster than zlib's own at these sizes
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - isal is a dependency; without it zlib compresses and decompresses
    _isal_zlib = None

__all__ = ["COMPRESS_OVER", "JSON_FIELDS", "Applied", "Envelope", "NewInstance", "Placement",
           "compress", "decode_activities", "decode_instance_hash", "decode_split_hash", "dumps", "dumps_with",
           "load", "pack", "pack_text", "seconds", "split_hash", "text", "unpack"]

#: JSON documents longer than this are stored zlib-compressed (holdings, proposals, activity records).
COMPRESS_OVER = 256
#: Documents up to this long are compressed with zlib's memory level 4 instead of its default 8:
#: a smaller hash table to set up (zlib.compress's own, 128 KiB, is most of the cost of
#: compressing a document of a few hundred bytes), and output of the same size below it.
SMALL_DEFLATE = 4096
#: Hash fields that hold JSON documents (besides the context entries ``c:<node>``).
JSON_FIELDS = frozenset({"data", "result", "error", "quorum"})


def dumps_with(value: dict[str, Any], key: str, encoded: str) -> str:
    """``dumps(value)`` when ``value[key]`` is already encoded as ``encoded`` (``dumps(value[key])``):
    the same text, without encoding that part again."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    part = before
    for name, item in value.items():
        if name == key:
            part = after
        else:
            part[name] = item
    head, tail = dumps(before)[:-1], dumps(after)[1:]
    return "".join((head, "," if before else "", dumps(key), ":", encoded, "," if after else "", tail))


def compress(data: bytes) -> bytes:
    """``data`` zlib-compressed (a 32 KiB window: the stream starts with byte 0x78); any zlib reader
    reads it back.

    By ISA-L (``isal``, level 1: about 9 us for a document of 2 KB where zlib's level 1 takes about
    45, and a little smaller output) when it is installed, else by zlib at level 1.
    """
    if _isal_zlib is not None:
        return _isal_zlib.compress(data, 1)
    if len(data) > SMALL_DEFLATE:
        return zlib.compress(data, 1)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 4)
    return deflate.compress(data) + deflate.flush()


#: A zlib stream's data: ISA-L's inflate when installed (about 1.6 times zlib's speed), else zlib's.
_decompress = _isal_zlib.decompress if _isal_zlib is not None else zlib.decompress


def pack(value: Any) -> str | bytes:
    """``value`` as stored: compact JSON, zlib-compressed when long."""
    data = encode(value)
    return compress(data) if len(data) > COMPRESS_OVER else data.decode()


def pack_text(text: str) -> str | bytes:
    """A document's compact JSON as stored: zlib-compressed when long.

    A zlib stream starts with byte 0x78 ("x"), which no JSON text starts with, so
    :func:`unpack` tells the two apart without a marker.
    """
    data = text.encode()
    return compress(data) if len(data) > COMPRESS_OVER else text


def unpack(raw: bytes | str) -> str:
    """The JSON text of a stored document (compressed or not)."""
    if isinstance(raw, str):
        return raw
    return _decompress(raw).decode() if raw[:1] == b"x" else raw.decode()


def load(raw: bytes | str) -> Any:
    """The value of a stored document (compressed or not)."""
    if isinstance(raw, bytes) and raw[:1] == b"x":
        raw = _decompress(raw)
    return loads(raw)


def split_sizes(sizes: bytes) -> tuple[int, ...]:
    """The byte lengths of a split hash: little-endian unsigned 32-bit integers, end to end."""
    count, odd = divmod(len(sizes), 4)
    if odd:
        raise ValueError(f"a split hash's lengths take 4 bytes each, not {len(sizes)} bytes in all")
    return _struct.unpack(f"<{count}I", sizes)


def split_hash(sizes: bytes, joined: bytes) -> dict[bytes, bytes]:
    """A hash sent as two strings (its fields' and values' byte lengths, see :func:`split_sizes`,
    in HGETALL order, and all of them end to end) as HGETALL gives it."""
    ends = list(accumulate(split_sizes(sizes)))
    parts = [joined[start:end] for start, end in zip([0, *ends], ends, strict=False)]
    return dict(zip(parts[0::2], parts[1::2], strict=True))


def decode_instance_hash(raw: dict[Any, Any]) -> dict[str, Any]:
    """An instance hash as read from Redis: its plain fields as text, its JSON documents
    unpacked (UTF-8 bytes, or text when given text) for :meth:`engine.instance.Instance.from_hash`."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = text(key)
        if name in JSON_FIELDS or name.startswith("c:"):
            out[name] = _decompress(value) if isinstance(value, bytes) and value[:1] == b"x" else value
        else:
            out[name] = text(value)
    return out


def decode_split_hash(sizes: bytes, joined: bytes) -> dict[str, Any]:
    """``decode_instance_hash(split_hash(sizes, joined))`` in one pass (a start's reply), without the
    hash of bytes between."""
    ends = iter(accumulate(split_sizes(sizes)))
    out: dict[str, Any] = {}
    json_fields = JSON_FIELDS
    start = 0
    for name_end in ends:
        name = joined[start:name_end].decode()
        start = next(ends, None)
        if start is None:
            raise ValueError("a split hash of an odd number of lengths: fields and values go in pairs")
        value = joined[name_end:start]
        if name in json_fields or name[:2] == "c:":
            out[name] = _decompress(value) if value[:1] == b"x" else value
        else:
            out[name] = value.decode()
    return out


def decode_activities(raw: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """Activity records as read from Redis."""
    return [load(record) for record in raw]


# -- the typed documents of state changes -------------------------------------------------------


def seconds(value: float | None) -> str | None:
    """A time as the script receives it: a string keeps every digit (Lua numbers print 14)."""
    return None if value is None else repr(value)


@dataclass(frozen=True)
class Envelope:
    """A step message ready to be pushed onto a Redis list (``key``) by the same script as a state change."""

    key: str
    body: str


@dataclass(frozen=True)
class Placement:
    """Where a change leaves an instance; fields left None keep what the instance has."""

    status: InstanceStatus | None = None
    node: str | None = None
    inflight: bool | None = None
    #: Running, started: when the sweeper calls the step in flight lost.
    deadline: float | None = None
    #: Running, sent and waiting for a worker: no deadline yet (a backlog is not a loss); the
    #: ``start`` operation sets one this many seconds after a worker starts the step.
    queued: float | None = None
    #: Waiting, awaiting with a timeout, or a retry backoff: when the timer is due, and its kind
    #: ("wake" | "timeout" | "retry").
    timer: float | None = None
    timer_kind: str = ""
    #: An end's result.
    result: Any = None
    #: Context entries deleted if the instance ends ``succeeded`` here.
    drop_on_success: Sequence[str] = ()
    #: Gathering: the batch the instance joins (name, group, close time, node...) and its contribution.
    gather: dict[str, Any] | None = None
    contribution: Any = None
    #: Waiting for a limit: why (``rate: brokerage``), kept on the instance while it waits.
    reason: str | None = None
    #: Running, sent: its message goes to the head of its queue, ahead of those waiting there (a
    #: step woken from a limit's line: its turn came, and the call it was woken for is free now).
    front: bool = False

    @classmethod
    def step(cls, node: str, deadline: float) -> Placement:
        """Running ``node``'s step, started now: lost unless it progresses by ``deadline``."""
        return cls(InstanceStatus.RUNNING, node, inflight=True, deadline=deadline)

    @classmethod
    def queued_step(cls, node: str, allowance: float) -> Placement:
        """Running ``node``'s step, sent: once a worker starts it, lost unless it progresses within ``allowance`` s.

        The same (frozen) placement for the same node and allowance: every step sent to a node
        is placed alike, and a placement and its document are built once, not on each step.
        """
        return _queued_step(cls, node, allowance)

    @classmethod
    def wait(cls, node: str, wake_at: float) -> Placement:
        """Waiting at ``node`` until ``wake_at``."""
        return cls(InstanceStatus.WAITING, node, inflight=False, timer=wake_at, timer_kind="wake")

    @classmethod
    def limited(cls, until: float, reason: str) -> Placement:
        """A started step over its limit waits (at its node) until ``until``, when a ``limit`` timer re-sends it."""
        return cls(InstanceStatus.WAITING, inflight=False, timer=until, timer_kind="limit", reason=reason)

    @classmethod
    def awaiting(cls, node: str, timeout: float | None) -> Placement:
        """Awaiting a signal at ``node``; its timeout (if any) is a timer of kind ``timeout``."""
        return cls(InstanceStatus.AWAITING, node, inflight=False, timer=timeout,
                   timer_kind="timeout" if timeout is not None else "")

    @classmethod
    def gathering(cls, node: str, gather: dict[str, Any], contribution: Any) -> Placement:
        """Gathering at ``node``: joins the batch ``gather`` describes with ``contribution``."""
        return cls(InstanceStatus.GATHERING, node, inflight=False, gather=gather, contribution=contribution)

    @classmethod
    def end(cls, node: str, status: InstanceStatus, result: Any = None,
            drop_on_success: Sequence[str] = ()) -> Placement:
        """Ended at ``node`` in ``status`` (with its ``result``)."""
        return cls(status, node, inflight=False, result=result, drop_on_success=tuple(drop_on_success))

    def document(self) -> dict[str, Any]:
        """The ``place`` field of an operation's document (absent fields left out); a new dict each time.

        Built once per placement (a placement does not change) and kept on it, beside its fields.
        """
        built = self.__dict__.get("_document")
        if built is None:
            built = {}
            if self.status is not None:
                built["status"] = self.status.value
            for name, value in (("node", self.node), ("inflight", self.inflight),
                                ("deadline", seconds(self.deadline)), ("queued", seconds(self.queued)),
                                ("timer", seconds(self.timer)), ("timer_kind", self.timer_kind or None),
                                ("drop", list(self.drop_on_success) or None), ("reason", self.reason),
                                ("front", self.front or None)):
                if value is not None:
                    built[name] = value
            object.__setattr__(self, "_document", built)
        return dict(built)


@lru_cache(maxsize=1024)
def _queued_step(cls: type[Placement], node: str, allowance: float) -> Placement:
    return cls(InstanceStatus.RUNNING, node, inflight=True, queued=allowance)


@dataclass(frozen=True)
class NewInstance:
    """One instance to create: its identity, initial data, first activity and first placement."""

    id: str
    workflow: str
    version: int
    run: str
    data: dict[str, Any]
    created_at: float
    activity: Activity
    placement: Placement
    error: dict[str, Any] | None = None
    #: The first step's message, pushed by the same script (None: none, or sent by the caller).
    send: Envelope | None = None
    #: A shadow instance (engine.definitions.shadow): marked ``shadow`` in its hash.
    shadow: bool = False


@dataclass(frozen=True)
class Applied:
    """What a state-change operation did."""

    applied: bool
    status: InstanceStatus | None
    seq: int | None
    #: The batch a gathering instance joined, and whether nothing else of its run could still arrive.
    batch: str | None = None
    last: bool = False

    @property
    def missing(self) -> bool:
        """True when the instance does not exist (expired or never created)."""
        return self.status is None
