"""Signals: move an instance parked at an ``await`` node on, or let its timeout do it.

A signal has an accountable sender, a :class:`engine.principal.Principal` given by the caller
(never read from the signal's data). Before anything changes, the engine checks, in order: the
instance awaits that signal; the principal holds one of the roles the signal names; the data
has every field the signal ``requires``; the await's timeout has not passed (a signal after
it is refused even when no timer tick has moved the instance yet); and, for the signal an
await's ``quorum`` counts, that this principal has not sent it already. A refusal raises
:class:`engine.errors.SignalRefused` (its ``code`` says why) and is recorded: an activity with
outcome ``refused`` (the store's ``refuse`` operation) and an audit event.

An accepted signal is applied like a step's transition: one compare-and-set on the instance's
seq (the store's ``signal`` operation, :meth:`engine.store.instances.Instances.signal`) records
the activity (signal, sender's name and roles, time), writes the context entry under the await
node's name, places the instance and remembers its key. The context entry is the signal's data
with the fields the engine owns written over it: ``signal``, ``by``, ``roles``, ``at`` and, at
a quorum, ``quorum`` (``{"signal", "count", "principals"}``), so that no data sent with a signal
can pass for who sent it or for the approvals counted.

A quorum counts distinct principals from the engine's own record, kept on the instance (its
``quorum`` field) and written by the same atomic operation: until ``count`` is reached the
signal is recorded (outcome ``counted``, "1 of 2") and the instance stays awaiting at the node;
the signal that reaches it moves the instance on (outcome ``signalled``, "2 of 2"). The count is
evaluated when the first such signal arrives, without the await node's own context entry, and
kept. Two signals racing at one seq: one applies, the other is tried again on the instance as it
now stands (counted in turn, or refused).

A signal sent with a ``key`` leaves a marker on the instance (``signal:<key>``), written by the
same atomic operation: the same key sent again is a recorded no-op, so a sender may resend safely.

The await's timeout goes through the same timer sorted set as waits (timer kind ``timeout``); a
signal and the timeout racing each other both aim at the same seq, so exactly one applies and the
other is recorded as a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine import audit
from engine.definitions.nodes import AwaitNode, Definition
from engine.errors import NotFound, SignalRefused, StepFailed
from engine.instance import Activity, Instance, InstanceStatus, Outcome
from engine.principal import Principal
from engine.runtime.outcomes import NextKind, quorum_count, worker_name
from engine.runtime.outcomes import StepOutcomes as Runtime
from engine.store.codec import Placement

#: Timer kind of an await's timeout in the timer sorted set (waits use ``wake``, backoffs ``retry``).
TIMEOUT_TIMER = "timeout"
MAX_KEY_LENGTH = 200
AWAITING = (InstanceStatus.AWAITING,)
#: Fields of an await node's context entry that the engine writes (a signal's data cannot set them).
OWNED_FIELDS = ("signal", "by", "roles", "at", "quorum")
#: Times a signal is tried again when another change of the instance came first.
ATTEMPTS = 5


@dataclass(frozen=True)
class SignalResult:
    """What one signal did: applied (moved the instance on, or counted toward a quorum), or a no-op
    because its key was applied before."""

    instance_id: str
    signal: str
    applied: bool
    duplicate: bool = False
    status: InstanceStatus | None = None
    node: str | None = None
    #: At a quorum: where it stands after this signal, e.g. (1, 2); None elsewhere.
    quorum: tuple[int, int] | None = None

    @property
    def counted(self) -> bool:
        """True when the signal was counted toward a quorum that is not reached yet."""
        return self.quorum is not None and self.quorum[0] < self.quorum[1]


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


def send_signal(runtime: Runtime, instance_id: str, name: str, data: dict[str, Any] | None = None, *,
                by: Principal, key: str | None = None) -> SignalResult:
    """Apply signal ``name`` from ``by`` to an awaiting instance (see the module docstring).

    Raises :class:`SignalRefused` (recorded, and saying why) and :class:`NotFound` when there is
    no such instance.
    """
    if not isinstance(by, Principal):
        raise TypeError(f"by= takes an engine.Principal (who sends the signal, from the authenticated caller), "
                        f"got {type(by).__name__}")
    return _Signal(runtime, instance_id, name, data, by, key).send()


class _Signal:
    """One signal being sent: its checks, its records, its application."""

    def __init__(self, runtime: Runtime, instance_id: str, name: str, data: Any, by: Principal,
                 key: str | None) -> None:
        self.runtime, self.store = runtime, runtime.store
        self.instance_id, self.name, self.data, self.by, self.key = instance_id, name, data, by, key
        self.marker = marker_field(key) if key else None
        self.started = runtime.clock()

    def send(self) -> SignalResult:
        if self.data is not None and not isinstance(self.data, dict):
            self.refuse(None, f"signal data must be a JSON object, got {type(self.data).__name__}", "invalid")
        if self.key is not None and not 0 < len(self.key) <= MAX_KEY_LENGTH:
            self.refuse(None, f"a signal key has 1 to {MAX_KEY_LENGTH} characters", "invalid")
        for _ in range(ATTEMPTS):
            result = self.attempt()
            if result is not None:
                return result
        now_at = self.store.load(self.instance_id)
        self.refuse(now_at, f"signal {self.name!r} refused: the instance kept changing while it was applied "
                            f"({ATTEMPTS} tries); send it again", "moved")
        raise AssertionError("unreachable")  # pragma: no cover - refuse raises

    def attempt(self) -> SignalResult | None:
        """Check and apply the signal on the instance as it stands; None when it changed meanwhile."""
        instance = self.store.load(self.instance_id)
        if instance is None:
            self.audit(audit.SIGNAL_REFUSED, None, outcome="refused", reason="no such instance")
            raise NotFound(f"no instance {self.instance_id} (never created, or expired)")
        if self.marker and self.store.marker(self.instance_id, self.marker) is not None:
            return self.duplicate(instance)
        definition = self.store.definition(instance.workflow, instance.version)
        node = definition.nodes.get(instance.node)
        if instance.status is not InstanceStatus.AWAITING or not isinstance(node, AwaitNode) \
                or self.name not in node.signals:
            self.refuse(instance, f"signal {self.name!r} refused: {where(instance, definition)}", "not_awaited")
        assert isinstance(node, AwaitNode)
        self.check(instance, node)
        payload = dict(self.data or {})
        now = self.runtime.clock()
        quorum = self.count(instance, definition, node, now)
        if quorum is False:
            return None  # the count's expression failed the instance: said in its history
        entry = {k: v for k, v in payload.items() if k not in OWNED_FIELDS}
        entry.update(signal=self.name, by=self.by.name, roles=sorted(self.by.roles), at=now)
        standing = None
        if quorum is not None:
            names = [p["name"] for p in quorum["principals"]]
            entry["quorum"] = {"signal": self.name, "count": quorum["count"], "principals": names}
            standing = (len(names), quorum["count"])
        if standing is not None and standing[0] < standing[1]:
            return self.apply_count(instance, payload, entry, quorum, standing)
        return self.apply_move(instance, definition, node, payload, entry, standing)

    def check(self, instance: Instance, node: AwaitNode) -> None:
        """Refuse a signal its sender may not send, without the data it requires, or past the timeout."""
        spec = node.spec(self.name)
        if spec.roles and not any(self.by.has(role) for role in spec.roles):
            held = ", ".join(sorted(self.by.roles)) or "no role"
            self.refuse(instance, f"signal {self.name!r} refused: it needs the role {' or '.join(spec.roles)} "
                                  f"(node {instance.node!r}); {self.by.name} has {held}", "role")
        payload = self.data or {}
        missing = [f for f in spec.requires or () if _empty(payload.get(f))]
        if missing:
            self.refuse(instance, f"signal {self.name!r} refused: its data needs "
                                  f"{', '.join(repr(f) for f in missing)} (present and not empty)", "requires")
        now = self.runtime.clock()
        if instance.timer == TIMEOUT_TIMER and instance.wake_at is not None and now >= instance.wake_at:
            self.refuse(instance, f"signal {self.name!r} refused: the await at node {instance.node!r} timed out at "
                                  f"{_iso(instance.wake_at)}; the instance goes to {node.on_timeout!r}", "timeout")

    def count(self, instance: Instance, definition: Definition, node: AwaitNode,
              now: float) -> dict[str, Any] | bool | None:
        """The quorum after this signal (None: the signal is not counted; False: the count failed the instance)."""
        if node.quorum is None or node.quorum.signal != self.name:
            return None
        kept = instance.quorum
        if kept and kept.get("node") == instance.node and kept.get("signal") == self.name:
            need, principals = int(kept["count"]), list(kept["principals"])
        else:
            own = {k: v for k, v in instance.context.items() if k != instance.node}  # no signal data counts
            try:
                need = quorum_count(instance.node, node, self.runtime.scope(definition, instance, own))
            except StepFailed as exc:
                self.runtime.fail(instance, definition, instance.node, instance.seq, instance.attempt, self.started,
                                   str(exc), "StepFailed", received=self.data or None, statuses=AWAITING)
                self.audit(audit.SIGNAL, instance, outcome="failed", reason=str(exc))
                return False
            principals = []
        if any(p["name"] == self.by.name for p in principals):
            self.refuse(instance, f"signal {self.name!r} refused: {self.by.name} sent it already "
                                  f"({len(principals)} of {need}); it needs {need} different principals",
                        "same_principal")
        principals.append({"name": self.by.name, "roles": sorted(self.by.roles), "at": now})
        return {"node": instance.node, "signal": self.name, "count": need, "principals": principals}

    def apply_count(self, instance: Instance, payload: dict[str, Any], entry: dict[str, Any],
                    quorum: dict[str, Any], standing: tuple[int, int]) -> SignalResult | None:
        """Count the signal toward the quorum: recorded, the instance stays awaiting at its node."""
        text = f"{standing[0]} of {standing[1]}"
        activity = self.record(instance, Outcome.COUNTED, received=payload or None, next=instance.node, quorum=text)
        timeout = instance.wake_at if instance.timer == TIMEOUT_TIMER else None
        applied = self.store.signal(self.instance_id, seq=instance.seq, activity=activity,
                                    placement=Placement.awaiting(instance.node, timeout),
                                    context=(instance.node, entry), marker=self.marker, quorum=quorum)
        if not applied.applied:
            return self.after_stale()
        self.audit(audit.SIGNAL, instance, outcome="counted", quorum=text)
        return SignalResult(self.instance_id, self.name, True, status=applied.status, node=instance.node,
                            quorum=standing)

    def apply_move(self, instance: Instance, definition: Definition, node: AwaitNode, payload: dict[str, Any],
                   entry: dict[str, Any], standing: tuple[int, int] | None) -> SignalResult | None:
        """Move the instance on to the node the signal leads to."""
        runtime = self.runtime
        context = {**instance.context, instance.node: entry}
        try:
            nxt = runtime.resolve(definition, node.target(self.name), runtime.scope(definition, instance, context))
        except StepFailed as exc:
            runtime.fail(instance, definition, instance.node, instance.seq, instance.attempt, self.started, str(exc),
                          "StepFailed", received=payload or None, statuses=AWAITING)
            self.audit(audit.SIGNAL, instance, outcome="failed", reason=str(exc))
            return SignalResult(self.instance_id, self.name, True, status=InstanceStatus.FAILED, node=instance.node)
        text = None if standing is None else f"{standing[0]} of {standing[1]}"
        activity = self.record(instance, Outcome.SIGNALLED, received=payload or None, next=nxt.node,
                               via=list(nxt.via) or None, quorum=text)
        placement = runtime.placement(definition, nxt, runtime.clock())
        applied = runtime.apply_change(definition, self.instance_id, lambda send, _clear: self.store.signal(
            self.instance_id, seq=instance.seq, activity=activity, placement=placement,
            context=(instance.node, entry), marker=self.marker, quorum_reached=standing is not None, send=send),
            (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None)
        if not applied.applied:
            return self.after_stale()
        self.audit(audit.SIGNAL, instance, outcome="applied", next=nxt.node, quorum=text)
        return SignalResult(self.instance_id, self.name, True, status=applied.status, node=nxt.node, quorum=standing)

    def after_stale(self) -> SignalResult | None:
        """The instance changed first: a duplicate if this key got there, else None (try again)."""
        if self.marker and self.store.marker(self.instance_id, self.marker) is not None:
            instance = self.store.load(self.instance_id)
            if instance is not None:
                return self.duplicate(instance)
        return None

    def duplicate(self, instance: Instance) -> SignalResult:
        """The key was applied before: a recorded no-op."""
        self.store.noop(instance.id, self.record(instance, Outcome.NOOP,
                                                 reason=f"signal key {self.key!r} was applied before: nothing to do"))
        self.audit(audit.SIGNAL_DUPLICATE, instance, outcome="duplicate")
        return SignalResult(instance.id, self.name, False, duplicate=True, status=instance.status, node=instance.node)

    def refuse(self, instance: Instance | None, message: str, code: str) -> None:
        """Record the refusal (history and audit log) and raise it."""
        if instance is not None:
            self.store.refuse(instance.id, self.record(instance, Outcome.REFUSED, reason=message,
                                                       received=self.data if isinstance(self.data, dict) else None))
        self.audit(audit.SIGNAL_REFUSED, instance, outcome="refused", reason=message, code=code)
        raise SignalRefused(message, code)

    def record(self, instance: Instance, outcome: Outcome, **fields: Any) -> Activity:
        return Activity(seq=instance.seq, node=instance.node, attempt=instance.attempt, outcome=outcome,
                        worker=worker_name(), started_at=self.started, ended_at=self.runtime.clock(),
                        signal=self.name, by=self.by.name, roles=sorted(self.by.roles), key=self.key, **fields)

    def audit(self, kind: str, instance: Instance | None, **detail: Any) -> None:
        detail = {"signal": self.name, **{k: v for k, v in detail.items() if v is not None}}
        if self.key:
            detail["key"] = self.key
        if instance is not None:
            detail["node"] = instance.node
        self.store.append_audit(audit.entry_fields(kind, self.by, run=instance.run if instance else None,
                                                   instance=self.instance_id, detail=detail))


def _empty(value: Any) -> bool:
    """True for a required field that is absent or empty (None, blank text, an empty list or object)."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list | dict) and not value


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


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
    activity = runtime.activity(instance.node, instance.seq, instance.attempt, started, Outcome.TIMED_OUT,
                                 timeout_at=instance.wake_at, next=nxt.node, via=list(nxt.via) or None)
    noop = runtime.activity(instance.node, instance.seq, instance.attempt, started, Outcome.NOOP,
                             timeout_at=instance.wake_at,
                             reason="timeout came after a signal had moved the instance on")
    placement = runtime.placement(definition, nxt, now)
    applied = runtime.apply_change(definition, instance.id, lambda send, clear: store.advance(
        instance.id, seq=instance.seq, statuses=AWAITING, activity=activity, placement=placement, noop=noop,
        carrier=clear, send=send), (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None)
    return int(applied.applied)
