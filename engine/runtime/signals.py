"""Signals: move an instance parked at an ``await`` node on, or let its timeout do it.

A signal is applied like a step's transition: one compare-and-set on the instance's seq (the
store's ``signal`` operation, :meth:`engine.store.instances.Instances.signal`) records the
activity (signal, sender, time), merges the signal's data into the context under the await
node's name, places the instance at the node the signal maps to and remembers its key. Its
timeout goes through the same timer sorted set as waits (timer kind ``timeout``); a signal and
the timeout racing each other both aim at the same seq, so exactly one applies and the other is recorded as a no-op.

A signal sent with a ``key`` leaves a marker on the instance (``signal:<key>``), written by the
same atomic operation: the same key sent again is a recorded no-op, so a sender may resend safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.definitions.model import AwaitNode, Definition
from engine.errors import NotFound, SignalRefused, StepFailed
from engine.model import Activity, Instance, InstanceStatus, Outcome
from engine.runtime.dispatcher import NextKind
from engine.runtime.outcomes import StepOutcomes as Runtime

#: Timer kind of an await's timeout in the timer sorted set (waits use ``wake``, backoffs ``retry``).
TIMEOUT_TIMER = "timeout"
MAX_KEY_LENGTH = 200
AWAITING = (InstanceStatus.AWAITING,)


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
        return f"{text}; it awaits {', '.join(repr(s) for s in node.signals)}"
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
    marker = marker_field(key) if key else None
    if marker and store.marker(instance_id, marker) is not None:
        return _duplicate(runtime, instance, name, by, key, started)
    definition = store.definition(instance.workflow, instance.version)
    node = definition.nodes.get(instance.node)
    if instance.status is not InstanceStatus.AWAITING or not isinstance(node, AwaitNode) or name not in node.signals:
        raise SignalRefused(f"signal {name!r} refused: {where(instance, definition)}")
    payload = dict(data or {})
    context = {**instance.context, instance.node: payload}
    try:
        nxt = runtime.resolve(definition, node.signals[name], runtime.scope(definition, instance, context))
    except StepFailed as exc:
        runtime.fail(instance, definition, instance.node, instance.seq, instance.attempt, started, str(exc),
                      "StepFailed", received=payload, statuses=AWAITING)
        return SignalResult(instance_id, name, True, status=InstanceStatus.FAILED, node=instance.node)
    placement = runtime.placement(definition, nxt, runtime.clock())
    activity = _record(runtime, instance, started, Outcome.SIGNALLED, signal=name, by=by, key=key,
                       received=payload or None, next=nxt.node, via=list(nxt.via) or None)
    noop = _record(runtime, instance, started, Outcome.NOOP, signal=name, by=by, key=key,
                   reason="another signal or the timeout applied first")
    applied = runtime.transition(definition, instance_id, lambda send, _clear: store.signal(
        instance_id, seq=instance.seq, activity=activity, placement=placement, context=(instance.node, payload),
        noop=noop, marker=marker, send=send), (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None)
    if applied.applied:
        return SignalResult(instance_id, name, True, status=applied.status, node=nxt.node)
    if marker and store.marker(instance_id, marker) is not None:
        return SignalResult(instance_id, name, False, duplicate=True, status=applied.status)
    now_at = store.load(instance_id)
    raise SignalRefused(f"signal {name!r} refused: "
                        + (where(now_at, definition) if now_at else f"instance {instance_id} is gone")
                        + " (it moved on while the signal was applied)")


def _duplicate(runtime: Runtime, instance: Instance, name: str, by: str | None, key: str | None,
               started: float) -> SignalResult:
    runtime.store.noop(instance.id, _record(runtime, instance, started, Outcome.NOOP, signal=name, by=by, key=key,
                                            reason=f"signal key {key!r} was applied before: nothing to do"))
    return SignalResult(instance.id, name, False, duplicate=True, status=instance.status, node=instance.node)


def _record(runtime: Runtime, instance: Instance, started: float, outcome: Outcome, **fields: Any) -> Activity:
    return runtime.activity(instance.node, instance.seq, instance.attempt, started, outcome, **fields)


def fire_timeout(runtime: Runtime, instance: Instance, definition: Definition, now: float) -> int:
    """Move an awaiting instance whose timeout passed to its ``on_timeout`` node; 1 if it moved."""
    node = definition.nodes.get(instance.node)
    store = runtime.store
    if not isinstance(node, AwaitNode) or node.on_timeout is None:
        store.release(instance.id, "timers")
        return 0
    if instance.wake_at is not None and instance.wake_at > now:
        return 0  # a signal re-parked it (a loop back to an await) meanwhile: its new timer stands
    started = runtime.clock()
    try:
        nxt = runtime.resolve(definition, node.on_timeout, runtime.scope(definition, instance))
    except StepFailed as exc:
        runtime.fail(instance, definition, instance.node, instance.seq, instance.attempt, started, str(exc),
                      "StepFailed", statuses=AWAITING)
        return 1
    activity = _record(runtime, instance, started, Outcome.TIMED_OUT, timeout_at=instance.wake_at, next=nxt.node,
                       via=list(nxt.via) or None)
    noop = _record(runtime, instance, started, Outcome.NOOP, timeout_at=instance.wake_at,
                   reason="timeout came after a signal had moved the instance on")
    placement = runtime.placement(definition, nxt, now)
    applied = runtime.transition(definition, instance.id, lambda send, clear: store.advance(
        instance.id, seq=instance.seq, statuses=AWAITING, activity=activity, placement=placement, noop=noop,
        carrier=clear, send=send), (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None)
    return int(applied.applied)
