"""The Python API: ``Engine``.

Publish definitions, start instances (one or many, as a run), look at them, and operate on
them: pause, resume, retry (optionally with an edited context), cancel — one at a time or
in bulk over a run and a status.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.clock import Clock, system_clock
from engine.definition import Definition, HttpNode, ServiceNode, WaitNode
from engine.dispatcher import Next, NextKind, resolve, wake_time
from engine.errors import InvalidInput, InvalidState, NotFound, StepFailed
from engine.expressions import Scope
from engine.messages import PRIORITY_START, Enqueuer, StepMessage
from engine.metrics import StepStats, read_step_metrics
from engine.model import LIVE_STATUSES, TERMINAL_STATUSES, Instance, InstanceStatus, Outcome
from engine.runtime import Runtime, step_deadline, worker_name
from engine.store import RedisStore, Update, pack
from engine.validation import validate_input

DEFAULT_RUN = "adhoc"


@dataclass(frozen=True)
class RunProgress:
    """Counters of one run, read from its status sets (always consistent with the instances)."""

    run: str
    counts: dict[str, int]
    total: int
    created_at: float | None
    #: When the run should be finished by (epoch seconds), if one was set (:meth:`Engine.set_run_deadline`).
    deadline: float | None = None

    @property
    def finished(self) -> int:
        """Instances in a terminal status."""
        return sum(self.counts.get(s.value, 0) for s in TERMINAL_STATUSES)

    @property
    def done(self) -> bool:
        """True when every instance of the run is terminal."""
        return self.finished >= self.total > 0


@dataclass(frozen=True)
class StartItem:
    """One instance to start in :meth:`Engine.start_many`: its initial data and optional id."""

    data: dict[str, Any]
    instance_id: str | None = None


class Engine:
    """The workflow engine's operations on one store."""

    def __init__(self, store: RedisStore, enqueuer: Enqueuer, clock: Clock = system_clock) -> None:
        self.store = store
        self.enqueuer = enqueuer
        self.clock = clock
        self.runtime = Runtime(store, enqueuer, clock)

    # -- definitions -------------------------------------------------------------------------

    def publish(self, definition: Definition, alias: str | None = None) -> int:
        """Publish ``definition`` (already validated) and optionally point ``alias`` at it."""
        version, _ = self.store.publish(definition)
        if alias:
            self.store.set_alias(definition.name, alias, version)
        return version

    def definition(self, name: str, ref: int | str | None = None) -> Definition:
        """The definition ``name`` at ``ref`` (version number or alias; latest when None)."""
        return self.store.definition(name, self.store.resolve_version(name, ref))

    # -- starting ----------------------------------------------------------------------------

    def start(self, workflow: str, data: dict[str, Any], *, version: int | str | None = None,
              run: str = DEFAULT_RUN, instance_id: str | None = None) -> str:
        """Start one instance; raises InvalidInput when ``data`` does not fit ``initial_data``."""
        number = self.store.resolve_version(workflow, version)
        validate_input(self.store.definition(workflow, number), data)
        return self.start_many(workflow, [StartItem(data, instance_id)], version=number, run=run)[0]

    def start_many(self, workflow: str, items: Iterable[StartItem | dict[str, Any]], *,
                   version: int | str | None = None, run: str = DEFAULT_RUN, batch: int = 500,
                   progress: Callable[[int], None] | None = None) -> list[str]:
        """Start one instance per item as part of ``run``; returns their ids.

        Items whose data is invalid become instances that failed at once, with the reason
        recorded, so nothing is lost and the others go on. An item whose ``instance_id``
        already exists is not started again (starting a run twice is harmless).
        First steps go at low priority: steps of instances already in flight go first.
        """
        self.watch_data_set()
        number = self.store.resolve_version(workflow, version)
        definition = self.store.definition(workflow, number)
        ids: list[str] = []
        pending: list[tuple[dict[str, Any], Next | None]] = []
        self.store.touch_run(run, {f"workflow:{workflow}": number})
        for item in items:
            item = item if isinstance(item, StartItem) else StartItem(item)
            pending.append(self._new_instance(definition, run, item))
            if len(pending) >= batch:
                ids.extend(self._create(definition, run, pending))
                if progress:
                    progress(len(pending))
                pending = []
        if pending:
            ids.extend(self._create(definition, run, pending))
            if progress:
                progress(len(pending))
        return ids

    def _new_instance(self, definition: Definition, run: str, item: StartItem) -> tuple[dict[str, Any], Next | None]:
        now = self.clock()
        iid = item.instance_id or self.store.new_id()
        fields: dict[str, Any] = {
            "id": iid, "workflow": definition.name, "version": definition.version, "run": run,
            "seq": 1, "attempt": 1, "data": pack(item.data), "created_at": repr(now), "updated_at": repr(now),
            "inflight": "0", "_deadline": None, "_timer": None,
        }
        activity = {"seq": 0, "node": definition.start, "attempt": 1, "outcome": Outcome.STARTED.value,
                    "worker": worker_name(), "started_at": now, "ended_at": now}
        try:
            validate_input(definition, item.data)
            scope = Scope(item.data, definition.parameters, {}, datetime.fromtimestamp(now, UTC),
                          instance={"id": iid, "workflow": definition.name, "version": definition.version,
                                    "run": run, "node": definition.start, "seq": 1, "attempt": 1})
            nxt = resolve(definition, definition.start, scope)
        except (InvalidInput, StepFailed) as exc:
            fields.update(status=InstanceStatus.FAILED.value, node=definition.start, finished_at=repr(now),
                          error=pack({"node": definition.start, "reason": f"invalid input: {exc}",
                                       "type": type(exc).__name__, "attempt": 0, "at": now}))
            activity.update(outcome=Outcome.FAILED.value, error=str(exc))
            fields["_activity"] = activity
            return fields, None
        activity["next"] = nxt.node
        fields["node"] = nxt.node
        fields["_activity"] = activity
        if nxt.kind is NextKind.STEP:
            node = definition.nodes[nxt.node]
            assert isinstance(node, ServiceNode | HttpNode)
            fields.update(status=InstanceStatus.RUNNING.value, inflight="1",
                          _deadline=step_deadline(node, now))
        elif nxt.kind is NextKind.WAIT:
            fields.update(status=InstanceStatus.WAITING.value, wake_at=repr(nxt.wake_at), timer="wake",
                          _timer=nxt.wake_at)
        else:
            assert nxt.status is not None
            fields.update(status=nxt.status.value, finished_at=repr(now))
            if nxt.result is not None:
                fields["result"] = pack(nxt.result)
        return fields, nxt

    def _create(self, definition: Definition, run: str, pending: list[tuple[dict[str, Any], Next | None]]) -> list[str]:
        ids = [fields["id"] for fields, _ in pending]
        pipe = self.store.client.pipeline(transaction=False)
        for iid in ids:
            pipe.exists(self.store.keys.instance(iid))
        exists = pipe.execute()
        fresh = [(f, n) for (f, n), e in zip(pending, exists, strict=True) if not e]
        late: list[StepMessage] = []  # first steps the store cannot push with the instance
        for fields, nxt in fresh:
            fields["_send"] = None
            if nxt is not None and nxt.kind is NextKind.STEP:
                message = self.runtime.message(definition, fields["id"], nxt.node, 1, 1)
                fields["_send"] = self.enqueuer.envelope(message, PRIORITY_START)
                if fields["_send"] is None:
                    late.append(message)
        self.store.create(f for f, _ in fresh)
        self.store.touch_run(run, {"total": len(fresh)})
        finished = [f["id"] for f, _ in fresh if f["status"] in {s.value for s in TERMINAL_STATUSES}]
        if finished:
            pipe = self.store.client.pipeline(transaction=False)
            for iid in finished:
                pipe.expire(self.store.keys.instance(iid), self.store.retention_seconds)
                pipe.expire(self.store.keys.activities(iid), self.store.retention_seconds)
            pipe.execute()
        for message in late:
            self.enqueuer.enqueue(message, PRIORITY_START)
        return ids

    # -- reading -----------------------------------------------------------------------------

    def get(self, instance_id: str) -> Instance:
        """The instance; NotFound when it does not exist (or has expired: see the archive)."""
        instance = self.store.load(instance_id)
        if instance is None:
            raise NotFound(f"no instance {instance_id} (never created, or expired; `tradeflow archive show` "
                           "reads archived ones)")
        return instance

    def activities(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's history: one record per step attempt, no-op and operator action."""
        self.get(instance_id)
        return self.store.activities(instance_id)

    def list(self, run: str, statuses: Iterable[InstanceStatus | str] | None = None,
             limit: int | None = None) -> list[Instance]:
        """Instances of ``run``, optionally only in ``statuses``."""
        wanted = [InstanceStatus(s) for s in statuses] if statuses else None
        ids = self.store.run_ids(run, wanted)
        if limit is not None:
            ids = ids[:limit]
        found: list[Instance] = []
        for start in range(0, len(ids), 500):
            found.extend(self.store.load_many(ids[start:start + 500]))
        return found

    def runs(self, limit: int = 20) -> list[str]:
        """Run labels, newest first."""
        return self.store.runs(limit)

    def watch_data_set(self) -> None:
        """Remember Redis's epoch on first call; later calls raise :class:`DataSetLost` if it is gone.

        Starting and watching a run call it, so a Redis that restarts empty under a run is
        reported instead of the run silently shrinking.
        """
        if self.runtime.epoch is None:
            self.runtime.epoch = self.store.ensure_epoch()
        else:
            self.runtime.check_data_set()

    def progress(self, run: str) -> RunProgress:
        """Counters of ``run`` by status (raises :class:`DataSetLost` if Redis lost the data set)."""
        self.watch_data_set()
        counts = self.store.run_counts(run)
        meta = self.store.run_meta(run)
        if not meta and not any(counts.values()):
            raise NotFound(f"no run {run!r}; `tradeflow runs` lists them")
        total = max(int(meta.get("total", 0)), sum(counts.values()))
        return RunProgress(run, counts, total, float(meta["created_at"]) if "created_at" in meta else None,
                           float(meta["deadline"]) if meta.get("deadline") else None)

    def set_run_deadline(self, run: str, deadline: float | None) -> None:
        """Set (or with None, clear) when ``run`` should be finished by (epoch seconds)."""
        self.store.touch_run(run, {"deadline": "" if deadline is None else repr(float(deadline))})

    # -- observing (the console, /metrics) -------------------------------------------------------

    def catalog(self) -> list[tuple[str, list[int], dict[str, int]]]:
        """Every definition name with its versions and aliases."""
        return [(name, self.store.versions(name), self.store.aliases(name))
                for name in sorted(self.store.definition_names())]

    def step_metrics(self) -> StepStats:
        """Step counts and durations flushed by every worker process (:mod:`engine.metrics`)."""
        return read_step_metrics(self.store.client, self.store.keys)

    def timers_due(self) -> int:
        """Waits and retry backoffs whose time has come but that no tick has moved on yet."""
        return int(self.store.client.zcount(self.store.keys.timers, "-inf", self.clock()))

    def queue_stats(self, queues: Iterable[str]) -> dict[str, tuple[int, float | None]]:
        """Per service queue: messages waiting, and the age in seconds of the oldest one (None: empty).

        Read from the broker's lists when the broker is this Redis (the default deployment);
        the age is that of the oldest message's instance's last change. Empty for other brokers.
        """
        queue_key = getattr(self.enqueuer, "queue_key", None)
        steps = getattr(self.enqueuer, "priority_steps", None)
        if queue_key is None or not steps:
            return {}
        out: dict[str, tuple[int, float | None]] = {}
        for queue in queues:
            keys = [queue_key(queue, step) for step in steps]
            pipe = self.store.client.pipeline(transaction=False)
            for key in keys:
                pipe.llen(key)
                pipe.lindex(key, -1)
            answers = pipe.execute()
            depth = sum(int(n) for n in answers[0::2])
            oldest: float | None = None
            for raw in answers[1::2]:
                instance = self._message_instance(raw)
                if instance is not None:
                    age = max(self.clock() - instance.updated_at, 0.0)
                    oldest = age if oldest is None else max(oldest, age)
            out[queue] = (depth, oldest)
        return out

    def _message_instance(self, raw: bytes | str | None) -> Instance | None:
        if not raw:
            return None
        try:
            body = json.loads(base64.b64decode(json.loads(raw)["body"]))
            return self.store.load(str(body[0][0]))
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def wait_for_run(self, run: str, timeout: float = 600, poll: float = 0.2,
                     on_progress: Callable[[RunProgress], None] | None = None) -> RunProgress:
        """Block until every instance of ``run`` is terminal (or ``timeout``); returns the last progress."""
        deadline = time.monotonic() + timeout
        while True:
            progress = self.progress(run)
            if on_progress:
                on_progress(progress)
            if progress.done or time.monotonic() > deadline:
                return progress
            time.sleep(poll)

    # -- operating ---------------------------------------------------------------------------

    def pause(self, instance_id: str, reason: str = "") -> Instance:
        """Stop at the next step boundary: a step in flight finishes and is recorded, nothing more is sent."""
        instance = self.get(instance_id)
        if instance.status not in {InstanceStatus.RUNNING, InstanceStatus.WAITING}:
            raise InvalidState(f"{instance_id} is {instance.status.value}; only running or waiting instances pause")
        self._control(instance, "pause", reason, (InstanceStatus.RUNNING, InstanceStatus.WAITING),
                      status=InstanceStatus.PAUSED, inflight=None)
        return self.get(instance_id)

    def resume(self, instance_id: str, reason: str = "") -> Instance:
        """Go on from the current node: re-send its step (or park its wait again)."""
        instance = self.get(instance_id)
        if instance.status is not InstanceStatus.PAUSED:
            raise InvalidState(f"{instance_id} is {instance.status.value}; only paused instances resume")
        self._restart_at(instance, "resume", reason, (InstanceStatus.PAUSED,), attempt=instance.attempt)
        return self.get(instance_id)

    def retry(self, instance_id: str, context: dict[str, Any] | None = None, reason: str = "") -> Instance:
        """Re-run the failed node, optionally with ``context`` entries replaced (node name -> data)."""
        instance = self.get(instance_id)
        if instance.status is not InstanceStatus.FAILED:
            raise InvalidState(f"{instance_id} is {instance.status.value}; only failed instances are retried")
        definition = self.store.definition(instance.workflow, instance.version)
        for node in context or {}:
            if node not in definition.nodes:
                raise InvalidState(f"context entry {node!r} names no node of {instance.workflow}")
        if context:
            pipe = self.store.client.pipeline(transaction=True)
            for node, data in context.items():
                pipe.hset(self.store.keys.instance(instance_id), f"c:{node}", pack(data))
            pipe.execute()
            instance = self.get(instance_id)
        self._restart_at(instance, "retry", reason, (InstanceStatus.FAILED,), attempt=1, edited=sorted(context or {}))
        return self.get(instance_id)

    def cancel(self, instance_id: str, reason: str = "") -> Instance:
        """End the instance as cancelled; a step in flight finishes but its result is ignored."""
        instance = self.get(instance_id)
        if instance.status in TERMINAL_STATUSES:
            raise InvalidState(f"{instance_id} is already {instance.status.value}")
        self._control(instance, "cancel", reason, LIVE_STATUSES, status=InstanceStatus.CANCELLED, inflight=False)
        return self.get(instance_id)

    def _control(self, instance: Instance, verb: str, reason: str, allowed: Iterable[InstanceStatus],
                 **fields: Any) -> None:
        applied = self.store.apply(instance.id, Update(
            allowed=tuple(s.value for s in allowed), expected_seq=instance.seq,
            activity=self._control_activity(instance, verb, reason), **fields,
        ))
        if not applied.applied:
            raise InvalidState(f"{instance.id} changed meanwhile (now {applied.status}); try again")

    def _control_activity(self, instance: Instance, verb: str, reason: str, **extra: Any) -> dict[str, Any]:
        now = self.clock()
        return {"seq": instance.seq, "node": instance.node, "attempt": instance.attempt,
                "outcome": Outcome.CONTROL.value, "control": verb, "reason": reason or None,
                "worker": worker_name(), "started_at": now, "ended_at": now, **extra}

    def _restart_at(self, instance: Instance, verb: str, reason: str, allowed: tuple[InstanceStatus, ...],
                    attempt: int, **extra: Any) -> None:
        definition = self.store.definition(instance.workflow, instance.version)
        node = definition.nodes[instance.node]
        now = self.clock()
        activity = self._control_activity(instance, verb, reason, **extra)
        common = {"allowed": tuple(s.value for s in allowed), "expected_seq": instance.seq,
                  "activity": activity, "clear_error": True}
        if isinstance(node, WaitNode):
            wake = instance.wake_at or wake_time(instance.node, node, self.runtime.scope(definition, instance))
            update = Update(**common, status=InstanceStatus.WAITING, timer=wake, timer_kind="wake", inflight=False)
            send = False
        elif isinstance(node, ServiceNode | HttpNode):
            # A step still in flight when a pause is lifted will advance by itself: do not send it twice.
            send = not (verb == "resume" and instance.inflight)
            update = Update(**common, status=InstanceStatus.RUNNING, attempt=attempt, inflight=True,
                            deadline=step_deadline(node, now))
        else:
            raise InvalidState(f"{instance.id} stopped at {instance.node!r}, which cannot be re-run")
        applied = self.runtime.transition(definition, instance.id, update,
                                          (instance.node, instance.seq, attempt) if send else None)
        if not applied.applied:
            raise InvalidState(f"{instance.id} changed meanwhile (now {applied.status}); try again")

    # -- bulk --------------------------------------------------------------------------------

    def bulk(self, verb: str, run: str, statuses: Iterable[InstanceStatus | str] | None = None,
             reason: str = "") -> BulkResult:
        """Apply ``verb`` (pause, resume, retry, cancel) to every instance of ``run`` in ``statuses``.

        Each instance is handled on its own: one that changed meanwhile is counted as skipped.
        """
        operation = {"pause": self.pause, "resume": self.resume, "retry": self.retry, "cancel": self.cancel}[verb]
        default = {"pause": [InstanceStatus.RUNNING, InstanceStatus.WAITING], "resume": [InstanceStatus.PAUSED],
                   "retry": [InstanceStatus.FAILED], "cancel": list(LIVE_STATUSES)}[verb]
        wanted = [InstanceStatus(s) for s in statuses] if statuses else default
        done, skipped = 0, 0
        for iid in self._ids(run, wanted):
            try:
                operation(iid, reason=reason)
                done += 1
            except (InvalidState, NotFound):
                skipped += 1
        return BulkResult(verb, done, skipped)

    def _ids(self, run: str, statuses: list[InstanceStatus]) -> Iterator[str]:
        for status in statuses:
            yield from list(self.store.iter_run_ids(run, status))


@dataclass(frozen=True)
class BulkResult:
    """How a bulk operation went."""

    verb: str
    done: int
    skipped: int


def instance_json(instance: Instance, activities: list[dict[str, Any]]) -> str:
    """The instance and its history as one JSON document (``inspect --json``, the archive)."""
    return json.dumps({"instance": instance.to_dict(), "activities": activities}, default=str)
