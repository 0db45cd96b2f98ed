"""What may happen to a step, as public operations: the door every concern records through.

A step's life (:mod:`engine.runtime.pipeline`), its hooks (:mod:`engine.runtime.concerns`),
the signals (:mod:`engine.runtime.signals`) and the gather nodes (:mod:`engine.runtime.gather`)
all end a step the same few ways, each one store operation (one Lua compare-and-set):

- :meth:`StepOutcomes.apply_change` -- apply a change and, if the instance is running, send its
  next step (advance, retry, signal, wake ...);
- :meth:`StepOutcomes.fail` -- fail the instance at its step, with the error recorded;
- :meth:`StepOutcomes.resend` -- send a running step again under its next attempt;
- :meth:`StepOutcomes.resend_lost` -- the same for a lost started step, or fail it once its tries ran out;
- :meth:`StepOutcomes.activity` -- the activity record every one of them writes.

and decide where an instance goes with :meth:`~StepOutcomes.scope`, :meth:`~StepOutcomes.resolve`
and :meth:`~StepOutcomes.placement`. Nothing here knows about retries, inline chains, metrics or
batches: those are hooks.

It also holds what every kind of step shares -- its deadline (:func:`step_deadline`), the attempts
a lost one gets, the worker's name -- and the message that runs a node's step
(:func:`step_message`), so that signals and gather nodes use them without importing the pipeline.
A step message names (instance, node, seq, attempt) and nothing else: the worker reads the
instance and builds the input itself, so a message stays small and a redelivery is harmless.

Where a transition leads is decided first, by pure functions (no Redis, no Celery):
:func:`target_of` names the next node, :func:`resolve` follows it. ``choice`` nodes are followed
inline (no broker hop) until a node that needs work is reached: a ``service``/``http`` step to
enqueue, a ``wait`` to park, an ``await`` to park until a signal (or its timeout), a ``gather`` to
contribute to a batch (or, when the group's batch has closed and the node has ``late``, follow
``late`` like a choice), or a ``terminal`` to finish. A shadow instance (``instance.shadow`` in
the scope) ends, succeeded, on reaching a node marked ``"shadow": "stop"``, and never joins a
gather node's batch. The caller applies the decision in one atomic update.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from engine.broker import PRIORITY_CONTINUE, Enqueuer, Envelope, StepMessage
from engine.clock import Clock, system_clock
from engine.definitions.liveness import unread_entries
from engine.definitions.nodes import (
    AwaitNode,
    ChoiceNode,
    Definition,
    GatherNode,
    HttpNode,
    RecordLevel,
    ServiceNode,
    StepNode,
    TerminalNode,
    WaitNode,
)
from engine.errors import ExpressionError, StepFailed
from engine.expressions.cel import Scope, Template, compile_expression, compile_template
from engine.instance import Activity, Instance, InstanceStatus, Outcome
from engine.runtime.routing import ENGINE_QUEUE, HTTP_TASK
from engine.store.redis_store import Applied, Placement, RedisStore

# -- where a transition leads (pure: no Redis, no Celery) ---------------------------------------

MAX_INLINE_HOPS = 64
#: The longest batch name a gather's ``group`` may give (with its service and action).
MAX_GROUP_LENGTH = 200
#: Definitions whose step plans a process keeps at most (then it derives them afresh): a worker
#: sees a handful of published versions; a process that makes definitions on the fly stays bounded.
MAX_PLANNED_DEFINITIONS = 256

#: Says whether the batch of that name has closed (an arrival now would be late).
ClosedBatch = Callable[[str], bool]


class NextKind(StrEnum):
    """What the instance does at the node it lands on."""

    STEP = "step"
    WAIT = "wait"
    AWAIT = "await"
    GATHER = "gather"
    FINISH = "finish"


@dataclass(frozen=True)
class Arrival:
    """What an instance brings to a gather node: the batch name, its close time and its contribution."""

    name: str
    group: str
    close_at: float
    contribution: Any
    close_early: bool
    service: str
    action: str


@dataclass(frozen=True)
class Next:
    """The first node after a transition that is not applied inline."""

    kind: NextKind
    node: str
    via: tuple[str, ...] = ()
    wake_at: float | None = None
    status: InstanceStatus | None = None
    result: Any = None
    arrival: Arrival | None = None


def batch_name(node: GatherNode, group: str) -> str:
    """The name of the batch a gather node's ``group`` value designates: ``<service>.<action>:<group>``."""
    return f"{node.service}.{node.action}:{group}"


