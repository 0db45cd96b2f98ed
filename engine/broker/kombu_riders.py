"""A delivered step's start and ack ride round trips that happen anyway (kombu's Redis transport).

Written against kombu 5.7.0 and celery 5.7.0 (redis-py 8.2). With the Redis broker, a step
delivered by Celery costs the engine's two round trips (``start``, then the transition) on top
of kombu's three (``BRPOP``; the unacked bookkeeping of ``QoS.append``: a MULTI/EXEC of
``ZADD unacked_index`` + ``HSET unacked``; the ack's ``ZREM`` + ``HDEL`` in ``QoS.ack``). Where
the task runs in the process and thread that consumed its message, right after its delivery (the
``solo`` pool; never ``prefork``, whose children run the tasks, nor ``threads``, whose reserved
messages can wait for a free thread: a start read when such a message was delivered could be
stale when its step runs, and a duplicate delivery would then run its action instead of seeing
that its step moved on) and the broker is the state's Redis:

- **the start rides the delivery**: ``QoS.append`` of a message of an engine step task sends the
  step's ``start`` (``state.lua``, with the carrier the step will record and ``now`` read when it
  is sent) in its own MULTI/EXEC, after kombu's entries; the reply is kept for the task's
  :meth:`engine.store.instances.Instances.start`, which then makes no round trip. A start that
  failed (NOSCRIPT after a Redis restart) is not kept: the task's start sends its own. A kept
  reply the task did not use is dropped when kombu acks, rejects or gives back the message; a
  start recorded for a step that then does not run here is a duplicate delivery's start, and the
  transition's compare-and-set decides (the liveness sweep re-sends a started step whose carrier
  died);
- **the ack rides the transition**: the task gets the commands of kombu's ack of its delivery
  (:func:`ack_riders`, found by the task's id: Celery does not hand a task its delivery tag, and
  an id delivered twice at once here rides nothing. They are kombu's own ``_remove_from_indices``
  recorded on a pipeline that is never sent, so the key names, the ``global_keyprefix`` and the
  consumer entry of :mod:`engine.broker.consumers` are kombu's) and gives them to the runtime as riders of its last
  change (:meth:`engine.runtime.pipeline.Pipeline.ride`): the same pipelined round trip, after
  the change. When they landed, kombu's ``QoS.ack`` of that tag skips its Redis pipeline (its
  in-memory bookkeeping still runs); when they were not sent (the step failed, was retried,
  found nothing to change, an error) kombu acks as usual. The ack is never sent before the
  change: a change whose script the server lost (NOSCRIPT) is sent again alone right after its
  riders ran; a worker dying in that moment leaves a started step of a dead carrier, which the
  liveness sweep re-sends.

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

from engine.broker import consumers
from engine.store.riders import Rider

log = logging.getLogger(__name__)

#: The start rider of a delivered message, from its task name and positional arguments, with what drops
#: its kept reply (the task did not use it); None: not an engine step (or not here), nothing rides.
Starts = Callable[[str, Sequence[Any]], "tuple[Rider, Callable[[], None]] | None"]

#: The pools whose tasks run in the consuming thread as soon as they are delivered (kombu's ``QoS`` and the
#: task share the runtime, and a start read at delivery is the step's start).
RIDING_POOLS = ("celery.concurrency.solo:TaskPool",)

_state: dict[str, Any] = {"starts": None}
#: Deliveries whose start rode their bookkeeping, by delivery tag: (the ack's commands, drop the kept start,
#: the task id).
_deliveries: dict[str, tuple[list[tuple[Any, ...]], Callable[[], None], str]] = {}
#: Task id -> the delivery tags of those deliveries (one, but for a message delivered twice at once).
_tags: dict[str, list[str]] = {}
#: Delivery tags whose ack rode a change and landed: kombu's ack of them skips Redis.
_acked: set[str] = set()
_lock = threading.Lock()


def enable(starts: Starts) -> None:
    """Let deliveries carry their start and ack (``starts``: the engine's start rider of a step task)."""
    _state["starts"] = starts


def disable() -> None:
    """Back to kombu's own round trips (deliveries already taken keep what they had)."""
    _state["starts"] = None


def enabled() -> bool:
    """True while deliveries carry their start and ack."""
    return _state["starts"] is not None


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


def ack_commands(qos: Any, delivery_tag: str) -> list[tuple[Any, ...]]:
    """The commands of kombu's ack of ``delivery_tag`` (``QoS._remove_from_indices``), as kombu would send
    them (prefixed), recorded on a pipeline of ``qos``'s channel that is never sent."""
    pipe = qos.channel.client.pipeline(transaction=False)
    try:
        qos._remove_from_indices(delivery_tag, pipe)
        return [tuple(args) for args, _options in pipe.command_stack]
    finally:
        pipe.command_stack = []


def current_delivery_tag() -> str | None:
    """The delivery tag of the task this thread runs, found by its id (``task.request.id``: Celery's
    request does not carry the tag); None outside a task, or for an id delivered twice at once here."""
    from celery import current_task

    try:
        task_id = current_task.request.id
    except Exception:  # no current task
        return None
    with _lock:
        tags = _tags.get(task_id) if task_id else None
        return tags[0] if tags and len(tags) == 1 else None


def ack_riders(delivery_tag: str | None = None) -> list[Rider]:
    """The riders acking ``delivery_tag`` (default: the current task's delivery) along a change; [] when
    its delivery carried nothing (kombu then acks it as usual)."""
    tag = current_delivery_tag() if delivery_tag is None else delivery_tag
    found = None if tag is None else _deliveries.get(tag)
    if found is None:
        return []
    commands = found[0]
    landed = [0]

    def told(reply: Any) -> None:
        if isinstance(reply, Exception):
            return
        with _lock:
            landed[0] += 1
            if landed[0] == len(commands):
                _acked.add(tag)  # type: ignore[arg-type]

    return [Rider(lambda command=command: command, told) for command in commands]


def _settled(delivery_tag: str) -> bool:
    """Forget ``delivery_tag`` (kombu acks, rejects or gives it back): True when its ack already rode a change."""
    found = _deliveries.pop(delivery_tag, None)
    with _lock:
        if found is not None:
            found[1]()  # a kept start the task did not use
            tags = _tags.get(found[2], [])
            if delivery_tag in tags:
                tags.remove(delivery_tag)
            if not tags:
                _tags.pop(found[2], None)
        if delivery_tag in _acked:
            _acked.discard(delivery_tag)
            return True
    return False


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
    if None in (original_append, original_ack, original_reject, original_restore) \
            or not hasattr(qos, "_remove_from_indices") or not hasattr(qos, "pipe_or_acquire") \
            or not getattr(qos, "_tradeflow_owners", False):
        return False

    def append(self: Any, message: Any, delivery_tag: str) -> None:
        starts = _state["starts"]
        start = None if starts is None else _start_of(starts, message)
        if start is None:
            return original_append(self, message, delivery_tag)
        rider, forget = start
        try:
            acking = ack_commands(self, delivery_tag)
            command = rider.command()  # its ``now``: read as it is sent
        except Exception as exc:  # kombu's layout moved under us, the start could not be built: no riders
            log.warning("delivery riders off for this message: %r", exc)
            return original_append(self, message, delivery_tag)
        with self.pipe_or_acquire() as pipe:
            consumers.bookkeeping(self, pipe, message, delivery_tag)
            kept = len(pipe.command_stack)
            # queued as it is: a prefixed pipeline would prefix the script's first key with the broker's prefix
            pipe.pipeline_execute_command(*command)
            replies = pipe.execute(raise_on_error=False)
            for reply in replies[:kept]:
                if isinstance(reply, Exception):
                    raise reply
            rider.landed(replies[kept])
            task_id = str((message.headers or {}).get("id") or "")
            _deliveries[delivery_tag] = (acking, forget, task_id)
            with _lock:
                _tags.setdefault(task_id, []).append(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        return None

    def ack(self: Any, delivery_tag: str) -> None:
        if _deliveries and _settled(delivery_tag):
            virtual.QoS.ack(self, delivery_tag)  # removed from Redis with the change it rode
            return
        original_ack(self, delivery_tag)

    def reject(self: Any, delivery_tag: str, requeue: bool = False) -> None:
        if _deliveries and _settled(delivery_tag):
            virtual.QoS.ack(self, delivery_tag)  # its change applied: nothing to give back
            return
        original_reject(self, delivery_tag, requeue)

    def restore_by_tag(self: Any, tag: str, client: Any = None, leftmost: bool = False) -> None:
        if _deliveries:
            _settled(str(tag.decode() if isinstance(tag, bytes) else tag))
        original_restore(self, tag, client, leftmost)

    qos.append = append
    qos.ack = ack
    qos.reject = reject
    qos.restore_by_tag = restore_by_tag
    qos._tradeflow_riders = True
    return True


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


__all__ = ["RIDING_POOLS", "ack_commands", "ack_riders", "current_delivery_tag", "disable", "enable", "enabled",
           "install", "rides_in", "step_of_message"]
