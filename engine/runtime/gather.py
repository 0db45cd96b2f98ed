"""Gather nodes: many instances meet at one step, each goes on with its own answer.

An instance that reaches a ``gather`` node contributes its ``input`` to the batch its ``group``
names and waits (status ``gathering``); it joins the batch in the same atomic update as the step
that brought it there (``lua/state.lua``). A batch (``lua/batch.lua``, :mod:`engine.store.batches`)
goes ``open -> closed -> applied``:

- **close**, once: by the timers (:meth:`Gatherer.tick`) at its close time -- the earliest
  ``close`` of its members -- or earlier, when the node has ``close_early`` and no instance of
  its members' runs is live anywhere but at a gather node (pending, running, waiting,
  awaiting or paused ones could still arrive; finished, failed and gathering ones cannot).
  Checked atomically by the close itself: at each arrival that leaves nothing of its run
  behind, and at every tick.
- **the batch step**: closing pushes ONE message on the node's service queue (task
  ``<service>.gather:batch``). The worker calls the action with every contribution
  (:func:`batch_payload`); its answer -- a transition and data per member -- is kept on the
  batch once (the first answer wins), then each member advances with its own transition (its
  own compare-and-set at its seq), and the batch becomes ``applied``.
- **guarantees**: an exception is retried per the node's ``retry`` (backoff through the
  batch's due time); a lost message or a dead worker is found by the timers when the step's
  deadline (``timeout_seconds`` from its start) passes, and the step is sent again. A closed
  batch whose answer is kept is applied again (applied members are stale no-ops), never
  asked again. An answer naming an unknown transition, or no answer for a member, fails that
  member only; ``ActionFailed`` or the last attempt's exception fails every member.
- **late**: an instance reaching the node after its group's batch closed takes ``late`` when
  the node has it (decided as it arrives), else it opens the group's next batch (``#2``...).
- **limits**: a node's ``limits.rate`` is taken when the batch step starts, before the action is
  asked (:meth:`Gatherer._over_limit`): its ``key`` and ``cost`` are evaluated once for the batch
  (:func:`batch_scope`), and a batch over the limit parks -- it stays ``closed`` with due kind
  ``limit`` and a due time when a call will be free, no worker held -- and the timers send its
  step again then (same attempt: it never ran). The bucket, the line and the parked batch are
  all in Redis, so a restarted worker or Redis (with its persistence) loses none of it.

The action is called more than once for a batch only when a delivery is duplicated or a
worker dies before its answer is kept: make its side effects idempotent on the batch id.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from engine.broker import PRIORITY_CONTINUE, StepMessage
from engine.definitions.nodes import Definition, GatherNode, RecordLevel
from engine.errors import ActionFailed, ExpressionError, MalformedAnswer, StepFailed
from engine.expressions.cel import Scope
from engine.instance import Instance, InstanceStatus, Outcome
from engine.runtime.concerns.limits import rate_call

# arrival_document is defined in outcomes (where arrivals are decided); named here too for the API.
from engine.runtime.outcomes import (
    NextKind,
    StepOutcomes,
    lost_step_attempts,
    step_deadline,
    target_of,
    worker_name,
)
from engine.runtime.outcomes import arrival_document as arrival_document
from engine.service import as_transition
from engine.store.batches import Batch

log = logging.getLogger(__name__)

#: The batch step's task of a service: ``<service>.gather:batch`` (no action name has a colon).
BATCH_TASK_SUFFIX = "gather:batch"
GATHERING = (InstanceStatus.GATHERING,)

#: Calls a gather node's action with the batch payload; returns what the action returned.
ExecuteBatch = Callable[[GatherNode, dict[str, Any]], Any]
#: The batch's ``due_kind`` while its step waits for its node's rate limit.
LIMIT_DUE = "limit"
#: Due kinds whose due time sends the same attempt again (a backoff ended, a call is free).
_RESEND_SAME = frozenset({"retry", LIMIT_DUE})


def batch_task(service: str) -> str:
    """The Celery task that runs the batch steps of ``service``'s gather nodes."""
    return f"{service}.{BATCH_TASK_SUFFIX}"


def batch_message(batch: Batch, attempt: int) -> StepMessage:
    """The message that runs attempt ``attempt`` of ``batch``'s step (args: batch id, node, 0, attempt)."""
    return StepMessage(batch_task(batch.service), batch.service, batch.id, batch.node, 0, attempt)


def batch_payload(batch: Batch, attempt: int, members: list[tuple[str, Any]]) -> dict[str, Any]:
    """What a gather node's action receives: the batch, and each member's instance id and input."""
    return {"batch": {"id": batch.id, "name": batch.name, "group": batch.group, "node": batch.node,
                      "attempt": attempt},
            "members": [{"instance": iid, "input": contribution} for iid, contribution in members]}


