"""Which consumer holds each delivered message, and whether that consumer is still alive.

kombu's Redis transport keeps a delivered, unacknowledged message in its ``unacked`` hash
(delivery tag -> message) and ``unacked_index`` sorted set (delivery tag -> delivery time) until
the consumer acknowledges it; it gives one back to its queue only when it is older than the
visibility timeout (an hour by default, above the longest step here). It does not record *who*
holds it, so a node SIGKILLed while holding deliveries leaves entries nobody will ever ack, and
nothing tells them from a live worker's.

:func:`install` (called by the worker bootstrap, like :mod:`engine.broker.kombu_fix`) makes
each consumer record itself next to kombu's entry, in the same pipeline (no extra round trip):
``unacked_consumer`` (delivery tag -> consumer id, removed with kombu's entry on ack, reject or
restore) and a liveness mark ``tradeflow_consumer:<id>`` that lapses :data:`MARK_SECONDS`
after its process stops refreshing it (a daemon thread does, every :data:`REFRESH_SECONDS`). The
reconciliation (:mod:`engine.runtime.deliveries`) reads both through
:meth:`engine.broker.redis_queue.RedisQueueEnqueuer.deliveries`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

#: Delivery tag -> id of the consumer holding it (under the broker's key prefix).
OWNERS = "unacked_consumer"
#: A consumer's liveness mark: ``MARK_PREFIX + id``, set for MARK_SECONDS, refreshed every REFRESH_SECONDS.
MARK_PREFIX = "tradeflow_consumer:"
MARK_SECONDS = 10
REFRESH_SECONDS = 2.0

_state: dict[str, Any] = {"pid": None, "channel": None}
_lock = threading.Lock()


def consumer_id() -> str:
    """This process as a consumer: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _refresh_forever(me: str) -> None:
    """Keep this process's mark fresh through the channel that last took a delivery."""
    while True:
        time.sleep(REFRESH_SECONDS)
        channel = _state["channel"]
        try:
            with channel.conn_or_acquire() as client:
                client.set(MARK_PREFIX + me, 1, ex=MARK_SECONDS)
        except Exception as exc:  # Redis away, channel closed: the next round tries again
            log.debug("could not refresh the consumer mark %s: %s", me, exc)


def _keep_alive(channel: Any) -> str:
    """This process's consumer id, its refresher started once per process (after a fork too)."""
    me = consumer_id()
    _state["channel"] = channel
    if _state["pid"] != os.getpid():
        with _lock:
            if _state["pid"] != os.getpid():
                _state["pid"] = os.getpid()
                threading.Thread(target=_refresh_forever, args=(me,), name="tradeflow-consumer-mark",
                                 daemon=True).start()
    return me


def bookkeeping(qos: Any, pipe: Any, message: Any, delivery_tag: str) -> None:
    """Queue on ``pipe`` (kombu's pipeline of ``qos``'s channel) what a delivery writes: kombu's
    unacked index and hash entries, and this consumer next to them (not sent: the caller executes)."""
    from kombu.utils.json import dumps

    delivery = message.delivery_info
    me = _keep_alive(qos.channel)
    pipe.zadd(qos.unacked_index_key, {delivery_tag: time.time()}) \
        .hset(qos.unacked_key, delivery_tag, dumps([message._raw, delivery["exchange"], delivery["routing_key"]])) \
        .hset(OWNERS, delivery_tag, me) \
        .set(MARK_PREFIX + me, 1, ex=MARK_SECONDS)


def install() -> bool:
    """Patch kombu's Redis QoS (idempotent); False when kombu's layout is not the expected one."""
    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual

    qos = kombu_redis.QoS
    if getattr(qos, "_tradeflow_owners", False):
        return True
    original_remove = getattr(qos, "_remove_from_indices", None)
    if original_remove is None or not hasattr(qos, "pipe_or_acquire"):
        return False

    def append(self: Any, message: Any, delivery_tag: str) -> None:
        # kombu's QoS.append, with the consumer recorded in the same pipeline.
        with self.pipe_or_acquire() as pipe:
            bookkeeping(self, pipe, message, delivery_tag)
            pipe.execute()
            virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self: Any, delivery_tag: str, pipe: Any = None) -> Any:
        return original_remove(self, delivery_tag, pipe).hdel(OWNERS, delivery_tag)

    qos.append = append
    qos._remove_from_indices = _remove_from_indices
    qos._tradeflow_owners = True
    return True
