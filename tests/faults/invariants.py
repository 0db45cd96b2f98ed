"""The invariant checker of the fault scenarios and the chaos soak.

After any fault: every instance is terminal; each step sequence number of an instance has
exactly one transition (an ``applied`` step, a ``woke`` wait, a ``signalled`` or ``timed_out``
await, a signal ``counted`` toward an await's quorum, a ``gathered`` member of an applied batch)
in its history; every no-op
counted on the instance is recorded as a ``noop`` activity; the run's status sets (its
counters) hold each instance exactly once, in its own status; nothing finished is left in
the timer or deadline indexes. :func:`check_invariants` asserts all of it and returns the
figures worth recording (applied, no-ops, retries, sweeper re-sends...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.instance import Instance, InstanceStatus, Outcome
from engine.store.redis_store import RedisStore, decode_activities, decode_instance_hash

TRANSITIONS = {Outcome.APPLIED.value, Outcome.WOKE.value, Outcome.SIGNALLED.value, Outcome.TIMED_OUT.value,
               Outcome.GATHERED.value, Outcome.COUNTED.value}


@dataclass
class Figures:
    """What the histories of a set of instances show."""

    instances: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    sweeper_resends: int = 0
    #: Re-sends of started steps whose worker process's liveness mark lapsed.
    liveness_resends: int = 0

    @property
    def applied(self) -> int:
        """Applied step transitions."""
        return self.outcomes[Outcome.APPLIED.value]

    @property
    def noops(self) -> int:
        """Duplicate or stale deliveries recorded as no-ops."""
        return self.outcomes[Outcome.NOOP.value]

    def line(self) -> str:
        """One line for the test output and RELIABILITY.md."""
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        return (f"instances {self.instances} ({statuses}); applied {self.applied}; no-ops {self.noops}; "
                f"retries {self.outcomes[Outcome.RETRY.value]} (sweeper re-sends {self.sweeper_resends}, "
                f"worker lost {self.liveness_resends}); "
                f"woke {self.outcomes[Outcome.WOKE.value]}")


def history_problems(instance: Instance, activities: list[dict[str, Any]]) -> list[str]:
    """What is wrong with one instance's history (empty when nothing is)."""
    problems = []
    if not instance.status.is_terminal:
        problems.append(f"{instance.id}: not terminal ({instance.status.value} at {instance.node})")
    seqs = Counter(a["seq"] for a in activities if a["outcome"] in TRANSITIONS)
    expected = Counter(range(1, instance.seq))
    if seqs != expected:
        twice = sorted(s for s, n in seqs.items() if n > 1)
        missing = sorted(set(expected) - set(seqs))
        extra = sorted(set(seqs) - set(expected))
        problems.append(f"{instance.id}: transitions per seq wrong (applied twice: {twice}, missing: {missing}, "
                        f"beyond seq {instance.seq}: {extra})")
    noops = sum(a["outcome"] == Outcome.NOOP.value for a in activities)
    if noops != instance.noops:
        problems.append(f"{instance.id}: {instance.noops} no-ops counted but {noops} recorded")
    if sum(a["outcome"] == Outcome.STARTED.value for a in activities) != 1:
        problems.append(f"{instance.id}: not exactly one 'started' record")
    return problems


def index_problems(store: RedisStore, instances: list[Instance], run: str | None) -> list[str]:
    """Run counters against the instances' statuses; finished instances out of the indexes."""
    problems = []
    if run is not None:
        mine = {i.id for i in instances}
        counted = Counter()
        for status in InstanceStatus:
            members = set(store.run_ids(run, [status]))
            wrong = sorted(i.id for i in instances if (i.id in members) != (i.status is status))
            if wrong:
                problems.append(f"run {run}: status set {status.value} disagrees for {wrong[:5]}")
            counted.update({status.value: len(members & mine)})
        if set(store.run_ids(run)) != mine:
            problems.append(f"run {run}: its status sets hold other ids than its instances")
        actual = Counter(i.status.value for i in instances)
        if +counted != +actual or +Counter(store.run_counts(run)) != actual:
            problems.append(f"run {run}: counters {store.run_counts(run)} != statuses {dict(actual)}")
    finished = [i.id for i in instances if i.status.is_terminal]
    for key in (store.keys.timers, store.keys.deadlines):
        pipe = store.client.pipeline(transaction=False)
        for iid in finished:
            pipe.zscore(key, iid)
        left = [iid for iid, score in zip(finished, pipe.execute(), strict=True) if score is not None]
        if left:
            problems.append(f"finished instances still in {key}: {left[:5]}")
    return problems


def read_histories(store: RedisStore, ids: list[str]) -> list[tuple[Instance, list[dict[str, Any]]]]:
    """Each existing instance with its activities, both read in one transaction (a late no-op
    landing between two separate reads would look like a counter out of step)."""
    pipe = store.client.pipeline(transaction=True)
    for iid in ids:
        pipe.hgetall(store.keys.instance(iid))
        pipe.lrange(store.keys.activities(iid), 0, -1)
    flat = pipe.execute()
    out = []
    for raw, acts in zip(flat[::2], flat[1::2], strict=True):
        if raw:
            out.append((Instance.from_hash(decode_instance_hash(raw)), decode_activities(acts)))
    return out


def check_invariants(store: RedisStore, ids: Iterable[str], run: str | None = None,
                     expect: InstanceStatus | None = InstanceStatus.SUCCEEDED) -> Figures:
    """Assert the invariants over ``ids`` (and ``run``'s counters); return their figures.

    ``expect``: the status every instance must end in (None: any terminal status).
    """
    ids = list(ids)
    histories = read_histories(store, ids)
    instances = [instance for instance, _ in histories]
    problems = [f"instance {iid} is gone" for iid in sorted(set(ids) - {i.id for i in instances})]
    figures = Figures(instances=len(instances))
    for instance, activities in histories:
        problems.extend(history_problems(instance, activities))
        if expect is not None and instance.status is not expect:
            problems.append(f"{instance.id}: {instance.status.value}, expected {expect.value} "
                            f"(error: {instance.error})")
        figures.statuses[instance.status.value] += 1
        figures.outcomes.update(a["outcome"] for a in activities)
        figures.sweeper_resends += sum(str(a.get("error", "")).startswith("timeout:") for a in activities
                                       if a["outcome"] == Outcome.RETRY.value)
        figures.liveness_resends += sum(str(a.get("error", "")).startswith("worker lost:") for a in activities
                                        if a["outcome"] == Outcome.RETRY.value)
    problems.extend(index_problems(store, instances, run))
    assert not problems, "invariants broken:\n" + "\n".join(problems[:40])
    return figures
