"""A delivered step's start is its delivery's bookkeeping (kombu's Redis transport).

Written against kombu 5.7.0 and celery 5.7.0 (redis-py 8.2). With the Redis broker, a step
delivered by Celery costs the engine's two round trips (``start``, then the transition) on top
of kombu's three (``BRPOP``; the unacked bookkeeping of ``QoS.append``: a MULTI/EXEC of
``ZADD unacked_index`` + ``HSET unacked`` of the whole message; the ack's ``ZREM`` + ``HDEL`` in
``QoS.ack``). kombu keeps that bookkeeping so that a message whose consumer died is delivered
again. A step's ``start`` already does that job for the engine: it marks the step started by this
process, and the liveness sweep re-sends a started step whose process died. So where the task
runs in the process and thread that consumed its message, right after its delivery (the ``solo``
pool; never ``prefork``, whose children run the tasks, nor ``threads``, whose reserved messages
can wait for a free thread: a start read when such a message was delivered could be stale when
its step runs, and a duplicate delivery would then run its action instead of seeing that its
step moved on) and the broker is the state's Redis:

- **the start replaces kombu's bookkeeping**: ``QoS.append`` of a message of an engine step task
  sends the step's ``start`` (``state.lua``, with the carrier the step will record and ``now``
  read when it is sent) alone, instead of kombu's MULTI/EXEC; the reply is kept for the task's
  :meth:`engine.store.instances.Instances.start`, which then makes no round trip. A start that
  failed (NOSCRIPT after a Redis restart) is not kept, and kombu's own bookkeeping is written
  after all (one more round trip): the message is kombu's until the task's own start;
- **the ack is kombu's in-memory one only**: nothing of the delivery is in Redis to remove.
  A kept reply the task did not use is dropped when kombu acks, rejects or gives back the
  message. Given back (a reject with requeue, a restore at shutdown), the message is pushed
  back to its queue as kombu's restore would (``Channel._do_restore_message``); its step, already
  started here, is then delivered again, and the start's compare-and-set decides. A start
  recorded for a step that then does not run here is a duplicate delivery's start: the
  transition's compare-and-set decides, and the liveness sweep re-sends a started step whose
  carrier died.

:func:`install` (the worker bootstrap, ``engine.broker.install_worker_patches``) patches kombu's
``QoS``; nothing changes until :func:`enable` is given the engine's start builder (the worker's
``worker_init``, for a ``solo`` pool, ``TRADEFLOW_BROKER_RIDERS`` on).
``tests/contract/test_kombu_riders.py`` fails when kombu's layout moves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from engine.store.riders import Rider

log = logging.getLogger(__name__)

#: The start rider of a delivered message, from its task name and positional arguments, with what drops
#: its kept reply (the task did not use it); None: not an engine step (or not here), nothing rides.
Starts = Callable[[str, Sequence[Any]], "tuple[Rider, Callable[[], None]] | None"]

#: The pools whose tasks run in the consuming thread as soon as they are delivered (kombu's ``QoS`` and the
#: task share the runtime, and a start read at delivery is the step's start).
RIDING_POOLS = ("celery.concurrency.solo:TaskPool",)

_state: dict[str, Any] = {"starts": None}
#: Deliveries whose start was their bookkeeping, by delivery tag: (drop the kept start, the message).
_deliveries: dict[str, tuple[Callable[[], None], Any]] = {}
_lock = threading.Lock()


def enable(starts: Starts) -> None:
    """Let deliveries carry their start and ack (``starts``: the engine's start rider of a step task)."""
    _state["starts"] = starts


def disable() -> None:
    """Back to kombu's own round trips (deliveries already taken keep what they had)."""
    _state["starts"] = None


def rides_in(pool: Any) -> bool:
    """True when ``pool`` (a worker's ``pool_cls``: a class or an alias) runs tasks in the consuming process."""
    from celery import concurrency

    if pool is None:
        return False
    try:
        cls = concurrency.get_implementation(pool)
    except Exception:  # an unknown or custom pool: leave kombu alone
        return False
    return f"{getattr(cls, '__module__', '')}:{getattr(cls, '__qualname__', '')}" in RIDING_POOLS


def step_of_message(message: Any) -> tuple[str, Sequence[Any]] | None:
    """(task name, positional arguments) of a delivered Celery (protocol 2) message; None when it
    is something else or is not to run at once (an ETA or a countdown)."""
    headers = message.headers or {}
    task = headers.get("task")
    if not task or headers.get("eta") or headers.get("countdown"):
        return None
    try:
        args = json.loads(message.body)[0]
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    return (str(task), args) if isinstance(args, list) else None


def _settled(delivery_tag: str) -> Any:
    """Forget ``delivery_tag`` (kombu acks, rejects or gives it back): its message when its start was its
    bookkeeping (nothing of it is in Redis), else None (kombu's own entries are)."""
    with _lock:
        found = _deliveries.pop(delivery_tag, None)
    if found is None:
        return None
    found[0]()  # a kept start the task did not use
    return found[1]


def install() -> bool:
    """Patch kombu's Redis ``QoS`` (idempotent; after :func:`engine.broker.consumers.install`); False when
    kombu's layout is not the expected one (left alone then)."""
    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual

    qos = kombu_redis.QoS
    if getattr(qos, "_tradeflow_riders", False):
        return True
    original_append, original_ack = getattr(qos, "append", None), getattr(qos, "ack", None)
    original_reject, original_restore = getattr(qos, "reject", None), getattr(qos, "restore_by_tag", None)
    channel = kombu_redis.Channel
    if None in (original_append, original_ack, original_reject, original_restore) \
            or not hasattr(channel, "conn_or_acquire") or not hasattr(channel, "_do_restore_message") \
            or not getattr(qos, "_tradeflow_owners", False):
        return False

    def append(self: Any, message: Any, delivery_tag: str) -> None:
        starts = _state["starts"]
        start = None if starts is None else _start_of(starts, message)
        if start is None:
            return original_append(self, message, delivery_tag)
        rider, forget = start
        try:
            command = rider.command()  # its ``now``: read as it is sent
        except Exception as exc:  # the start could not be built: kombu's bookkeeping, as without riders
            log.warning("no start rides this delivery: %r", exc)
            return original_append(self, message, delivery_tag)
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            # queued as it is: a prefixed pipeline would prefix the script's first key with the broker's prefix
            pipe.pipeline_execute_command(*command)
            [reply] = pipe.execute(raise_on_error=False)
        rider.landed(reply)
        if isinstance(reply, Exception):  # not kept (NOSCRIPT after a restart): kombu holds the message
            return original_append(self, message, delivery_tag)
        with _lock:
            _deliveries[delivery_tag] = (forget, message)
        virtual.QoS.append(self, message, delivery_tag)
        return None

    def ack(self: Any, delivery_tag: str) -> None:
        if _deliveries and _settled(delivery_tag) is not None:
            virtual.QoS.ack(self, delivery_tag)  # nothing of it in Redis
            return
        original_ack(self, delivery_tag)

    def reject(self: Any, delivery_tag: str, requeue: bool = False) -> None:
        message = _settled(delivery_tag) if _deliveries else None
        if message is None:
            return original_reject(self, delivery_tag, requeue)
        if requeue:
            _give_back(self, message, leftmost=True)
        virtual.QoS.ack(self, delivery_tag)
        return None

    def restore_by_tag(self: Any, tag: str, client: Any = None, leftmost: bool = False) -> None:
        message = _settled(str(tag.decode() if isinstance(tag, bytes) else tag)) if _deliveries else None
        if message is None:
            return original_restore(self, tag, client, leftmost)
        _give_back(self, message, leftmost, client)
        return None

    qos.append = append
    qos.ack = ack
    qos.reject = reject
    qos.restore_by_tag = restore_by_tag
    qos._tradeflow_riders = True
    return True


def _give_back(qos: Any, message: Any, leftmost: bool, client: Any = None) -> None:
    """Push ``message`` back to its queue, as kombu's ``restore_by_tag`` does with its unacked entry."""
    delivery = message.delivery_info
    with qos.channel.conn_or_acquire(client) as conn:
        qos.channel._do_restore_message(message._raw, delivery["exchange"], delivery["routing_key"], conn, leftmost)


def _start_of(starts: Starts, message: Any) -> tuple[Rider, Callable[[], None]] | None:
    """The start rider of ``message`` (``starts``), None when it has none or building it failed."""
    found = step_of_message(message)
    if found is None:
        return None
    try:
        return starts(*found)
    except Exception as exc:  # never stop a delivery for a ride
        log.warning("no start rides this delivery: %r", exc)
        return None


__all__ = ["RIDING_POOLS", "disable", "enable", "install", "rides_in", "step_of_message"]
