"""The Python API: ``Engine``.

Publish definitions, start instances (one or many, as a run), look at them, and operate on
them: pause, resume, retry (optionally with an edited context), cancel, signal — one at a
time or in bulk over a run and a status. Who acts is a :class:`engine.principal.Principal`
given by the caller; every signal and operator action lands in the audit log (:meth:`Engine.audit`).
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from engine import audit as audit_log
from engine.audit import AuditPage, AuditQuery
from engine.broker import PRIORITY_START, Enqueuer, StepMessage
from engine.clock import Clock, system_clock
from engine.definitions.limit_check import MAX_WINDOW_SECONDS
from engine.definitions.nodes import (
    AwaitNode,
    ConcurrencyLimit,
    Definition,
    GatherNode,
    RateLimit,
    StepNode,
    WaitNode,
)
from engine.definitions.validation import validate_input
from engine.errors import InvalidInput, InvalidState, NotFound, SignalRefused, StepFailed
from engine.expressions.cel import Scope
from engine.instance import LIVE_STATUSES, TERMINAL_STATUSES, Activity, Instance, InstanceStatus, Outcome
from engine.labels import check_run_label
from engine.metrics import StepStats, parse_step_metrics
from engine.principal import Principal
from engine.runs_diff import InstancePath, RunDiff, diff_runs, read_run
from engine.runtime.gather import arrival_document
from engine.runtime.outcomes import (
    Next,
    NextKind,
    await_timeout,
    gather_arrival,
    step_allowance,
    wake_time,
    worker_name,
)
from engine.runtime.runner import Runtime
from engine.runtime.signals import SignalResult, send_signal
from engine.runtime.starting import StartResolver
from engine.store.redis_store import Batch, LimitState, NewInstance, Placement, RedisStore

DEFAULT_RUN = "adhoc"
#: The run of shadow instances started without a run label.
SHADOW_RUN = "adhoc-shadow"


@dataclass(frozen=True)
class RunProgress:
    """Counters of one run, read from its status sets (always consistent with the instances)."""

    run: str
    counts: dict[str, int]
    total: int
    created_at: float | None
    #: When the run should be finished by (epoch seconds), if one was set (:meth:`Engine.set_run_deadline`).
    deadline: float | None = None
    #: A run of shadow instances (``start(..., shadow=True)``): it never holds production instances.
    shadow: bool = False

    @property
    def finished(self) -> int:
        """Instances in a terminal status."""
        return sum(self.counts.get(s.value, 0) for s in TERMINAL_STATUSES)

    @property
    def done(self) -> bool:
        """True when every instance of the run is terminal."""
        return self.finished >= self.total > 0

    @property
    def awaiting(self) -> int:
        """Instances parked at an ``await`` node, waiting for a person or another system."""
        return self.counts.get(InstanceStatus.AWAITING.value, 0)

    @property
    def settled(self) -> bool:
        """True when nothing of the run is left for the workers: every instance is terminal or awaiting."""
        return self.finished + self.awaiting >= self.total > 0

    @property
    def phase(self) -> str:
        """``finished`` (all terminal), ``planned`` (every live instance awaits a signal) or ``running``."""
        if self.done:
            return "finished"
        return "planned" if self.settled else "running"


@dataclass(frozen=True)
class CatalogEntry:
    """One published definition: its name, versions (ascending) and aliases."""

    name: str
    versions: list[int]
    aliases: dict[str, int]


@dataclass(frozen=True)
class StartItem:
    """One instance to start in :meth:`Engine.start_many`: its initial data and optional id."""

    data: dict[str, Any]
    instance_id: str | None = None


@dataclass(frozen=True)
class _Starting:
    """What every instance of one ``start_many`` shares: its definition, run and worker name, and
    the start's outcomes (where it goes, its placement), worked out once per distinct input."""

    definition: Definition
    run: str
    worker: str
    resolver: StartResolver[tuple[Next, Placement]]
    shadow: bool = False


