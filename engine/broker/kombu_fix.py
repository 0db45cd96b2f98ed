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

The same happens to a ``sentinel://`` broker when its master dies (a Sentinel failover): the
sentinel channel's pool reads the sentinels' addresses from ``transport.client.alt``,
``AttributeError: 'NoneType' object has no attribute 'alt'``.

The fix: each Redis channel remembers the connection details it was created with, and builds
its pool from them when the transport was detached (the plain and the sentinel pool alike).
The unacked messages then go back to their queue at once (Redis already up again), or the
restore fails with a connection error that celery ignores (Redis still down: the messages stay
in kombu's unacked index, and the engine's sweeper re-sends their steps meanwhile; a late
redelivery is a recorded no-op).

:func:`install` is called by the worker bootstrap (``engine.worker``) before any connection
exists. Remove this module once kombu's ``Channel._connparams`` and
``SentinelChannel._sentinel_managed_pool`` cope with a detached transport
(``tests/contract/test_broker_contract.py`` and ``tests/faults/test_redis_restarts_under_load.py`` tell).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_MARK = "_tradeflow_conninfo"


def _reattached(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of a channel, run with the remembered connection while the transport is detached."""

    def wrapper(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        remembered = getattr(self, _MARK, None)
        if transport is None or transport.client is not None or remembered is None:
            return method(self, asynchronous)
        transport.client = remembered  # only for the time it takes to read the parameters
        try:
            return method(self, asynchronous)
        finally:
            transport.client = None

    wrapper.__name__ = method.__name__
    return wrapper


def install() -> bool:
    """Patch kombu's Redis channels (idempotent); False when kombu's layout is not the expected one."""
    from kombu.transport import redis as kombu_redis

    channel_class, sentinel_class = kombu_redis.Channel, kombu_redis.SentinelChannel
    if getattr(channel_class, "_tradeflow_patched", False):
        return True
    original_init = channel_class.__init__
    original_connparams = getattr(channel_class, "_connparams", None)
    original_sentinel_pool = getattr(sentinel_class, "_sentinel_managed_pool", None)
    if original_connparams is None or original_sentinel_pool is None:
        return False

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        setattr(self, _MARK, getattr(args[0] if args else kwargs.get("connection"), "client", None))
        original_init(self, *args, **kwargs)

    channel_class.__init__ = __init__
    channel_class._connparams = _reattached(original_connparams)
    sentinel_class._sentinel_managed_pool = _reattached(original_sentinel_pool)
    channel_class._tradeflow_patched = True
    return True
