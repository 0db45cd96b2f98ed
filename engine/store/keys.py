"""Every Redis key the engine uses, built in one place.

Keys of one instance share a hash tag (``{<id>}``) so that they land in one slot.
The global indexes (timers, deadlines, run status sets) are single keys; the Lua script that
moves an instance between them is therefore single-node Redis only for now (see
docs/storage.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from engine.keyspace import KeySpace


@dataclass(frozen=True)
class Keys:
    """Key builders under one prefix (``wf`` by default; tests use their own). The global keys every
    state change names (timers, deadlines, queued, the runs' prefix) are built once per ``Keys``."""

    prefix: str = "wf"
    space: KeySpace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", KeySpace(f"{self.prefix}:"))

    def instance(self, instance_id: str) -> str:
        """Hash of one instance: status, node, seq, context entries ``c:<node>``..."""
        return self.space.key(f"{{{instance_id}}}")

    def activities(self, instance_id: str) -> str:
        """List of one instance's activity records (JSON), oldest first."""
        return self.space.key(f"{{{instance_id}}}", "acts")

    @cached_property
    def timers(self) -> str:
        """Sorted set: instance id scored by the time its wait or retry backoff ends."""
        return self.space.key("timers")

    @cached_property
    def deadlines(self) -> str:
        """Sorted set: instance id scored by the time its in-flight step must have progressed by."""
        return self.space.key("deadlines")

    @cached_property
    def queued(self) -> str:
        """Sorted set: instance id scored by when its step message was sent, until a worker starts it.

        A step in here has no deadline yet (a backlog is not a loss); the reconciliation in
        :meth:`engine.runtime.runner.Runtime.reconcile` looks for its message when it is old.
        """
        return f"{self.prefix}:queued"

    @property
    def reconcile_suspects(self) -> str:
        """Hash id -> "seq:attempt" of queued steps whose message the last reconciliation did not find."""
        return f"{self.prefix}:reconcile:suspects"

    @property
    def reconcile_lock(self) -> str:
        """Held (SET NX EX) by the process reconciling queued steps with the broker's lists."""
        return f"{self.prefix}:reconcile:lock"

    def alive(self, process: str) -> str:
        """A worker process's liveness mark (``host:pid``): set with a TTL of a few seconds, kept fresh
        while the process lives (see :mod:`engine.runtime.concerns.liveness`)."""
        return self.space.key("alive", process)

    @property
    def reconcile_full_lock(self) -> str:
        """Held (SET NX PX) for a while after the reconciliation read every message of the queues."""
        return f"{self.prefix}:reconcile:full"

    def run_prefix(self, run: str) -> str:
        """Prefix of a run's status sets: ``<prefix><status>`` holds the ids in that status.

        ``lua/state.lua`` builds the same names from :attr:`runs_prefix` and the instance's run.
        """
        return self.space.key("run", run, "")

    @cached_property
    def runs_prefix(self) -> str:
        """What every run's status sets start with (``lua/state.lua`` adds ``<run>:<status>``)."""
        return self.space.key("run", "")

    def run_status(self, run: str, status: str) -> str:
        """Set of the ids of ``run`` currently in ``status``."""
        return f"{self.run_prefix(run)}{status}"

    def run_meta(self, run: str) -> str:
        """Hash describing a run (created_at, workflow names, expected total)."""
        return self.space.key("run", run)

    @property
    def runs(self) -> str:
        """Sorted set of run labels scored by creation time."""
        return self.space.key("runs")

    def definition_versions(self, name: str) -> str:
        """Hash version -> definition JSON (immutable once written)."""
        return self.space.key("def", name, "versions")

    def definition_fingerprints(self, name: str) -> str:
        """Hash content fingerprint -> version (publishing the same content twice is a no-op)."""
        return self.space.key("def", name, "fingerprints")

    def aliases(self, name: str) -> str:
        """Hash alias -> version (``latest`` is kept by publish)."""
        return self.space.key("def", name, "aliases")

    @property
    def definition_names(self) -> str:
        """Set of every published definition name."""
        return self.space.key("defs")

    # -- batches of gather nodes ---------------------------------------------------------------

    @property
    def batch_prefix(self) -> str:
        """Prefix of a batch's keys: ``<prefix><id>`` is its hash; ``:members``, ``:inputs``, ``:runs``, ``:acts``."""
        return f"{self.prefix}:batch:"

    def batch(self, batch_id: str) -> str:
        """Hash of one batch: group, node, status (open, closed, applied), times, attempt, answer."""
        return f"{self.batch_prefix}{batch_id}"

    def batch_members(self, batch_id: str) -> str:
        """List of a batch's member instance ids, in order of arrival."""
        return f"{self.batch(batch_id)}:members"

    def batch_inputs(self, batch_id: str) -> str:
        """Hash of a batch's contributions: instance id -> {seq, input} (JSON)."""
        return f"{self.batch(batch_id)}:inputs"

    def batch_runs(self, batch_id: str) -> str:
        """Set of the runs of a batch's members (whose live instances could still arrive)."""
        return f"{self.batch(batch_id)}:runs"

    def batch_activities(self, batch_id: str) -> str:
        """List of a batch's records: opened, closed, each batch step attempt, applied."""
        return f"{self.batch(batch_id)}:acts"

    @property
    def gathers(self) -> str:
        """Hash: batch name -> the id of its latest batch (``<name>#<generation>``)."""
        return f"{self.prefix}:gathers"

    @property
    def batches(self) -> str:
        """Sorted set of every batch id by the time it opened (expired batches trimmed: ``trim_batch_index``)."""
        return f"{self.prefix}:batches"

    @property
    def batches_open(self) -> str:
        """Sorted set: open batch id by the time it closes."""
        return f"{self.prefix}:batches:open"

    @property
    def batches_due(self) -> str:
        """Sorted set: closed, unapplied batch id by when its step is (re)sent: a backoff's end or a deadline."""
        return f"{self.prefix}:batches:due"

    @property
    def audit(self) -> str:
        """Stream of audit events (who signalled, operated, logged in), trimmed to the retention."""
        return self.space.key("audit")

    def metrics(self, name: str) -> str:
        """Hash of flushed step metrics (``steps``, ``step_seconds``: see :mod:`engine.metrics`)."""
        return self.space.key(f"metrics:{name}")

    @property
    def housekeeping_lock(self) -> str:
        """Held (SET NX PX) for a minute by the sweeper that last trimmed the indexes (``store/housekeeping.py``)."""
        return f"{self.prefix}:housekeeping"

    @property
    def epoch(self) -> str:
        """Sentinel written once per Redis data set; its loss means Redis restarted empty."""
        return self.space.key("epoch")

    @property
    def limits_prefix(self) -> str:
        """Prefix of the shared rate and concurrency limits' keys (``lua/limits.lua`` lists them)."""
        return self.space.key("limit", "")

    def run_limited(self, run: str) -> str:
        """Hash of a run: limit reason (``rate: brokerage``) -> how many of its instances it parks now."""
        return f"{self.run_prefix(run)}limited"