def target_of(definition: Definition, node_name: str, transition: str) -> str:
    """The node that ``transition`` of ``node_name`` leads to; StepFailed if it has none."""
    node = definition.nodes[node_name]
    transitions = getattr(node, "transitions", {})
    if transition not in transitions:
        expected = ", ".join(sorted(transitions)) or "none"
        raise StepFailed(f"unknown transition {transition!r} from node {node_name!r} (expected one of: {expected})")
    return transitions[transition]


def resolve(definition: Definition, node_name: str, scope: Scope, closed: ClosedBatch | None = None) -> Next:
    """Follow ``choice`` nodes from ``node_name`` and say what the instance does next.

    A ``wait`` node whose time has come (its ``until`` at or before the scope's ``now``) is
    passed like a choice: the instance goes on to its ``next`` at once, without a timer, and
    the wait is named in ``via`` with the choices. ``closed`` tells whether a batch has closed:
    a gather node whose batch has, and which has ``late``, is followed to ``late`` (without it,
    every arrival contributes).
    """
    via: list[str] = []
    shadow = bool(scope.instance.get("shadow"))
    for _ in range(MAX_INLINE_HOPS):
        node = definition.nodes[node_name]
        if shadow and node.shadow == "stop":  # a shadow ends here, before the node runs
            return Next(NextKind.FINISH, node_name, tuple(via), status=InstanceStatus.SUCCEEDED,
                        result=shadow_result(node_name))
        if shadow and isinstance(node, GatherNode):
            raise StepFailed(f"a shadow never joins a batch: gather node {node_name!r} has no \"shadow\": \"stop\" "
                             "before it (add one to it or to a node before it)")
        if isinstance(node, ChoiceNode):
            via.append(node_name)
            node_name = _choose(node_name, node, scope)
            continue
        if isinstance(node, StepNode):
            return Next(NextKind.STEP, node_name, tuple(via))
        if isinstance(node, WaitNode):
            wake_at = wake_time(node_name, node, scope)
            if wake_at <= scope.now.timestamp():  # its time has come: no timer, no wake
                via.append(node_name)
                node_name = node.next
                continue
            return Next(NextKind.WAIT, node_name, tuple(via), wake_at=wake_at)
        if isinstance(node, AwaitNode):
            return Next(NextKind.AWAIT, node_name, tuple(via), wake_at=await_timeout(node_name, node, scope))
        if isinstance(node, GatherNode):
            arrival = gather_arrival(node_name, node, scope)
            if node.late is not None and closed is not None and closed(arrival.name):
                via.append(node_name)
                node_name = node.late
                continue
            return Next(NextKind.GATHER, node_name, tuple(via), wake_at=arrival.close_at, arrival=arrival)
        if isinstance(node, TerminalNode):
            result = None
            if node.result is not None:
                result = _evaluate(node_name, "result", lambda n=node: compile_template(n.result).evaluate(scope))
            return Next(NextKind.FINISH, node_name, tuple(via), status=InstanceStatus(node.status.value),
                        result=result)
        raise StepFailed(f"node {node_name!r} has an unknown type")  # pragma: no cover - validated
    raise StepFailed(f"more than {MAX_INLINE_HOPS} choice or passed wait nodes in a row from {via[0]!r}: "
                     "a loop without a step")


def shadow_result(node_name: str) -> dict[str, Any]:
    """The result of a shadow that ended at its stop ``node_name`` (its context stays on the instance)."""
    return {"shadow": "stopped", "node": node_name}


