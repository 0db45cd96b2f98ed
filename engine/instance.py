"""The state model: instance status, the instance as stored, and activity records."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.jsoncodec import dumps, loads


class InstanceStatus(StrEnum):
    """Where an instance is in its life."""

    RUNNING = "running"
    WAITING = "waiting"
    #: Parked at an ``await`` node until a signal (a person, another system) or its timeout.
    AWAITING = "awaiting"
    #: Parked at a ``gather`` node: its contribution is in a batch, which has not been applied yet.
    GATHERING = "gathering"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for succeeded, failed and cancelled."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({InstanceStatus.SUCCEEDED, InstanceStatus.FAILED, InstanceStatus.CANCELLED})
LIVE_STATUSES = frozenset(set(InstanceStatus) - TERMINAL_STATUSES)


class Outcome(StrEnum):
    """What an activity record says happened."""

    APPLIED = "applied"  # the step's transition moved the instance on
    NOOP = "noop"  # a duplicate or stale delivery; nothing changed
    RETRY = "retry"  # the attempt failed and another is scheduled
    FAILED = "failed"  # the step failed the instance
    SKIPPED = "skipped"  # not run: the instance was paused or cancelled meanwhile
    CONTROL = "control"  # an operator's pause/resume/retry/cancel
    STARTED = "started"  # the instance was created
    WOKE = "woke"  # a wait ended
    SIGNALLED = "signalled"  # a signal moved an awaiting instance on
    TIMED_OUT = "timed_out"  # an await's timeout passed before any signal
    GATHERED = "gathered"  # the instance's batch was applied: its own transition moved it on
    COUNTED = "counted"  # a signal counted toward its await's quorum; the instance awaits more
    LIMITED = "limited"  # not run: over its node's rate or concurrency limit; the instance waits for it
    REFUSED = "refused"  # a signal refused (role, required data, quorum, timeout, not awaited); nothing changed


@dataclass(frozen=True)
class Activity:
    """One activity record: what happened to one step attempt, no-op, start, wake or operator action.

    Written by the store as compact JSON (absent fields left out); read back as plain dicts.
    """

    seq: int
    node: str
    attempt: int
    outcome: Outcome
    worker: str
    started_at: float
    ended_at: float
    transition: str | None = None
    service: str | None = None
    action: str | None = None
    url: str | None = None
    sent: Any = None
    received: Any = None
    next: str | None = None
    via: list[str] | None = None
    error: str | None = None
    retry_in: float | None = None
    reason: str | None = None
    trace: str | None = None
    #: An operator's verb (pause, resume, retry, cancel) and the context entries a retry edited.
    control: str | None = None
    edited: list[str] | None = None
    #: A signal's name, its sender (a principal's name and roles) and its idempotency key;
    #: where a quorum stands after it ("1 of 2"); an await timeout's due time.
    signal: str | None = None
    by: str | None = None
    roles: list[str] | None = None
    key: str | None = None
    quorum: str | None = None
    timeout_at: float | None = None
    #: The batch a gather node put the instance in (arrival) or moved it on with (applied).
    batch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as stored: a JSON-able dict without its absent fields."""
        # A shallow read: the values are JSON data already, and a record can carry a whole plan
        # (``received``), which ``dataclasses.asdict`` would deep-copy on every step.
        # Its fields in their order, as ``__init__`` set them (a frozen record has no others).
        out = {name: value for name, value in self.__dict__.items() if value is not None}
        out["outcome"] = self.outcome.value
        return out

    def to_json(self) -> str:
        """The record as compact JSON."""
        return dumps(self.to_dict())


@dataclass
class Instance:
    """One execution of a definition version, as read from the store."""

    id: str
    workflow: str
    version: int
    run: str
    status: InstanceStatus
    node: str
    seq: int
    attempt: int
    data: dict[str, Any]
    context: dict[str, Any]
    created_at: float
    updated_at: float
    finished_at: float | None = None
    inflight: bool = False
    error: dict[str, Any] | None = None
    result: Any = None
    wake_at: float | None = None
    timer: str | None = None
    noops: int = 0
    #: The step message whose worker is running this instance's steps inline, if any.
    carrier: str | None = None
    #: The batch an instance gathering at a ``gather`` node belongs to.
    batch: str | None = None
    #: The quorum counted at the await node the instance is at (:mod:`engine.runtime.signals`):
    #: ``{"node", "signal", "count", "principals": [{"name", "roles", "at"}...]}``, written by the engine only.
    quorum: dict[str, Any] | None = None
    #: A shadow instance: it stops at its definition's shadow stops, before any external effect.
    shadow: bool = False
    #: Waiting for a limit: which (``rate: brokerage``, ``concurrency: household-42``).
    waiting_for: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: dict[str, Any]) -> Instance:
        """Build from the stored hash (field values are strings; its JSON documents text or UTF-8 bytes)."""
        context = {k[2:]: loads(v) for k, v in raw.items() if k.startswith("c:")}
        return cls(
            id=raw["id"],
            workflow=raw["workflow"],
            version=int(raw["version"]),
            run=raw["run"],
            status=InstanceStatus(raw["status"]),
            node=raw["node"],
            seq=int(raw["seq"]),
            attempt=int(raw.get("attempt", 1)),
            data=loads(raw.get("data", "{}")),
            context=context,
            created_at=float(raw["created_at"]),
            updated_at=float(raw.get("updated_at", raw["created_at"])),
            finished_at=float(raw["finished_at"]) if raw.get("finished_at") else None,
            inflight=raw.get("inflight") == "1",
            error=loads(raw["error"]) if raw.get("error") else None,
            result=loads(raw["result"]) if raw.get("result") else None,
            wake_at=float(raw["wake_at"]) if raw.get("wake_at") else None,
            timer=raw.get("timer") or None,
            noops=int(raw.get("noops", 0)),
            carrier=raw.get("carrier") or None,
            batch=raw.get("batch") or None,
            quorum=loads(raw["quorum"]) if raw.get("quorum") else None,
            shadow=raw.get("shadow") == "1",
            waiting_for=raw.get("waiting_for") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (for ``inspect --json`` and the archive)."""
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out["status"] = self.status.value
        return out
