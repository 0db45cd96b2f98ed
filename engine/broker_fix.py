"""A work-around for kombu's Redis transport: a worker must survive a Redis restart.

The crash (kombu 5.7.0, celery 5.7.0, redis-py 8.1; the same path as celery/kombu#582):
when the broker connection breaks while the consumer has a ``BRPOP`` outstanding and holds
unacknowledged messages (a prefork node with an idle child), celery's
``on_connection_error_after_connected`` calls ``connection.collect()`` and then
``connection.close()``. In ``collect`` the channel's first ``close()`` fails reading the
dead ``BRPOP`` socket (a connection error, ignored) before the channel is marked closed, and
kombu then detaches the transport from its connection (``transport.client = None``). The
second ``close()`` gives the unacked messages back to Redis through a new connection pool,
whose parameters come from ``transport.client``: ``AttributeError: 'NoneType' object has no
attribute 'hostname'``, which celery does not count as a connection error, so the worker
logs ``Unrecoverable error`` and exits.

The fix: each Redis channel remembers the connection details it was created with, and builds
its pool from them when the transport was detached. The unacked messages then go back to
their queue at once (Redis already up again), or the restore fails with a connection error
that celery ignores (Redis still down: the messages stay in kombu's unacked index, and the
engine's sweeper re-sends their steps meanwhile; a late redelivery is a recorded no-op).

:func:`install` is called by the worker bootstrap (``engine.worker``) before any connection
exists. Remove this module once kombu's ``Channel._connparams`` copes with a detached transport
(``tests/faults/test_redis_restarts_under_load.py`` tells).
"""

from __future__ import annotations

from typing import Any

_MARK = "_tradeflow_conninfo"


def install() -> bool:
    """Patch kombu's Redis channel (idempotent); False when kombu's layout is not the expected one."""
    from kombu.transport import redis as kombu_redis

    channel_class = kombu_redis.Channel
    if getattr(channel_class, "_tradeflow_patched", False):
        return True
    original_init = channel_class.__init__
    original_connparams = getattr(channel_class, "_connparams", None)
    if original_connparams is None:
        return False

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        setattr(self, _MARK, getattr(args[0] if args else kwargs.get("connection"), "client", None))
        original_init(self, *args, **kwargs)

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        remembered = getattr(self, _MARK, None)
        if transport is None or transport.client is not None or remembered is None:
            return original_connparams(self, asynchronous=asynchronous)
        transport.client = remembered  # only for the time it takes to read the parameters
        try:
            return original_connparams(self, asynchronous=asynchronous)
        finally:
            transport.client = None

    channel_class.__init__ = __init__
    channel_class._connparams = _connparams
    channel_class._tradeflow_patched = True
    return True