def _choose(node_name: str, node: ChoiceNode, scope: Scope) -> str:
    for index, choice in enumerate(node.choices):
        try:
            value = compile_expression(choice.when).evaluate_raw(scope)
        except ExpressionError as exc:
            raise StepFailed(f"node {node_name!r} choices[{index}].when: {exc}") from exc
        if not isinstance(value, bool):
            raise StepFailed(f"node {node_name!r} choices[{index}].when gave {value!r}, not true/false")
        if value:
            return choice.next
    return node.default


def wake_time(node_name: str, node: WaitNode, scope: Scope) -> float:
    """The epoch second a wait node's ``until`` expression names."""
    return _timestamp(node_name, "until", node.until, scope)


def await_timeout(node_name: str, node: AwaitNode, scope: Scope) -> float | None:
    """The epoch second an await node's ``timeout`` expression names (None: no timeout)."""
    return None if node.timeout is None else _timestamp(node_name, "timeout", node.timeout, scope)


def quorum_count(node_name: str, node: AwaitNode, scope: Scope) -> int:
    """How many distinct principals an await node's quorum needs (its ``count``: a number or an expression)."""
    assert node.quorum is not None
    count = node.quorum.count
    value = count if isinstance(count, int) else _evaluate(
        node_name, "quorum.count", lambda: compile_expression(count).evaluate_raw(scope))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StepFailed(f"node {node_name!r} quorum.count gave {value!r}, not a whole number of 1 or more")
    return value


def gather_arrival(node_name: str, node: GatherNode, scope: Scope) -> Arrival:
    """Evaluate a gather node's ``group``, ``close`` and ``input`` for one arriving instance."""
    group = _evaluate(node_name, "group", lambda: compile_expression(node.group).evaluate_raw(scope))
    if not isinstance(group, str | int) or isinstance(group, bool) or str(group) == "":
        raise StepFailed(f"node {node_name!r} group gave {group!r}, not a non-empty string")
    name = batch_name(node, str(group))
    if len(name) > MAX_GROUP_LENGTH:
        raise StepFailed(f"node {node_name!r} group gives a batch name of {len(name)} characters "
                         f"(at most {MAX_GROUP_LENGTH})")
    close_at = _timestamp(node_name, "close", node.close, scope)
    contribution = _evaluate(node_name, "input", lambda: compile_template(node.input).evaluate(scope))
    return Arrival(name, str(group), close_at, contribution, node.close_early, node.service, node.action)


def _timestamp(node_name: str, where: str, source: str, scope: Scope) -> float:
    value = _evaluate(node_name, where, lambda: compile_expression(source).evaluate_raw(scope))
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise StepFailed(f"node {node_name!r} {where} gave {value!r}, not a timestamp") from exc
    if not isinstance(value, datetime):
        raise StepFailed(f"node {node_name!r} {where} gave {value!r}, not a timestamp")
    if value.tzinfo is None:
        raise StepFailed(f"node {node_name!r} {where} gave {value.isoformat()} without a time zone")
    return value.timestamp()


def _evaluate(node_name: str, where: str, fn: Any) -> Any:
    try:
        return fn()
    except ExpressionError as exc:
        raise StepFailed(f"node {node_name!r} {where}: {exc}") from exc


def arrival_document(definition: Definition, nxt: Next) -> dict[str, Any]:
    """The ``gather`` document of an arrival: which batch, closing when, from which node."""
    arrival = nxt.arrival
    assert arrival is not None
    return {"name": arrival.name, "group": arrival.group, "close_at": repr(arrival.close_at),
            "close_early": arrival.close_early, "service": arrival.service, "action": arrival.action,
            "node": nxt.node, "workflow": definition.name, "version": definition.version or 0}


# -- what may happen to a step -------------------------------------------------------------------

#: A store operation given the message it pushes with the change and the carrier to record.
Change = Callable[[Envelope | None, str | None], Applied]
#: Told of every change applied through :meth:`StepOutcomes.apply_change` (hooks' ``after_apply``).
AfterApply = Callable[["StepOutcomes", Applied], None]
#: The statuses a step's failure applies at unless told otherwise.
STEP_STATUSES = (InstanceStatus.RUNNING, InstanceStatus.PAUSED)
#: Seconds added to a node's timeout before the sweeper calls a step lost.
DEADLINE_GRACE = 5.0
#: A step that made no progress is re-sent at least this many times in all, whatever its retry policy.
MIN_TIMEOUT_ATTEMPTS = 3