def batch_scope(definition: Definition, batch: Batch, members: list[tuple[str, Any]], now: float) -> Scope:
    """What a gather node's limit expressions see: ``params``, and ``data.members`` (the
    contributions, in order of arrival) and ``data.batch`` (``id``, ``name``, ``group``, ``size``)."""
    return Scope(data={"members": [contribution for _, contribution in members],
                       "batch": {"id": batch.id, "name": batch.name, "group": batch.group, "size": len(members)}},
                 params=definition.parameters, now=datetime.fromtimestamp(now, UTC))


def member_answers(raw: Any, member_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Normalise an action's answer: instance id -> ``{"transition", "data"}`` or ``{"error"}`` per member.

    A member's answer is what a service action may return (a Transition, a name, (name, data),
    ``{"transition", "data"}``), or an exception instance (``ActionFailed(...)``) that fails that member.
    """
    if not isinstance(raw, Mapping):
        raise MalformedAnswer("a gather action must return a mapping of instance id -> answer, "
                              f"got {type(raw).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for iid in member_ids:
        if iid not in raw:
            out[iid] = {"error": "the batch action gave no answer for this member"}
            continue
        if isinstance(raw[iid], Exception):  # e.g. ActionFailed("..."): this member fails, the others go on
            out[iid] = {"error": str(raw[iid]), "type": type(raw[iid]).__name__}
            continue
        try:
            transition = as_transition(raw[iid])
        except MalformedAnswer as exc:
            out[iid] = {"error": f"malformed answer for this member: {exc}"}
            continue
        out[iid] = {"transition": transition.name, "data": dict(transition.data)}
    return out


class Gatherer:
    """The batches of one runtime: closing them, running their step, applying their answer."""

    def __init__(self, runtime: StepOutcomes) -> None:
        self.runtime = runtime
        self.store = runtime.store

    def _record(self, event: str, started: float, **fields: Any) -> dict[str, Any]:
        out = {"event": event, "worker": worker_name(), "started_at": started, "ended_at": self.runtime.clock()}
        out.update({k: v for k, v in fields.items() if v is not None})
        return out

    def _node(self, batch: Batch) -> tuple[Definition, GatherNode]:
        definition = self.store.definition(batch.workflow, batch.version)
        node = definition.nodes[batch.node]
        assert isinstance(node, GatherNode)
        return definition, node

    # -- closing ------------------------------------------------------------------------------

    def close(self, batch_id: str, reason: str, early: bool) -> bool:
        """Close ``batch_id`` (with ``early``: only if nothing could still arrive) and send its step."""
        batch = self.store.load_batch(batch_id)
        if batch is None or batch.status != "open":
            return False
        _definition, node = self._node(batch)
        now = self.runtime.clock()
        message = batch_message(batch, 1)
        envelope = self.runtime.enqueuer.envelope(message, PRIORITY_CONTINUE)
        change = self.store.close_batch(batch_id, due=step_deadline(node, now), reason=reason, early=early,
                                        record=self._record("closed", now, reason=reason, members=batch.members),
                                        send=envelope)
        if change.done and envelope is None:
            self.runtime.enqueuer.enqueue(message, PRIORITY_CONTINUE)
        return change.done

    def arrived(self, batch_id: str) -> None:
        """An arrival left nothing of its run that could still arrive: close early if the node allows it."""
        batch = self.store.load_batch(batch_id)
        if batch is not None and batch.status == "open" and batch.close_early:
            self.close(batch_id, "early: no other instance of its runs could still arrive", early=True)

    def tick(self, now: float) -> int:
        """Close the batches due (or complete, with ``close_early``); re-send batch steps that are due."""
        moved = 0
        for batch_id, close_at in self.store.open_batches():
            if close_at <= now:
                moved += self.close(batch_id, "time", early=False)
            else:
                batch = self.store.load_batch(batch_id)
                if batch is not None and batch.close_early:
                    moved += self.close(batch_id, "early: no other instance of its runs could still arrive",
                                        early=True)
        for batch_id in self.store.due_batches(now):
            moved += self._due(batch_id, now)
        return moved

    def _due(self, batch_id: str, now: float) -> int:
        """A closed batch's step is due: its backoff ended, or its deadline passed (lost or hung)."""
        batch = self.store.load_batch(batch_id)
        if batch is None or batch.status != "closed":
            return 0
        _definition, node = self._node(batch)
        if batch.due_kind in _RESEND_SAME:
            attempt, event, error = batch.attempt, "resent", None
        else:
            limit = lost_step_attempts(node)
            error = f"timeout: no progress within {node.timeout_seconds:g}s (lost message, dead worker or hung step)"
            if batch.answer is None and batch.attempt >= limit:
                answer = {"error": f"{error}; gave up after {batch.attempt} attempts", "type": "Timeout"}
                kept = self.store.batch_answer(batch_id, answer, self._record("failed", now, error=answer["error"]))
                if kept.done and kept.answer is not None:
                    self._apply(batch, kept.answer, now)
                return 1
            attempt, event = batch.attempt + 1, "timeout"
        message = batch_message(batch, attempt)
        envelope = self.runtime.enqueuer.envelope(message, PRIORITY_CONTINUE)
        change = self.store.batch_resend(batch_id, attempt=batch.attempt, next_attempt=attempt, now=now,
                                         due=step_deadline(node, now),
                                         record=self._record(event, now, attempt=attempt, error=error),
                                         send=envelope)
        if change.done and envelope is None:
            self.runtime.enqueuer.enqueue(message, PRIORITY_CONTINUE)
        return int(change.done)

    # -- the batch step -----------------------------------------------------------------------

    def run_batch(self, batch_id: str, attempt: int, execute: ExecuteBatch) -> str:
        """Run one delivered batch step message: ask the action (unless answered), apply, mark applied."""
        started = self.runtime.clock()
        batch = self.store.load_batch(batch_id)
        if batch is None:
            self.runtime.check_data_set()
            log.warning("batch step for unknown batch %s dropped (expired or never opened)", batch_id)
            return "missing"
        if batch.status != "closed" or batch.attempt != attempt:
            self.store.batch_note(batch_id, self._record(
                "noop", started, attempt=attempt,
                reason=f"stale delivery: batch is {batch.status} at attempt {batch.attempt}"))
            return str(Outcome.NOOP)
        definition, node = self._node(batch)
        answer = batch.answer
        if answer is None:
            members = self._members(batch_id)
            held = self._over_limit(batch, definition, node, attempt, started, members)
            if held is not None:
                return held
            self.store.batch_started(batch_id, attempt=attempt, due=step_deadline(node, started))
            try:
                raw = execute(node, batch_payload(batch, attempt, members))
                answer = {"members": member_answers(raw, [iid for iid, _ in members])}
            except ActionFailed as exc:
                answer = {"error": str(exc), "type": type(exc).__name__}
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if attempt < node.retry.max_attempts:
                    delay = node.retry.delay(attempt)
                    log.info("batch %s attempt %s raised %r; retry in %.1fs", batch_id, attempt, exc, delay)
                    self.store.batch_retry(batch_id, attempt=attempt, next_attempt=attempt + 1,
                                           due=self.runtime.clock() + delay,
                                           record=self._record("retry", started, attempt=attempt, error=reason,
                                                               retry_in=delay))
                    return str(Outcome.RETRY)
                answer = {"error": f"{reason} (after {attempt} attempt{'s' if attempt > 1 else ''})",
                          "type": type(exc).__name__, "trace": traceback.format_exc(limit=5)}
            kept = self.store.batch_answer(batch_id, answer, self._record(
                "answered" if "members" in answer else "failed", started, attempt=attempt,
                members=len(members), error=answer.get("error"), transitions=_counts(answer)))
            if not kept.done or kept.answer is None:
                return str(Outcome.NOOP)
            answer = kept.answer
        self._apply(batch, answer, started, definition)
        return str(Outcome.APPLIED)

    def _over_limit(self, batch: Batch, definition: Definition, node: GatherNode, attempt: int, started: float,
                    members: list[tuple[str, Any]]) -> str | None:
        """Take the batch step's calls of its node's rate limit; None when it may go.

        Over the limit, the batch parks (due kind ``limit``, due when a call is free) and the
        outcome is ``limited``; a ``key`` or ``cost`` that fails to evaluate fails every member.
        """
        rate = node.limits.rate if node.limits is not None else None
        if rate is None:
            return None
        try:
            key, cost = rate_call(rate, batch_scope(definition, batch, members, started))
        except ExpressionError as exc:
            answer = {"error": f"limits: {exc}", "type": "ExpressionError"}
            kept = self.store.batch_answer(batch.id, answer, self._record("failed", started, attempt=attempt,
                                                                           error=answer["error"]))
            if not kept.done or kept.answer is None:
                return str(Outcome.NOOP)
            self._apply(batch, kept.answer, started, definition)
            return str(Outcome.APPLIED)
        verdict = self.store.limit_rate(key, batch.id, rate.per_second, rate.capacity, cost)
        if verdict.ok:
            return None
        wait = verdict.wait_seconds
        change = self.store.batch_retry(batch.id, attempt=attempt, next_attempt=attempt,
                                        due=self.runtime.clock() + wait, kind=LIMIT_DUE, reason=f"rate: {key}",
                                        record=self._record("limited", started, attempt=attempt,
                                                            reason=f"rate: {key}", cost=int(cost),
                                                            retry_in=round(wait, 3)))
        if not change.done:  # another delivery moved the batch on: it no longer waits in the line
            self.store.limit_leave("rate", key, batch.id)
            return str(Outcome.NOOP)
        log.info("batch %s over rate limit %r: parked for %.3fs", batch.id, key, wait)
        return str(Outcome.LIMITED)

    def parked_members(self, run: str) -> dict[str, int]:
        """How many members of ``run`` wait in a batch whose step is parked by a limit (reason -> count)."""
        counts: dict[str, int] = {}
        for batch in self.store.parked_batches():
            if run not in self.store.batch_runs(batch.id):
                continue
            ids = [iid for iid, _ in self.store.batch_contributions(batch.id)]
            mine = sum(1 for i in self.store.load_many(ids) if i.run == run and i.status is InstanceStatus.GATHERING)
            if mine and batch.waiting_for:
                counts[batch.waiting_for] = counts.get(batch.waiting_for, 0) + mine
        return counts

    def _members(self, batch_id: str) -> list[tuple[str, Any]]:
        """The contributions of members still gathering in the batch (a cancelled one has withdrawn)."""
        contributions = self.store.batch_contributions(batch_id)
        here = {i.id for i in self.store.load_many([iid for iid, _ in contributions])
                if i.status is InstanceStatus.GATHERING and i.batch == batch_id}
        return [(iid, value) for iid, value in contributions if iid in here]

    # -- applying -----------------------------------------------------------------------------

    def _apply(self, batch: Batch, answer: dict[str, Any], started: float,
               definition: Definition | None = None) -> None:
        """Move every member still gathering in ``batch`` on with its own answer; then the batch is applied."""
        ids = [iid for iid, _ in self.store.batch_contributions(batch.id)]
        answers: dict[str, Any] = answer.get("members") or {}
        _definition, node = self._node(batch)
        moved = failed = 0
        for start in range(0, len(ids), 500):
            if start:  # a big batch is still making progress: its deadline moves on (no re-send meanwhile)
                self.store.batch_started(batch.id, attempt=batch.attempt, due=step_deadline(node, self.runtime.clock()))
            for instance in self.store.load_many(ids[start:start + 500]):
                if instance.status is not InstanceStatus.GATHERING or instance.batch != batch.id:
                    continue
                mine = answers.get(instance.id) if "members" in answer else {"error": answer.get("error"),
                                                                             "type": answer.get("type")}
                if mine is None:
                    mine = {"error": "joined after the batch step was asked (not in its answer)"}
                ok = self._apply_member(instance, batch, mine, started)
                moved, failed = moved + ok, failed + (not ok)
        self.store.batch_applied(batch.id, self._record("applied", started, moved=moved, failed=failed),
                                 ttl=self.store.retention_for(batch.workflow, batch.version))

    def _apply_member(self, instance: Instance, batch: Batch, mine: dict[str, Any], started: float) -> bool:
        runtime = self.runtime
        definition = self.store.definition(instance.workflow, instance.version)
        node = definition.nodes[instance.node]
        if "error" in mine:
            runtime.fail(instance, definition, instance.node, instance.seq, instance.attempt, started,
                          f"batch {batch.id}: {mine['error']}", mine.get("type") or "BatchFailed",
                          statuses=GATHERING)
            return False
        level = definition.record_level(instance.node)
        data = dict(mine.get("data") or {})
        received = data if level is not RecordLevel.METADATA else None
        context = {**instance.context, instance.node: data}
        try:
            nxt = runtime.resolve(definition, target_of(definition, instance.node, mine["transition"]),
                                  runtime.scope(definition, instance, context))
        except StepFailed as exc:
            runtime.fail(instance, definition, instance.node, instance.seq, instance.attempt, started,
                          f"batch {batch.id}: {exc}", "StepFailed", transition=mine["transition"],
                          received=received, statuses=GATHERING)
            return False
        now = runtime.clock()
        activity = runtime.activity(instance.node, instance.seq, instance.attempt, started, Outcome.GATHERED,
                                     transition=mine["transition"], service=getattr(node, "service", None),
                                     action=getattr(node, "action", None), received=received, batch=batch.id,
                                     next=nxt.node, via=list(nxt.via) or None)
        placement = runtime.placement(definition, nxt, now)
        applied = runtime.apply_change(definition, instance.id, lambda send, clear: self.store.advance(
            instance.id, seq=instance.seq, statuses=GATHERING, activity=activity, placement=placement,
            context=(instance.node, data), carrier=clear, send=send),
            (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None)
        return applied.applied


def _counts(answer: dict[str, Any]) -> dict[str, int] | None:
    """How many members got each transition (or an error), for the batch's record."""
    if "members" not in answer:
        return None
    out: dict[str, int] = {}
    for mine in answer["members"].values():
        key = mine.get("transition") or "error"
        out[key] = out.get(key, 0) + 1
    return out
