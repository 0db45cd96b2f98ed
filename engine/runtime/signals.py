"""Signals: move an instance parked at an ``await`` node on, or let its timeout do it.

A signal is applied like a step's transition: one compare-and-set on the instance's seq
(:meth:`engine.store.redis_store.RedisStore.apply`) records the activity (signal, sender,
time), merges the signal's data into the context under the await node's name and places the
instance at the node the signal maps to. Its timeout goes through the same timer sorted set as
waits (timer kind ``timeout``); a signal and the timeout racing each other both aim at the
same seq, so exactly one applies and the other is recorded as a no-op.

A signal sent with a ``key`` leaves a marker on the instance, written by the same atomic
update: the same key sent again is a recorded no-op, so a sender may resend safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.definitions.model import AwaitNode, Definition
from engine.errors import NotFound, SignalRefused, StepFailed
from engine.model import Instance, InstanceStatus, Outcome
from engine.runtime.dispatcher import NextKind, resolve
from engine.store.redis_store import Update

if TYPE_CHECKING:
    from engine.runtime.runner import Runtime

#: Timer kind of an await's timeout in the timer sorted set (waits use ``wake``, backoffs ``retry``).
TIMEOUT_TIMER = "timeout"
MAX_KEY_LENGTH = 200
AWAITING = (InstanceStatus.AWAITING.value,)


@dataclass(frozen=True)
class SignalResult:
    """What one signal did: applied, or a no-op because its key was applied before."""

    instance_id: str
    signal: str
    applied: bool
    duplicate: bool = False
    status: InstanceStatus | None = None
    node: str | None = None


def marker_field(key: str) -> str:
    """The instance hash field that remembers a signal key was applied."""
    return f"signal:{key}"


def where(instance: Instance, definition: Definition | None) -> str:
    """Where an instance is, for a refused signal: status, node and the signals it awaits."""
    node = definition.nodes.get(instance.node) if definition is not None else None
    text = f"instance {instance.id} is {instance.status.value} at node {instance.node!r}"
    if instance.status is InstanceStatus.AWAITING and isinstance(node, AwaitNode):
        return f"{text}, awaiting {', '.join(repr(s) for s in node.signals)}"
    return f"{text} and awaits no signal"


def send_signal(runtime: Runtime, instance_id: str, name: str, data: dict[str, Any] | None = None,
                by: str | None = None, key: str | None = None) -> SignalResult:
    """Apply signal ``name`` to an awaiting instance (see the module docstring).

    Raises :class:`SignalRefused` when the instance does not await ``name`` (it says where
    the instance is), :class:`NotFound` when there is no such instance.
    """
    if data is not None and not isinstance(data, dict):
        raise SignalRefused(f"signal data must be a JSON object, got {type(data).__name__}")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise SignalRefused(f"a signal key has 1 to {MAX_KEY_LENGTH} characters")
    store = runtime.store
    instance = store.load(instance_id)
    if instance is None:
        raise NotFound(f"no instance {instance_id} (never created, or expired)")
    started = runtime.clock()
    base = {"seq": instance.seq, "node": instance.node, "attempt": instance.attempt, "signal": name,
            "by": by, "key": key}
    marker = marker_field(key) if key else None
    if marker and store.marker(instance_id, marker) is not None:
        return _duplicate(runtime, instance, name, base, started)
    definition = store.definition(instance.workflow, instance.version)
    node = definition.nodes.get(instance.node)
    if instance.status is not InstanceStatus.AWAITING or not isinstance(node, AwaitNode) or name not in node.signals:
        raise SignalRefused(f"signal {name!r} refused: {where(instance, definition)}")
    payload = dict(data or {})
    context = {**instance.context, instance.node: payload}
    try:
        nxt = resolve(definition, node.signals[name], runtime.scope(definition, instance, context))
    except StepFailed as exc:
        runtime._fail(instance, definition, instance.node, instance.seq, instance.attempt, started, str(exc),
                      "StepFailed", received=payload)
        return SignalResult(instance_id, name, True, status=InstanceStatus.FAILED, node=instance.node)
    now = runtime.clock()
    update = Update(
        allowed=AWAITING, expected_seq=instance.seq, context_node=instance.node, context_data=payload,
        bump_seq=True, attempt=1, clear_error=True, marker=marker,
        activity=_record(runtime, base, started, outcome=Outcome.SIGNALLED.value, received=payload or None,
                         next=nxt.node, via=list(nxt.via) or None),
        noop_activity=_record(runtime, base, started, outcome=Outcome.NOOP.value,
                              reason="another signal or the timeout applied first"),
        **runtime.placement(definition, nxt, now),
    )
    step = (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None
    applied = runtime.transition(definition, instance_id, update, step)
    if applied.applied:
        return SignalResult(instance_id, name, True, status=applied.status, node=nxt.node)
    if marker and store.marker(instance_id, marker) is not None:
        return SignalResult(instance_id, name, False, duplicate=True, status=applied.status)
    now_at = store.load(instance_id)
    raise SignalRefused(f"signal {name!r} refused: "
                        + (where(now_at, definition) if now_at else f"instance {instance_id} is gone")
                        + " (it moved on while the signal was applied)")


def _duplicate(runtime: Runtime, instance: Instance, name: str, base: dict[str, Any], started: float) -> SignalResult:
    runtime.store.apply(instance.id, Update(allowed=(), noop_activity=_record(
        runtime, base, started, outcome=Outcome.NOOP.value,
        reason=f"signal key {base['key']!r} was applied before: nothing to do")))
    return SignalResult(instance.id, name, False, duplicate=True, status=instance.status, node=instance.node)


def _record(runtime: Runtime, base: dict[str, Any], started: float, **fields: Any) -> dict[str, Any]:
    from engine.runtime.runner import worker_name

    record = {**base, "worker": worker_name(), "started_at": started, "ended_at": runtime.clock(), **fields}
    return {k: v for k, v in record.items() if v is not None}


def fire_timeout(runtime: Runtime, instance: Instance, definition: Definition, now: float) -> int:
    """Move an awaiting instance whose timeout passed to its ``on_timeout`` node; 1 if it moved."""
    node = definition.nodes.get(instance.node)
    store = runtime.store
    if not isinstance(node, AwaitNode) or node.on_timeout is None:
        store.client.zrem(store.keys.timers, instance.id)
        return 0
    if instance.wake_at is not None and instance.wake_at > now:
        store.client.zadd(store.keys.timers, {instance.id: instance.wake_at})  # claimed early: not due yet
        return 0
    started = runtime.clock()
    base = {"seq": instance.seq, "node": instance.node, "attempt": instance.attempt, "timeout_at": instance.wake_at}
    try:
        nxt = resolve(definition, node.on_timeout, runtime.scope(definition, instance))
    except StepFailed as exc:
        runtime._fail(instance, definition, instance.node, instance.seq, instance.attempt, started, str(exc),
                      "StepFailed")
        return 1
    applied = runtime.transition(definition, instance.id, Update(
        allowed=AWAITING, expected_seq=instance.seq, bump_seq=True, attempt=1,
        activity=_record(runtime, base, started, outcome=Outcome.TIMED_OUT.value, next=nxt.node,
                         via=list(nxt.via) or None),
        noop_activity=_record(runtime, base, started, outcome=Outcome.NOOP.value,
                              reason="timeout came after a signal had moved the instance on"),
        **runtime.placement(definition, nxt, now),
    ), (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None)
    return int(applied.applied)