_HOST = socket.gethostname()
#: "host:pid:" of this process, for worker_name: made again in a forked child (the pid changes only there).
_PROCESS = f"{_HOST}:{os.getpid()}:"


def _forked() -> None:
    global _PROCESS
    _PROCESS = f"{_HOST}:{os.getpid()}:"


os.register_at_fork(after_in_child=_forked)


def step_allowance(node: StepNode | GatherNode) -> float:
    """Seconds a started step of ``node`` has before the sweeper calls it lost: its timeout plus a grace."""
    return node.timeout_seconds + DEADLINE_GRACE


def step_deadline(node: StepNode | GatherNode, now: float) -> float:
    """When the sweeper calls a step of ``node`` started at ``now`` lost: its timeout plus a grace."""
    return now + step_allowance(node)


def lost_step_attempts(node: StepNode | GatherNode) -> int:
    """How many attempts a lost step of ``node`` gets in all: its retry policy's, at least ``MIN_TIMEOUT_ATTEMPTS``."""
    return max(node.retry.max_attempts, MIN_TIMEOUT_ATTEMPTS)


def worker_name() -> str:
    """host:pid:thread of this worker, for activity records."""
    return _PROCESS + threading.current_thread().name


_ACTIVITY_FIELDS = fields(Activity)
if hasattr(Activity, "__post_init__") or any(
        f.default not in (MISSING, None) or f.default_factory is not MISSING or not f.init for f in _ACTIVITY_FIELDS):
    raise TypeError("record() assumes Activity.__init__ only sets its fields, the optional ones to None")
#: Every field of an activity record, in order, as None: what :func:`record` starts from.
_ACTIVITY_DEFAULTS: dict[str, Any] = dict.fromkeys(f.name for f in _ACTIVITY_FIELDS)
_ACTIVITY_REQUIRED = frozenset(f.name for f in _ACTIVITY_FIELDS if f.default is MISSING)
_ACTIVITY_NAMES = frozenset(_ACTIVITY_DEFAULTS)


def record(**values: Any) -> Activity:
    """``Activity(**values)``, made in one step: the same record (fields in the same order, so the same
    stored JSON), without the frozen dataclass's one ``object.__setattr__`` per field (29 of them), two
    of which every step's transition makes. TypeError as ``Activity`` for a missing or unknown field."""
    if not values.keys() >= _ACTIVITY_REQUIRED or not values.keys() <= _ACTIVITY_NAMES:
        return Activity(**values)  # raises the TypeError that names the field
    made = object.__new__(Activity)
    state = _ACTIVITY_DEFAULTS.copy()
    state.update(values)
    object.__setattr__(made, "__dict__", state)
    return made


def clone(instance: Instance) -> Instance:
    """A shallow copy of ``instance`` (what ``copy.copy`` makes, without its reduce protocol)."""
    made = object.__new__(Instance)
    made.__dict__.update(instance.__dict__)
    return made