class Engine:
    """The workflow engine's operations on one store.

    A closed facade: its store, runtime and enqueuer are private. Read through :meth:`get`,
    :meth:`get_many`, :meth:`list`, :meth:`activities`, :meth:`progress`...; tests that need the
    inside use :mod:`engine.testing` (``store_of``, ``runtime_of``, ``enqueuer_of``, ``Driver``),
    and a benchmark measuring the stored bytes reads through :class:`engine.ops.inspect.Inspector`.
    """

    def __init__(self, store: RedisStore, enqueuer: Enqueuer, clock: Clock = system_clock) -> None:
        # Closed: the store, the broker's enqueuer and the runtime are the engine's own. Code outside
        # engine/ goes through the methods below; tests reach the inside through engine.testing.
        self._store = store
        self._enqueuer = enqueuer
        self.clock = clock
        self._runtime = Runtime(store, enqueuer, clock)

    # -- definitions -------------------------------------------------------------------------

    def publish(self, definition: Definition, alias: str | None = None) -> int:
        """Publish ``definition`` (already validated) and optionally point ``alias`` at it."""
        version, _ = self._store.publish(definition)
        if alias:
            self._store.set_alias(definition.name, alias, version)
        return version

    def definition(self, name: str, ref: int | str | None = None) -> Definition:
        """The definition ``name`` at ``ref`` (version number or alias; latest when None)."""
        return self._store.definition(name, self._store.resolve_version(name, ref))

    def resolve_version(self, name: str, ref: int | str | None = None) -> int:
        """The version number ``ref`` (a number, an alias, or None for latest) names."""
        return self._store.resolve_version(name, ref)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` of ``name`` at ``version`` (e.g. production, canary)."""
        self._store.set_alias(name, alias, version)

    def ensure_alias(self, name: str, alias: str, version: int) -> int:
        """Point ``alias`` at ``version`` only if ``name`` has no such alias yet (an operator's choice
        stands); returns the version the alias names."""
        if alias not in self._store.aliases(name):
            self._store.set_alias(name, alias, version)
        return self._store.resolve_version(name, alias)

    def catalog(self) -> list[CatalogEntry]:
        """Every published definition with its versions and aliases, by name."""
        return [CatalogEntry(name, self._store.versions(name), self._store.aliases(name))
                for name in self._store.definition_names()]

    # -- starting ----------------------------------------------------------------------------

    def start(self, workflow: str, data: dict[str, Any], *, version: int | str | None = None,
              run: str = DEFAULT_RUN, instance_id: str | None = None, shadow: bool = False) -> str:
        """Start one instance; raises InvalidInput when ``data`` does not fit ``initial_data``."""
        number = self._store.resolve_version(workflow, version)
        validate_input(self._store.definition(workflow, number), data)
        return self.start_many(workflow, [StartItem(data, instance_id)], version=number, run=run, shadow=shadow)[0]

    def start_many(self, workflow: str, items: Iterable[StartItem | dict[str, Any]], *,
                   version: int | str | None = None, run: str = DEFAULT_RUN, batch: int = 500,
                   progress: Callable[[int], None] | None = None, shadow: bool = False,
                   created_only: bool = False) -> list[str]:
        """Start one instance per item as part of ``run``; returns their ids.

        Items whose data is invalid become instances that failed at once, with the reason
        recorded, so nothing is lost and the others go on. An item whose ``instance_id``
        already exists is not started again (starting a run twice is harmless); with
        ``created_only`` its id is left out of the result, so the caller learns which items
        were new without looking them up first (the create itself checks, in the same call).
        First steps go at low priority: steps of instances already in flight go first. Instances
        go to Redis ``batch`` at a time, in order, one batch in flight while the next is built;
        a batch Redis refuses stops the start with its error, after the batches before it.

        ``shadow=True`` starts shadow instances (:mod:`engine.definitions.shadow`): each ends at
        the first node marked ``"shadow": "stop"`` it reaches, never joins a gather batch, and
        its actions see ``instance.shadow``. A shadow run has its own label (default
        ``adhoc-shadow``): a run holds shadows or production instances, never both, so a shadow
        never counts in a production run's progress, deadline or batches.
        A ``run`` label outside :data:`engine.labels.RUN_LABEL` raises InvalidInput.
        """
        check_run_label(run)
        self.watch_data_set()
        if shadow and run == DEFAULT_RUN:
            run = SHADOW_RUN
        self._check_run_kind(run, shadow)
        number = self._store.resolve_version(workflow, version)
        definition = self._store.definition(workflow, number)
        ids: list[str] = []
        pending: list[tuple[NewInstance, Next | None]] = []
        self._store.touch_run(run, {f"workflow:{workflow}": number, **({"shadow": "1"} if shadow else {})})
        starting = _Starting(definition, run, worker_name(), StartResolver(definition), shadow)
        sender: ThreadPoolExecutor | None = None  # made at the first full batch: a start of a few has none
        in_flight: tuple[Future[list[str]], int] | None = None

        def landed() -> None:  # the batch sent before: its ids, in order, and its progress
            if in_flight is not None:
                ids.extend(in_flight[0].result())
                if progress:
                    progress(in_flight[1])

        try:
            for item in items:
                item = item if isinstance(item, StartItem) else StartItem(item)
                pending.append(self._new_instance(starting, item))
                if len(pending) >= batch:
                    # Redis creates this batch while this thread builds the next (one batch in flight)
                    landed()
                    sender = sender or ThreadPoolExecutor(1, thread_name_prefix="tradeflow-start")
                    in_flight = sender.submit(self._create, definition, run, pending, created_only), len(pending)
                    pending = []
            landed()
        finally:
            if sender is not None:
                sender.shutdown(wait=True)  # a batch in flight lands before anything is raised
        if pending:
            ids.extend(self._create(definition, run, pending, created_only))
            if progress:
                progress(len(pending))
        return ids

    def _check_run_kind(self, run: str, shadow: bool) -> None:
        """Refuse to mix shadows and production instances in one run (InvalidInput says what to do)."""
        meta = self._store.run_meta(run)
        if not meta or (meta.get("shadow") == "1") == shadow:
            return
        if shadow:
            raise InvalidInput(f"run {run!r} holds production instances: a shadow needs a run of its own "
                               f"(e.g. --run shadow-{run})")
        raise InvalidInput(f"run {run!r} is a shadow run: start production instances in another run")

    def _new_instance(self, starting: _Starting, item: StartItem) -> tuple[NewInstance, Next | None]:
        definition, run = starting.definition, starting.run
        now = self.clock()
        iid = item.instance_id or self._store.new_id()
        try:
            validate_input(definition, item.data)
            root = {"id": iid, "workflow": definition.name, "version": definition.version, "run": run,
                    "node": definition.start, "seq": 1, "attempt": 1, "shadow": starting.shadow}

            def work() -> tuple[Next, Placement]:
                scope = Scope(item.data, definition.parameters, {}, datetime.fromtimestamp(now, UTC), instance=root)
                nxt = self._runtime.resolve(definition, definition.start, scope)
                return nxt, self._runtime.placement(definition, nxt, now)  # a function of nxt alone

            nxt, placement = starting.resolver.resolve(item.data, root, now, work)
        except (InvalidInput, StepFailed) as exc:
            activity = Activity(seq=0, node=definition.start, attempt=1, outcome=Outcome.FAILED,
                                worker=starting.worker, started_at=now, ended_at=now, error=str(exc))
            return NewInstance(iid, definition.name, definition.version or 0, run, item.data, now, activity,
                               Placement.end(definition.start, InstanceStatus.FAILED),
                               error={"node": definition.start, "reason": f"invalid input: {exc}",
                                      "type": type(exc).__name__, "attempt": 0, "at": now},
                               shadow=starting.shadow), None
        activity = Activity(seq=0, node=definition.start, attempt=1, outcome=Outcome.STARTED, worker=starting.worker,
                            started_at=now, ended_at=now, next=nxt.node, via=list(nxt.via) or None)
        send = None  # the first step's message, pushed by the store's script with the instance (a Redis broker)
        if nxt.kind is NextKind.STEP:
            send = self._enqueuer.envelope(self._runtime.message(definition, iid, nxt.node, 1, 1), PRIORITY_START)
        return NewInstance(iid, definition.name, definition.version or 0, run, item.data, now, activity,
                           placement, send=send, shadow=starting.shadow), nxt

    def _create(self, definition: Definition, run: str, pending: list[tuple[NewInstance, Next | None]],
                created_only: bool = False) -> list[str]:
        late: dict[str, StepMessage] = {}  # first steps the store cannot push with the instance (another broker)
        ready: list[NewInstance] = []
        for new, nxt in pending:
            if nxt is not None and nxt.kind is NextKind.STEP and new.send is None:
                late[new.id] = self._runtime.message(definition, new.id, nxt.node, 1, 1)
            ready.append(new)
        created = self._store.create(ready)
        self._store.touch_run(run, {"total": sum(created)})
        for new, fresh in zip(ready, created, strict=True):
            if fresh and new.id in late:
                self._enqueuer.enqueue(late[new.id], PRIORITY_START)
        return [new.id for new, fresh in zip(ready, created, strict=True) if fresh or not created_only]

    # -- reading -----------------------------------------------------------------------------

    def get(self, instance_id: str) -> Instance:
        """The instance; NotFound when it does not exist (or has expired: see the archive)."""
        instance = self._store.load(instance_id)
        if instance is None:
            raise NotFound(f"no instance {instance_id} (never created, or expired; `tradeflow archive show` "
                           "reads archived ones)")
        return instance

    def get_many(self, ids: Sequence[str]) -> list[Instance]:
        """The instances of ``ids`` that exist, in the order given (one round trip per 500; missing or
        expired ones are left out: compare the ids to tell)."""
        found: list[Instance] = []
        for start in range(0, len(ids), 500):
            found.extend(self._store.load_many(list(ids[start:start + 500])))
        return found

    def existing(self, ids: Sequence[str]) -> list[bool]:
        """For each of ``ids``, whether that instance exists (one round trip)."""
        return self._store.existing(ids)

    def activities(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's history: one record per step attempt, no-op and operator action."""
        self.get(instance_id)
        return self._store.activities(instance_id)

    def list(self, run: str, statuses: Iterable[InstanceStatus | str] | None = None,
             limit: int | None = None, *, after: str | None = None) -> list[Instance]:
        """Instances of ``run`` (optionally only in ``statuses``) by id, at most ``limit`` of them.

        Paging: pass the last id of a page as ``after`` to get the next one (ids strictly
        greater); fewer than ``limit`` back means the last page. Only the page's instances are
        loaded (the run's ids are read to order them: a few bytes per instance).
        """
        wanted = [InstanceStatus(s) for s in statuses] if statuses else None
        ids = self._store.run_ids(run, wanted)
        if after is not None:
            ids = ids[bisect.bisect_right(ids, after):]
        if limit is not None:
            ids = ids[:limit]
        return self.get_many(ids)

    def runs(self, limit: int = 20, offset: int = 0) -> list[str]:
        """Run labels, newest first: ``limit`` of them from the ``offset``-th."""
        return self._store.runs(limit, offset)

    def watch_data_set(self) -> None:
        """Remember Redis's epoch on first call; later calls raise :class:`DataSetLost` if it is gone.

        Starting and watching a run call it, so a Redis that restarts empty under a run is
        reported instead of the run silently shrinking.
        """
        if self._runtime.epoch is None:
            self._runtime.epoch = self._store.ensure_epoch()
        else:
            self._runtime.check_data_set()

    def progress(self, run: str) -> RunProgress:
        """Counters of ``run`` by status (raises :class:`DataSetLost` if Redis lost the data set)."""
        self.watch_data_set()
        counts = self._store.run_counts(run)
        meta = self._store.run_meta(run)
        if not meta and not any(counts.values()):
            raise NotFound(f"no run {run!r}; `tradeflow runs` lists them")
        total = max(int(meta.get("total", 0)), sum(counts.values()))
        return RunProgress(run, counts, total, float(meta["created_at"]) if "created_at" in meta else None,
                           float(meta["deadline"]) if meta.get("deadline") else None, meta.get("shadow") == "1")

    def set_run_deadline(self, run: str, deadline: float | None) -> None:
        """Set (or with None, clear) when ``run`` should be finished by (epoch seconds)."""
        self._store.touch_run(run, {"deadline": "" if deadline is None else repr(float(deadline))})

    def diff_runs(self, a: str, b: str, *, key: str = "data.account_id", path: str = "result") -> RunDiff:
        """Pair the instances of runs ``a`` and ``b`` by ``key`` (a path into each instance, e.g.
        ``data.account_id``) and compare them at ``path`` (``result``, ``context.<node>``...):
        equal, changed (field by field), only in A, only in B. See :mod:`engine.runs_diff`."""
        for run in (a, b):
            self.progress(run)  # NotFound names the runs command
        return diff_runs(self._store, a, b, key, path)

    def run_values(self, run: str, paths: Sequence[str]) -> Iterator[tuple[str, list[Any]]]:
        """(instance id, the value at each of ``paths``) for every instance of ``run``, read in pipelined
        batches (paths as in :meth:`diff_runs`; an absent value is None)."""
        parsed = [InstancePath.parse(p) for p in paths]
        return read_run(self._store, run, parsed)

    # -- observing (the console, /metrics) -------------------------------------------------------

    def step_metrics(self) -> StepStats:
        """Step counts and durations flushed by every worker process (:mod:`engine.metrics`)."""
        return parse_step_metrics(*self._store.step_metrics())

    # -- shared limits (engine.runtime.concerns.limits) ---------------------------------------------

    def limits(self) -> list[LimitState]:
        """Every rate or concurrency limit used or set: its settings, calls free now, parked instances."""
        return self._store.limit_states()

    def set_limit(self, name: str, per_second: float | None = None, burst: int | None = None,
                  maximum: int | None = None, *, by: Principal | str | None = None) -> LimitState:
        """Override limit ``name`` at run time, for every worker at once (no publish): a rate
        (``per_second``, ``burst``) or a concurrency pool's size (``maximum``).

        The one door for every caller (``tradeflow limits set``, the console's Limits page, the
        platform's settings): the change is recorded in the audit log (``limit_set``) with ``by``.
        """
        try:
            if maximum is not None:
                value: dict[str, Any] = {"max": ConcurrencyLimit(key="k", max=maximum).max}
            elif per_second is not None:
                rate = RateLimit(key="k", per_second=per_second, burst=burst)
                value = {"per_second": rate.per_second, "burst": rate.capacity}
                if rate.capacity / rate.per_second > MAX_WINDOW_SECONDS:
                    raise InvalidInput(f"burst {rate.capacity} at {per_second:g}/s is a window over a day: "
                                       "lower the burst or raise the calls a second")
            else:
                raise InvalidInput("give the calls a second (--per-second, and --burst) for a rate, or the "
                                   "most at once (--max) for a concurrency pool")
        except ValidationError as exc:
            raise InvalidInput(f"limit {name!r}: " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())) from exc
        if not name.strip():
            raise InvalidInput("a limit needs a name (`tradeflow limits` lists them)")
        before = self._store.limit_states([name])[0]
        self._store.limit_set(name, value)
        self._store.append_audit(audit_log.entry_fields(audit_log.LIMIT_KINDS[0], by, detail={
            "limit": name, **value, "was": _limit_setting(before)}))
        return self._store.limit_states([name])[0]

    def clear_limit(self, name: str, *, by: Principal | str | None = None) -> None:
        """Drop the run-time override of ``name``: the definitions' settings apply again (audited
        as ``limit_cleared`` with ``by``, as :meth:`set_limit`)."""
        before = self._store.limit_states([name])[0]
        self._store.limit_clear(name)
        self._store.append_audit(audit_log.entry_fields(audit_log.LIMIT_KINDS[1], by, detail={
            "limit": name, "had_override": before.override, "was": _limit_setting(before)}))

    def run_limited(self, run: str) -> dict[str, int]:
        """How many instances of ``run`` wait for which limit now (``rate: brokerage`` -> 12): parked
        steps, and the members of a gather batch whose step is parked."""
        counts = self._store.run_limited(run)
        for reason, count in self._runtime.gatherer.parked_members(run).items():
            counts[reason] = counts.get(reason, 0) + count
        return counts

    def timers_due(self) -> int:
        """Waits, retry backoffs and review timeouts whose time has come but that no tick has moved on yet."""
        return self._store.timers_due(self.clock())

    def queue_stats(self, queues: Iterable[str]) -> dict[str, tuple[int, float | None]]:
        """Per service queue: messages waiting, and the age in seconds of the oldest one (None: empty).

        Read from the broker's lists when the engine writes them itself (the Redis broker, the
        default deployment); the age is that of the oldest message's instance's last change.
        Empty for other brokers.
        """
        heads = getattr(self._enqueuer, "queue_heads", None)
        if heads is None:
            return {}
        out: dict[str, tuple[int, float | None]] = {}
        now = self.clock()
        for queue in queues:
            depth, oldest_ids = heads(queue)
            ages = [max(now - i.updated_at, 0.0) for i in self._store.load_many(oldest_ids)]
            out[queue] = (depth, max(ages) if ages else None)
        return out

    def wait_for_run(self, run: str, timeout: float = 600, poll: float = 0.2,
                     on_progress: Callable[[RunProgress], None] | None = None, *,
                     settled: bool = False) -> RunProgress:
        """Block until every instance of ``run`` is terminal (or ``timeout``); returns the last progress.

        With ``settled``, stop as soon as every instance is terminal or awaiting a signal (the
        run is "planned": what is left waits for people, not for workers).
        """
        deadline = time.monotonic() + timeout
        while True:
            progress = self.progress(run)
            if on_progress:
                on_progress(progress)
            if (progress.settled if settled else progress.done) or time.monotonic() > deadline:
                return progress
            time.sleep(poll)

    # -- operating ---------------------------------------------------------------------------

    def pause(self, instance_id: str, reason: str = "", *, by: Principal | None = None) -> Instance:
        """Stop at the next step boundary: a step in flight finishes and is recorded, nothing more is sent.

        ``by`` (who acts) is recorded in the history and the audit log, like every operator action's.
        """
        instance = self.get(instance_id)
        pausable = (InstanceStatus.RUNNING, InstanceStatus.WAITING, InstanceStatus.AWAITING)
        if instance.status not in pausable:
            raise InvalidState(f"{instance_id} is {instance.status.value}; only running, waiting or awaiting "
                               "instances pause")
        self._control(instance, "pause", reason, pausable, Placement(InstanceStatus.PAUSED), by)
        return self.get(instance_id)

    def resume(self, instance_id: str, reason: str = "", *, by: Principal | None = None) -> Instance:
        """Go on from the current node: re-send its step (or park its wait again)."""
        instance = self.get(instance_id)
        if instance.status is not InstanceStatus.PAUSED:
            raise InvalidState(f"{instance_id} is {instance.status.value}; only paused instances resume")
        self._restart_at(instance, "resume", reason, (InstanceStatus.PAUSED,), attempt=instance.attempt, by=by)
        return self.get(instance_id)

    def retry(self, instance_id: str, context: dict[str, Any] | None = None, reason: str = "", *,
              by: Principal | None = None) -> Instance:
        """Re-run the failed node, optionally with ``context`` entries replaced (node name -> data)."""
        instance = self.get(instance_id)
        if instance.status is not InstanceStatus.FAILED:
            raise InvalidState(f"{instance_id} is {instance.status.value}; only failed instances are retried")
        definition = self._store.definition(instance.workflow, instance.version)
        for node in context or {}:
            if node not in definition.nodes:
                raise InvalidState(f"context entry {node!r} names no node of {instance.workflow}")
        self._restart_at(instance, "retry", reason, (InstanceStatus.FAILED,), attempt=1, context=context or {},
                         by=by)
        return self.get(instance_id)

    def cancel(self, instance_id: str, reason: str = "", *, by: Principal | None = None) -> Instance:
        """End the instance as cancelled; a step in flight finishes but its result is ignored."""
        instance = self.get(instance_id)
        if instance.status in TERMINAL_STATUSES:
            raise InvalidState(f"{instance_id} is already {instance.status.value}")
        self._control(instance, "cancel", reason, LIVE_STATUSES, Placement(InstanceStatus.CANCELLED, inflight=False),
                      by)
        return self.get(instance_id)

    def _control(self, instance: Instance, verb: str, reason: str, allowed: Iterable[InstanceStatus],
                 placement: Placement, by: Principal | None) -> None:
        applied = self._store.control(instance.id, seq=instance.seq, statuses=allowed, placement=placement,
                                     activity=self._control_activity(instance, verb, reason, by))
        if not applied.applied:
            raise InvalidState(f"{instance.id} changed meanwhile (now {applied.status}); try again")
        self._audit_control(instance, verb, reason, by)

    def _audit_control(self, instance: Instance, verb: str, reason: str, by: Principal | None,
                       edited: list[str] | None = None) -> None:
        detail = {"node": instance.node, "from": instance.status.value, "reason": reason or None, "edited": edited}
        self._store.append_audit(audit_log.entry_fields(verb, by, run=instance.run, instance=instance.id,
                                                       detail={k: v for k, v in detail.items() if v}))

    def _control_activity(self, instance: Instance, verb: str, reason: str, by: Principal | None,
                          edited: list[str] | None = None) -> Activity:
        now = self.clock()
        return Activity(seq=instance.seq, node=instance.node, attempt=instance.attempt, outcome=Outcome.CONTROL,
                        control=verb, reason=reason or None, worker=worker_name(), started_at=now, ended_at=now,
                        edited=edited, by=by.name if by else None, roles=sorted(by.roles) if by else None)

    def _restart_at(self, instance: Instance, verb: str, reason: str, allowed: tuple[InstanceStatus, ...],
                    attempt: int, context: dict[str, Any] | None = None, *, by: Principal | None = None) -> None:
        """Resume or retry ``instance`` at its node, with ``context`` entries replaced (a retry's edits)."""
        definition = self._store.definition(instance.workflow, instance.version)
        node = definition.nodes[instance.node]
        edited = None if context is None else sorted(context)
        activity = self._control_activity(instance, verb, reason, by, edited)
        if isinstance(node, WaitNode):
            scope = self._runtime.scope(definition, instance, {**instance.context, **(context or {})})
            wake = instance.wake_at or wake_time(instance.node, node, scope)
            placement = Placement.wait(instance.node, wake)
            send, attempt_after = False, None
        elif isinstance(node, AwaitNode):  # parked again; a timeout that passed meanwhile fires at the next tick
            scope = self._runtime.scope(definition, instance, {**instance.context, **(context or {})})
            timeout = instance.wake_at or await_timeout(instance.node, node, scope)
            placement = Placement.awaiting(instance.node, timeout)
            send, attempt_after = False, None
        elif isinstance(node, GatherNode):  # contributes again: to the group's open batch, or its next one
            scope = self._runtime.scope(definition, instance, {**instance.context, **(context or {})})
            try:
                arrival = gather_arrival(instance.node, node, scope)
            except StepFailed as exc:
                raise InvalidState(f"{instance.id} cannot gather at {instance.node!r} again: {exc}") from exc
            nxt = Next(NextKind.GATHER, instance.node, wake_at=arrival.close_at, arrival=arrival)
            placement = Placement.gathering(instance.node, arrival_document(definition, nxt), arrival.contribution)
            send, attempt_after = False, 1
        elif isinstance(node, StepNode):
            # A step still in flight when a pause is lifted will advance by itself: do not send it twice.
            send = not (verb == "resume" and instance.inflight)
            # queued: sent now, or (a resume) still in flight; either way its timeout starts with a worker
            placement = Placement.queued_step(instance.node, step_allowance(node))
            attempt_after = attempt
        else:
            raise InvalidState(f"{instance.id} stopped at {instance.node!r}, which cannot be re-run")
        applied = self._runtime.apply_change(definition, instance.id, lambda envelope, clear: self._store.control(
            instance.id, seq=instance.seq, statuses=allowed, activity=activity, placement=placement,
            attempt=attempt_after, context=context, carrier=clear, send=envelope),
            (instance.node, instance.seq, attempt) if send else None)
        if not applied.applied:
            raise InvalidState(f"{instance.id} changed meanwhile (now {applied.status}); try again")
        self._audit_control(instance, verb, reason, by, edited)

    # -- batches of gather nodes -------------------------------------------------------------

    def batch(self, batch_id: str) -> BatchView:
        """A gather node's batch: its record, members with their contributions, and its history."""
        found = self._store.load_batch(batch_id)
        if found is None:
            raise NotFound(f"no batch {batch_id!r} (never opened, or expired after it was applied); "
                           "`tradeflow batches` lists them")
        return BatchView(found, self._store.batch_contributions(batch_id), self._store.batch_runs(batch_id),
                         self._store.batch_activities(batch_id))

    def close_batch(self, batch_id: str, reason: str = "operator", *, by: Principal | None = None) -> bool:
        """Close an open batch now (an operator trades what has gathered): its step is sent at once.

        The batch's history says "closed by <by's name, else reason>"; the audit log keeps ``by``.
        False when it was not open (closed already, or applied); NotFound when there is no such batch.
        """
        found = self._store.load_batch(batch_id)
        if found is None:
            raise NotFound(f"no batch {batch_id!r}; `tradeflow batches` lists them")
        closed = self._runtime.gatherer.close(batch_id, f"closed by {by.name if by else reason}", early=False)
        detail = {"batch": batch_id, "closed": closed, "status": found.status, "reason": reason or None}
        self._store.append_audit(audit_log.entry_fields(audit_log.CLOSE_BATCH, by, detail=detail))
        return closed

    def batches(self, limit: int = 50) -> list[Batch]:
        """The latest batches, newest first (applied ones expire with the retention)."""
        found = [self._store.load_batch(b) for b in self._store.batch_ids(limit)]
        return [b for b in found if b is not None]

    # -- signals -----------------------------------------------------------------------------

    def signal(self, instance_id: str, name: str, data: dict[str, Any] | None = None, *, by: Principal,
               key: str | None = None) -> SignalResult:
        """Send signal ``name`` from ``by`` to an instance parked at an ``await`` node; it moves on atomically.

        ``by`` is who sends it, as the caller authenticated them (never read from ``data``): the
        await node may allow the signal to some roles only, require fields of ``data``, and count
        it toward a quorum of distinct principals (see :mod:`engine.runtime.signals`). ``data``
        (a JSON object) is written into the context under the await node's name, under the
        fields the engine owns (``signal``, ``by``, ``roles``, ``at``, ``quorum``). The history
        and the audit log record the signal, who sent it and when. With ``key``, a signal already
        applied under that key is a recorded no-op (``duplicate=True``): safe to resend. A refused
        signal raises :class:`SignalRefused`, which says why; the refusal is recorded too.
        """
        return send_signal(self._runtime, instance_id, name, data, by=by, key=key)

    def signal_run(self, run: str, name: str, data: dict[str, Any] | None = None, *, by: Principal,
                   key: str | None = None, node: str | None = None) -> BulkResult:
        """Send ``name`` from ``by`` to every awaiting instance of ``run`` (only those at ``node`` when given).

        Instances not awaiting that signal, that refuse it (each refusal recorded), or that moved
        on meanwhile, count as skipped; one whose ``key`` was applied before counts as skipped too.
        """
        done, skipped = 0, 0
        for iid in self._ids(run, [InstanceStatus.AWAITING]):
            try:
                if node is not None and self.get(iid).node != node:
                    skipped += 1
                    continue
                result = self.signal(iid, name, data, by=by, key=key)
            except (SignalRefused, NotFound):
                skipped += 1
                continue
            done, skipped = (done + 1, skipped) if result.applied else (done, skipped + 1)
        return BulkResult(f"signal {name}", done, skipped)

    # -- bulk --------------------------------------------------------------------------------

    def bulk(self, verb: str, run: str, statuses: Iterable[InstanceStatus | str] | None = None,
             reason: str = "", *, by: Principal | None = None) -> BulkResult:
        """Apply ``verb`` (pause, resume, retry, cancel) to every instance of ``run`` in ``statuses``.

        Each instance is handled on its own: one that changed meanwhile is counted as skipped.
        """
        operation = {"pause": self.pause, "resume": self.resume, "retry": self.retry, "cancel": self.cancel}[verb]
        pausable = [InstanceStatus.RUNNING, InstanceStatus.WAITING, InstanceStatus.AWAITING]
        default = {"pause": pausable, "resume": [InstanceStatus.PAUSED],
                   "retry": [InstanceStatus.FAILED], "cancel": list(LIVE_STATUSES)}[verb]
        wanted = [InstanceStatus(s) for s in statuses] if statuses else default
        done, skipped = 0, 0
        for iid in self._ids(run, wanted):
            try:
                operation(iid, reason=reason, by=by)
                done += 1
            except (InvalidState, NotFound):
                skipped += 1
        return BulkResult(verb, done, skipped)

    # -- the audit log -------------------------------------------------------------------------

    def record_audit(self, kind: str, by: Principal | str, *, run: str | None = None, instance: str | None = None,
                     detail: dict[str, Any] | None = None) -> None:
        """Record an event of ``kind`` (e.g. the console's ``login``) by ``by`` in the audit log."""
        self._store.append_audit(audit_log.entry_fields(kind, by, run=run, instance=instance, detail=detail))

    def audit(self, *, person: str | None = None, run: str | None = None, since: float | None = None,
              until: float | None = None, kinds: Iterable[str] | None = None, limit: int = 100,
              before: str | None = None) -> AuditPage:
        """Audit events newest first, filtered by ``person`` (a name), ``run``, time (epoch seconds,
        both ends included) and ``kinds``; ``before``: the ``next`` of the previous page.

        A page scans a bounded stretch of the log: over a long log and a rare filter it may hold
        fewer than ``limit`` events with a ``next`` to go on from; ``next`` None means no more.
        """
        query = AuditQuery.of(person=person, run=run, since=since, until=until, kinds=kinds, limit=limit,
                              before=before)
        return audit_log.read_page(self._store.audit_entries, query)

    def _ids(self, run: str, statuses: list[InstanceStatus]) -> Iterator[str]:
        for status in statuses:
            yield from list(self._store.iter_run_ids(run, status))


@dataclass(frozen=True)
class BatchView:
    """One batch as :meth:`Engine.batch` shows it."""

    batch: Batch
    #: (instance id, contribution) in order of arrival.
    contributions: list[tuple[str, Any]]
    runs: list[str]
    activities: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (``tradeflow batch ID --json``)."""
        return {"batch": self.batch.to_dict(), "runs": self.runs, "activities": self.activities,
                "members": [{"instance": iid, "input": value} for iid, value in self.contributions]}


@dataclass(frozen=True)
class BulkResult:
    """How a bulk operation went."""

    verb: str
    done: int
    skipped: int


def instance_json(instance: Instance, activities: list[dict[str, Any]]) -> str:
    """The instance and its history as one JSON document (``inspect --json``, the archive)."""
    return json.dumps({"instance": instance.to_dict(), "activities": activities}, default=str)


#: The API and the types of its answers (import them from here, not from engine.store or engine.runtime).
__all__ = ["DEFAULT_RUN", "SHADOW_RUN", "Batch", "BatchView", "BulkResult", "CatalogEntry", "Engine", "RunProgress",
           "SignalResult", "StartItem", "instance_json"]


def _limit_setting(state: LimitState) -> dict[str, Any] | None:
    """What a limit was set to (for the audit record of a change): a rate, a pool size, or None."""
    if state.per_second is not None:
        return {"per_second": state.per_second, "burst": state.burst, "override": state.override}
    if state.max is not None:
        return {"max": state.max, "override": state.override}
    return None