def step_message(node_name: str, node: StepNode, instance_id: str, seq: int, attempt: int) -> StepMessage:
    """The message that runs ``node`` for an instance at ``seq``."""
    if isinstance(node, HttpNode):
        return StepMessage(HTTP_TASK, ENGINE_QUEUE, instance_id, node_name, seq, attempt)
    return StepMessage(f"{node.service}.{node.action}", node.service, instance_id, node_name, seq, attempt)


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What every step of one node of one definition shares, derived once per (definition, node):
    its compiled input template, its record level and what its activity records name."""

    node: StepNode
    #: The node's ``input``, compiled (:func:`~engine.expressions.cel.compile_template`).
    input: Template
    level: RecordLevel
    #: ``service``/``action`` of a service node, ``url`` of an http node (else None).
    service: str | None
    action: str | None
    url: str | None


@dataclass
class DefinitionPlans:
    """What a process derives once from one definition: its step plans by node, and which
    ``drop_after_use`` entries each node leaves unread (None until first asked)."""

    steps: dict[str, StepPlan] = field(default_factory=dict)
    unread: dict[str, tuple[str, ...]] | None = None


def step_plan(definition: Definition, node_name: str) -> StepPlan:
    """The :class:`StepPlan` of step node ``node_name`` (built afresh; :class:`StepOutcomes` caches it).

    Raises ``ExpressionError`` when the input template does not compile.
    """
    node = definition.nodes[node_name]
    assert isinstance(node, StepNode)
    service = node if isinstance(node, ServiceNode) else None
    return StepPlan(node, compile_template(node.input), definition.record_level(node_name),
                    service.service if service is not None else None, service.action if service is not None else None,
                    node.url if isinstance(node, HttpNode) else None)


@dataclass(frozen=True)
class HeldStep:
    """A step that runs once its instance's transitions before it are confirmed together with its batch's
    (``Pipeline.confirm_together``): ``instance`` as it then stands, at that step."""

    instance: Instance
    definition: Definition
    #: Once confirmed (the instance still running), runs the step and the ones chained after it here.
    resume: Callable[[], StepReport]


@dataclass(frozen=True)
class StepReport:
    """What happened to one delivered step (for logs and tests)."""

    outcome: Outcome | str
    status: InstanceStatus | None = None
    next_node: str | None = None
    #: The instance as it now stands, when its next step runs here without a broker hop.
    carried: Instance | None = None
    #: True when the transition into ``carried``'s step waits to be confirmed with its batch's (set by
    #: the step's advance; the report of the delivery then carries ``held``).
    waits: bool = False
    #: The instance's next step, to run once its transitions are confirmed (``Pipeline.confirm_together``).
    held: HeldStep | None = None


def instance_root(instance: Instance) -> dict[str, Any]:
    """The read-only ``instance`` root of expressions: which instance, and which step of it."""
    return {"id": instance.id, "workflow": instance.workflow, "version": instance.version, "run": instance.run,
            "node": instance.node, "seq": instance.seq, "attempt": instance.attempt, "shadow": instance.shadow}


class StepOutcomes:
    """The public operations that decide where an instance goes and record what happened to its step."""

    def __init__(self, store: RedisStore, enqueuer: Enqueuer, clock: Clock = system_clock,
                 epoch: str | None = None) -> None:
        self.store = store
        self.enqueuer = enqueuer
        self.clock = clock
        #: The Redis epoch this process started on (None: not checked, e.g. one-off tools).
        self.epoch = epoch
        #: Called after every applied change, in order (set once by the pipeline from its hooks).
        self.after_apply: tuple[AfterApply, ...] = ()
        #: id(definition) -> (the definition, what :meth:`plan` and :meth:`unread` derived from it once).
        #: A definition is held while its plans are: its id is never another's meanwhile.
        self._plans: dict[int, tuple[Definition, DefinitionPlans]] = {}

    def check_data_set(self) -> None:
        """Raise :class:`engine.errors.DataSetLost` if Redis lost the data set this runtime started on."""
        if self.epoch is not None:
            self.store.check_epoch(self.epoch)

    # -- deciding -----------------------------------------------------------------------------

    def plan(self, definition: Definition, node_name: str) -> StepPlan:
        """The :class:`StepPlan` of step node ``node_name`` of ``definition``, derived once (definitions are
        immutable: a published version never changes). ``ExpressionError`` if its input does not compile."""
        plans = self._derived(definition).steps
        plan = plans.get(node_name)
        if plan is None:
            plan = plans[node_name] = step_plan(definition, node_name)
        return plan

    def unread(self, definition: Definition, node_name: str) -> tuple[str, ...]:
        """The entries of ``definition``'s ``drop_after_use`` that no node from ``node_name`` on reads
        (:mod:`engine.definitions.liveness`, derived once per definition)."""
        if not definition.drop_after_use:
            return ()
        derived = self._derived(definition)
        if derived.unread is None:
            derived.unread = unread_entries(definition)
        return derived.unread.get(node_name, ())

    def _derived(self, definition: Definition) -> DefinitionPlans:
        """What this process derived from ``definition`` so far (made empty on first use)."""
        held = self._plans.get(id(definition))
        if held is None or held[0] is not definition:
            if len(self._plans) >= MAX_PLANNED_DEFINITIONS:  # definitions made on the fly (tests, shadows): bounded
                self._plans.clear()
            held = self._plans[id(definition)] = (definition, DefinitionPlans())
        return held[1]

    def scope(self, definition: Definition, instance: Instance, context: dict[str, Any] | None = None) -> Scope:
        """The expression scope of ``instance`` (optionally with an updated context).

        The ``instance`` root names the step the instance is at: the one about to run when a
        step's input is built, the one that just finished when the nodes after it are resolved.
        """
        return Scope.of(instance.data, definition.parameters, instance.context if context is None else context,
                        self.clock(), instance_root(instance))

    def resolve(self, definition: Definition, node_name: str, scope: Scope) -> Next:
        """Where an instance goes from ``node_name`` (see :func:`resolve`),
        with gather nodes told whether their batch has closed (``late``)."""
        return resolve(definition, node_name, scope, closed=self.store.batch_closed)

    def placement(self, definition: Definition, nxt: Next, now: float) -> Placement:
        """Where ``nxt`` puts an instance: running a step, waiting, gathering, or ended."""
        if nxt.kind is NextKind.STEP:
            node = definition.nodes[nxt.node]
            assert isinstance(node, StepNode)
            return Placement.queued_step(nxt.node, step_allowance(node))
        if nxt.kind is NextKind.WAIT:
            assert nxt.wake_at is not None
            return Placement.wait(nxt.node, nxt.wake_at)
        if nxt.kind is NextKind.AWAIT:  # parked until a signal; its timeout (if any) is a timer
            return Placement.awaiting(nxt.node, nxt.wake_at)
        if nxt.kind is NextKind.GATHER:  # joins its batch in the same atomic update
            assert nxt.arrival is not None
            return Placement.gathering(nxt.node, arrival_document(definition, nxt), nxt.arrival.contribution)
        assert nxt.status is not None
        return Placement.end(nxt.node, nxt.status, nxt.result, definition.drop_on_success)

    def message(self, definition: Definition, instance_id: str, node_name: str, seq: int, attempt: int) -> StepMessage:
        """The message that runs step ``node_name`` of an instance at ``seq``."""
        node = definition.nodes[node_name]
        assert isinstance(node, StepNode)
        return step_message(node_name, node, instance_id, seq, attempt)

    # -- recording ----------------------------------------------------------------------------

    def activity(self, node_name: str, seq: int, attempt: int, started: float, outcome: Outcome,
                 **fields: Any) -> Activity:
        """The activity record of a step of ``node_name`` at ``seq``/``attempt`` started at ``started``, ending now."""
        return record(seq=seq, node=node_name, attempt=attempt, outcome=outcome, worker=worker_name(),
                      started_at=started, ended_at=self.clock(), **fields)

    def apply_change(self, definition: Definition, instance_id: str, change: Change,
                   step: tuple[str, int, int] | None = None, priority: int = PRIORITY_CONTINUE) -> Applied:
        """Apply ``change`` (a store operation); then, if the instance is running, send ``step`` (node, seq, attempt).

        With an enqueuer that writes to the state's Redis, the message is pushed by the same
        atomic script as the change; otherwise it is sent right after. A sent message clears
        the carrier: a message carries the instance from here, not a worker's inline chain.
        Every ``after_apply`` hook is told of the result.
        """
        message = None if step is None else self.message(definition, instance_id, *step)
        envelope = None if message is None else self.enqueuer.envelope(message, priority)
        applied = change(envelope, None if message is None else "")
        if message is not None and envelope is None and applied.applied \
                and applied.status is InstanceStatus.RUNNING:
            self.enqueuer.enqueue(message, priority)
        for hook in self.after_apply:
            hook(self, applied)
        return applied

    def apply_changes(self, changes: Sequence[tuple[Definition, str, Change, tuple[str, int, int] | None]],
                      priority: int = PRIORITY_CONTINUE) -> list[Applied]:
        """:meth:`apply_change` for each of ``changes`` (definition, instance id, change, step), sent to
        Redis together in one round trip: each is still its own compare-and-set, told to the
        ``after_apply`` hooks in order. Changes of one instance go in the order given, each
        expecting the step the one before it leads to (a refused one refuses the ones after it)."""
        sends = []
        self.store.collect()
        try:
            for definition, instance_id, change, step in changes:
                message = None if step is None else self.message(definition, instance_id, *step)
                envelope = None if message is None else self.enqueuer.envelope(message, priority)
                change(envelope, None if message is None else "")
                sends.append(message if envelope is None else None)
        finally:
            applied = self.store.send_collected()
        for message, done in zip(sends, applied, strict=True):
            if message is not None and done.applied and done.status is InstanceStatus.RUNNING:
                self.enqueuer.enqueue(message, priority)
            for hook in self.after_apply:
                hook(self, done)
        return applied

    def fail(self, instance: Instance, definition: Definition, node_name: str, seq: int, attempt: int,
             started: float, reason: str, error_type: str, *, sent: Any = None, transition: str | None = None,
             received: Any = None, trace: str | None = None,
             statuses: tuple[InstanceStatus, ...] = STEP_STATUSES) -> StepReport:
        """Fail ``instance`` at its step ``node_name``/``seq`` (if it is still there, in one of ``statuses``).

        Records the error on the instance and a ``failed`` activity; a late failure (the
        instance moved on) is recorded as a no-op. ``error_type`` names the cause for operators.
        """
        node = definition.nodes[node_name]
        error = {"node": node_name, "service": getattr(node, "service", None) or getattr(node, "url", None),
                 "action": getattr(node, "action", None), "reason": reason, "type": error_type,
                 "attempt": attempt, "at": self.clock()}
        activity = self.activity(node_name, seq, attempt, started, Outcome.FAILED,
                                 error=reason, transition=transition, sent=sent, received=received, trace=trace)
        applied = self.store.fail(instance.id, seq=seq, attempt=attempt, activity=activity, error=error,
                                  noop=self.activity(node_name, seq, attempt, started, Outcome.NOOP,
                                                     reason=f"late failure ignored: {reason}"), statuses=statuses)
        return StepReport(Outcome.FAILED if applied.applied else Outcome.NOOP, applied.status)

    def resend(self, instance: Instance, definition: Definition, attempt: int, activity: Activity | None) -> int:
        """Send the running step of ``instance`` again as attempt ``attempt`` (recording ``activity``); 1 if sent."""
        node = definition.nodes[instance.node]
        assert isinstance(node, StepNode)
        placement = Placement(inflight=True, queued=step_allowance(node))
        applied = self.apply_change(definition, instance.id, lambda send, clear: self.store.retry(
            instance.id, seq=instance.seq, attempt=instance.attempt, next_attempt=attempt, placement=placement,
            activity=activity, statuses=(InstanceStatus.RUNNING,), carrier=clear, send=send),
            (instance.node, instance.seq, attempt))
        return int(applied.applied)

    def resend_lost(self, instance: Instance, definition: Definition, started: float, cause: str, reason: str,
                    error_type: str) -> None:
        """Send the lost started step of ``instance`` again as its next attempt (``<cause>: <reason>``
        recorded), or fail it with ``error_type`` once it has had :func:`lost_step_attempts` attempts."""
        node = definition.nodes[instance.node]
        assert isinstance(node, StepNode)
        if instance.attempt >= lost_step_attempts(node):
            self.fail(instance, definition, instance.node, instance.seq, instance.attempt, started,
                      f"{cause}: {reason}; gave up after {instance.attempt} attempts", error_type)
        else:
            self.resend(instance, definition, instance.attempt + 1, activity=self.activity(
                instance.node, instance.seq, instance.attempt, started, Outcome.RETRY,
                error=f"{cause}: {reason}", retry_in=0))
