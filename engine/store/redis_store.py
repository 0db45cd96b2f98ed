"""The Redis store: definitions, instances, activities, timers, runs.

Every state change of an instance goes through one Lua script (``lua/apply.lua``): a
compare-and-set on the instance's step sequence (and, where it matters, its attempt and
status) that records the activity, merges the step's data into the context, moves the
instance on and keeps the indexes (run status sets, timers, deadlines) in step, atomically.
A redelivered or duplicated message fails the compare-and-set and is recorded as a no-op.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from engine.definitions.model import Definition
from engine.errors import DataSetLost, NotFound, TradeflowError
from engine.model import Instance, InstanceStatus
from engine.runtime.messages import Envelope
from engine.store.keys import Keys

DEFAULT_RETENTION_SECONDS = 14 * 24 * 3600


def _lua(name: str) -> str:
    return (Path(__file__).parent / "lua" / name).read_text()


def dumps(value: Any) -> str:
    """Compact JSON, the only serialisation the store uses."""
    return json.dumps(value, separators=(",", ":"), default=str)


#: JSON documents longer than this are stored zlib-compressed (holdings, proposals, activity records).
COMPRESS_OVER = 256
#: Hash fields that hold JSON documents (besides the context entries ``c:<node>``).
JSON_FIELDS = frozenset({"data", "result", "error"})


def pack(value: Any) -> str | bytes:
    """``value`` as stored: compact JSON, zlib-compressed when long.

    A zlib stream starts with byte 0x78 ("x"), which no JSON text starts with, so
    :func:`unpack` tells the two apart without a marker.
    """
    text = dumps(value)
    return zlib.compress(text.encode(), 1) if len(text) > COMPRESS_OVER else text


def unpack(raw: bytes | str) -> str:
    """The JSON text of a stored document (compressed or not)."""
    if isinstance(raw, str):
        return raw
    return zlib.decompress(raw).decode() if raw[:1] == b"x" else raw.decode()


def decode_instance_hash(raw: dict[Any, Any]) -> dict[str, str]:
    """An instance hash as read from Redis, with its JSON documents unpacked."""
    out = {}
    for key, value in raw.items():
        name = _s(key)
        out[name] = unpack(value) if name in JSON_FIELDS or name.startswith("c:") else _s(value)
    return out


def decode_activities(raw: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """Activity records as read from Redis."""
    return [json.loads(unpack(record)) for record in raw]


@dataclass
class Update:
    """One atomic change of an instance, applied only if its expectations hold."""

    allowed: Sequence[str]
    expected_seq: int | None = None
    expected_attempt: int | None = None
    activity: dict[str, Any] | None = None
    noop_activity: dict[str, Any] | None = None
    context_node: str | None = None
    context_data: Any = None
    node: str | None = None
    bump_seq: bool = False
    attempt: int | None = None
    status: InstanceStatus | None = None
    deadline: float | None = None
    timer: float | None = None
    timer_kind: str = ""
    result: Any = None
    error: dict[str, Any] | None = None
    clear_error: bool = False
    respect_pause: bool = False
    inflight: bool | None = None
    #: The next step's broker message, pushed by the same script if the instance is running after.
    send: Envelope | None = None
    #: Context entries (node names) deleted if the instance ends ``succeeded`` by this update.
    drop_on_success: Sequence[str] = ()
    #: The message whose worker runs the next step inline ("node:seq:attempt"; "" clears, None keeps).
    carrier: str | None = None
    #: The step was sent and waits its turn: no deadline yet; :meth:`RedisStore.start` sets one this
    #: many seconds after a worker starts it. (None: not queued, e.g. a step started inline.)
    queued: float | None = None


@dataclass
class _Indexes:
    """Index entries of a batch of new instances, written one command per index."""

    statuses: dict[str, list[str]] = field(default_factory=dict)
    deadlines: dict[str, float] = field(default_factory=dict)
    timers: dict[str, float] = field(default_factory=dict)
    queued: dict[str, float] = field(default_factory=dict)

    def write(self, pipe: Any, keys: Keys) -> None:
        for key, ids in self.statuses.items():
            pipe.sadd(key, *ids)
        for key, members in ((keys.deadlines, self.deadlines), (keys.timers, self.timers),
                             (keys.queued, self.queued)):
            if members:
                pipe.zadd(key, members)


@dataclass(frozen=True)
class StepHead:
    """Where an instance stands, without its documents (for bulk checks)."""

    workflow: str
    version: int
    status: InstanceStatus
    node: str
    seq: int
    attempt: int


@dataclass(frozen=True)
class Applied:
    """What :meth:`RedisStore.apply` did."""

    applied: bool
    status: InstanceStatus | None
    seq: int | None

    @property
    def missing(self) -> bool:
        """True when the instance does not exist (expired or never created)."""
        return self.status is None


class RedisStore:
    """The engine's state on one Redis (or a fakeredis with Lua, for fast tests)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.retention_seconds = int(retention_seconds)
        self._apply = client.register_script(_lua("apply.lua"))
        self._publish = client.register_script(_lua("publish.lua"))
        self._claim = client.register_script(_lua("claim.lua"))
        self._start = client.register_script(_lua("start.lua"))
        self._definitions: dict[tuple[str, int], Definition] = {}

    # -- definitions -------------------------------------------------------------------------

    def publish(self, definition: Definition) -> tuple[int, bool]:
        """Store ``definition`` as a new immutable version; (version, True if new).

        Publishing content identical to an existing version returns that version. A file that
        pins ``version`` gets exactly that number or a conflict error.
        """
        name, k = definition.name, self.keys
        body = definition.model_dump(mode="json", exclude_none=True)
        body["version"] = "__VERSION__"
        pinned = "" if definition.version is None else str(definition.version)
        reply = self._publish(
            keys=[k.definition_versions(name), k.definition_fingerprints(name), k.definition_names, k.aliases(name)],
            args=[name, pinned, definition.fingerprint(), dumps(body)],
        )
        first, second = (_s(x) for x in reply)
        if first == "conflict":
            raise TradeflowError(
                f"{name} version {second} already exists with other content; "
                "drop 'version' from the file to publish it as the next version"
            )
        return int(first), second == "new"

    def definition(self, name: str, version: int) -> Definition:
        """The definition ``name`` at ``version`` (cached: versions are immutable)."""
        cached = self._definitions.get((name, version))
        if cached is not None:
            return cached
        raw = self.client.hget(self.keys.definition_versions(name), str(version))
        if raw is None:
            raise NotFound(f"no definition {name} version {version}; see `tradeflow definitions list`")
        definition = Definition.model_validate_json(raw)
        self._definitions[(name, version)] = definition
        return definition

    def resolve_version(self, name: str, ref: int | str | None = None) -> int:
        """The version number that ``ref`` (a number, an alias, or None for latest) names."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            version = int(ref)
            if not self.client.hexists(self.keys.definition_versions(name), str(version)):
                raise NotFound(f"no definition {name} version {version}")
            return version
        alias = ref or "latest"
        found = self.client.hget(self.keys.aliases(name), alias)
        if found is None:
            if not self.client.sismember(self.keys.definition_names, name):
                raise NotFound(f"no definition named {name!r}; publish it with `tradeflow definitions publish`")
            raise NotFound(f"{name} has no alias {alias!r}; set it with `tradeflow definitions alias`")
        return int(found)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` of ``name`` at ``version``."""
        if alias == "latest":
            raise TradeflowError("'latest' is kept by publish and cannot be set")
        self.resolve_version(name, version)
        self.client.hset(self.keys.aliases(name), alias, str(version))

    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of ``name`` with the version it points at."""
        return {_s(a): int(v) for a, v in self.client.hgetall(self.keys.aliases(name)).items()}

    def definition_names(self) -> list[str]:
        """Names of every published definition, sorted."""
        return sorted(_s(n) for n in self.client.smembers(self.keys.definition_names))

    def versions(self, name: str) -> list[int]:
        """Every published version of ``name``, ascending."""
        return sorted(int(v) for v in self.client.hkeys(self.keys.definition_versions(name)))

    # -- instances ---------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh instance id (time-ordered, unique across machines)."""
        return uuid.uuid4().hex[:20]

    def create(self, instances: Iterable[dict[str, Any]], pipeline_size: int = 1000) -> int:
        """Create instances: dicts of hash fields plus ``_activity``, ``_deadline``, ``_timer``, ``_send``, ``_queued``.

        Written in pipelined MULTI batches: one batch either lands whole or not at all, first
        step messages (``_send``, an :class:`Envelope` or None) included. Per instance, a batch
        holds its hash, its first activity record and its message; the index entries (status
        sets, timers, deadlines, queued) go in one command per index per batch.
        """
        count = 0
        pipe = self.client.pipeline(transaction=True)
        indexes = _Indexes()
        for fields in instances:
            iid, run = fields["id"], fields["run"]
            activity, deadline, timer = fields.pop("_activity"), fields.pop("_deadline"), fields.pop("_timer")
            send: Envelope | None = fields.pop("_send", None)
            queued: float | None = fields.pop("_queued", None)
            pipe.hset(self.keys.instance(iid), mapping=fields)
            pipe.rpush(self.keys.activities(iid), pack(activity))
            indexes.statuses.setdefault(self.keys.run_status(run, fields["status"]), []).append(iid)
            if deadline is not None:
                indexes.deadlines[iid] = deadline
            if timer is not None:
                indexes.timers[iid] = timer
            if queued is not None:
                indexes.queued[iid] = time.time()  # wall clock, as apply.lua stamps it
            if send is not None:
                pipe.lpush(send.key, send.body)
            count += 1
            if count % pipeline_size == 0:
                indexes.write(pipe, self.keys)
                pipe.execute()
                indexes = _Indexes()
        indexes.write(pipe, self.keys)
        pipe.execute()
        return count

    def touch_run(self, run: str, meta: dict[str, Any]) -> None:
        """Record a run's label (first call wins for created_at) and add to its metadata."""
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.runs, {run: now}, nx=True)
        pipe.hsetnx(self.keys.run_meta(run), "created_at", str(now))
        for key, value in meta.items():
            if key == "total":
                pipe.hincrby(self.keys.run_meta(run), "total", int(value))
            else:
                pipe.hset(self.keys.run_meta(run), key, str(value))
        pipe.execute()

    def load(self, instance_id: str) -> Instance | None:
        """The instance, or None when it does not exist (never created, or expired)."""
        raw = self.client.hgetall(self.keys.instance(instance_id))
        if not raw:
            return None
        return Instance.from_hash(decode_instance_hash(raw))

    def start(self, instance_id: str, node: str, seq: int, attempt: int, now: float) -> Instance | None:
        """Read the instance as a worker starts step (node, seq, attempt); None when it does not exist.

        In the same round trip (``lua/start.lua``), a queued step that is the instance's current
        one leaves the queued set and gets its deadline: its timeout counts from now.
        """
        raw = self._start(keys=[self.keys.instance(instance_id), self.keys.queued, self.keys.deadlines],
                          args=[node, str(seq), str(attempt), repr(now)])
        if not raw:
            return None
        return Instance.from_hash(decode_instance_hash(dict(zip(raw[0::2], raw[1::2], strict=True))))

    def queued_since(self, before: float, limit: int) -> list[tuple[str, float]]:
        """Queued (sent, not started) steps sent before ``before``, oldest first: [(id, sent at)]."""
        flat = self.client.zrangebyscore(self.keys.queued, "-inf", repr(before), start=0, num=limit,
                                         withscores=True)
        return [(_s(member), float(score)) for member, score in flat]

    def step_heads(self, ids: Sequence[str]) -> dict[str, StepHead]:
        """Where each existing instance among ``ids`` stands (a light read: no context, no data)."""
        pipe = self.client.pipeline(transaction=False)
        for iid in ids:
            pipe.hmget(self.keys.instance(iid), "workflow", "version", "status", "node", "seq", "attempt")
        out = {}
        for iid, (workflow, version, status, node, seq, attempt) in zip(ids, pipe.execute(), strict=True):
            if workflow is not None:
                out[iid] = StepHead(_s(workflow), int(version), InstanceStatus(_s(status)), _s(node), int(seq),
                                    int(attempt or 1))
        return out

    def forget_queued(self, instance_id: str) -> None:
        """Drop a queued entry whose instance no longer exists (expired)."""
        self.client.zrem(self.keys.queued, instance_id)

    def queued_count(self) -> int:
        """How many steps are queued (sent, not yet started)."""
        return int(self.client.zcard(self.keys.queued))

    def queued_at(self, instance_id: str) -> float | None:
        """When the instance's queued step was sent; None when it is not queued (started, or moved on)."""
        score = self.client.zscore(self.keys.queued, instance_id)
        return None if score is None else float(score)

    def lease_reconcile(self, seconds: float) -> bool:
        """True for the one caller per ``seconds`` that may reconcile queued steps with the broker."""
        return bool(self.client.set(self.keys.reconcile_lock, "1", nx=True, px=max(1, int(seconds * 1000))))

    def swap_suspects(self, suspects: dict[str, str]) -> dict[str, str]:
        """Replace the reconciliation's suspects (id -> "seq:attempt"); return the previous ones."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hgetall(self.keys.reconcile_suspects)
        pipe.delete(self.keys.reconcile_suspects)
        if suspects:
            pipe.hset(self.keys.reconcile_suspects, mapping=suspects)
        previous = pipe.execute()[0]
        return {_s(k): _s(v) for k, v in previous.items()}

    def load_many(self, ids: Sequence[str]) -> list[Instance]:
        """The instances that exist among ``ids`` (one pipelined round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for iid in ids:
            pipe.hgetall(self.keys.instance(iid))
        out = []
        for raw in pipe.execute():
            if raw:
                out.append(Instance.from_hash(decode_instance_hash(raw)))
        return out

    def apply(self, instance_id: str, update: Update) -> Applied:
        """Apply ``update`` atomically if its expectations hold (see ``lua/apply.lua``)."""
        k, u = self.keys, update
        args = [
            "" if u.expected_seq is None else str(u.expected_seq),
            "" if u.expected_attempt is None else str(u.expected_attempt),
            ",".join(u.allowed),
            repr(time.time()),
            pack(u.activity) if u.activity is not None else "",
            u.context_node or "",
            pack(u.context_data) if u.context_node else "",
            u.node or "",
            "1" if u.bump_seq else "0",
            "" if u.attempt is None else str(u.attempt),
            u.status.value if u.status else "",
            "" if u.deadline is None else repr(u.deadline),
            "" if u.timer is None else repr(u.timer),
            u.timer_kind,
            pack(u.result) if u.result is not None else "",
            "-" if u.clear_error else (pack(u.error) if u.error is not None else ""),
            str(self.retention_seconds),
            f"{k.prefix}:run:",
            "1" if u.respect_pause else "0",
            "" if u.inflight is None else ("1" if u.inflight else "0"),
            pack(u.noop_activity) if u.noop_activity is not None else "",
            u.send.body if u.send else "",
            "" if u.carrier is None else (u.carrier or "-"),
            ",".join(u.drop_on_success),
            "" if u.queued is None else repr(u.queued),
        ]
        instance_key = k.instance(instance_id)
        reply = [_s(x) for x in self._apply(keys=[instance_key, k.activities(instance_id), k.timers, k.deadlines,
                                                  u.send.key if u.send else instance_key, k.queued], args=args)]
        if reply[0] == "missing":
            return Applied(False, None, None)
        return Applied(reply[0] == "applied", InstanceStatus(reply[2] if reply[0] == "stale" else reply[1]),
                       int(reply[2] if reply[0] == "applied" else reply[1]))

    def activities(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's activity records, oldest first."""
        return decode_activities(self.client.lrange(self.keys.activities(instance_id), 0, -1))

    def ttl(self, instance_id: str) -> int:
        """Seconds until the instance expires; -1 when it has no TTL, -2 when it is gone."""
        return int(self.client.ttl(self.keys.instance(instance_id)))

    # -- timers and deadlines ----------------------------------------------------------------

    def claim_due_timers(self, now: float, limit: int, lease_seconds: float) -> list[tuple[str, float]]:
        """Lease the timers due at ``now`` (waits and retry backoffs): [(id, due time)]."""
        return self._claim_due(self.keys.timers, now, limit, lease_seconds)

    def claim_overdue(self, now: float, limit: int, lease_seconds: float) -> list[tuple[str, float]]:
        """Lease the instances whose in-flight step passed its deadline: [(id, deadline)]."""
        return self._claim_due(self.keys.deadlines, now, limit, lease_seconds)

    def _claim_due(self, key: str, now: float, limit: int, lease: float) -> list[tuple[str, float]]:
        flat = self._claim(keys=[key], args=[repr(now), str(limit), repr(now + lease)])
        return [(_s(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def next_timer(self) -> float | None:
        """When the earliest timer is due, if any."""
        first = self.client.zrange(self.keys.timers, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    # -- runs --------------------------------------------------------------------------------

    def run_counts(self, run: str) -> dict[str, int]:
        """How many instances of ``run`` are in each status (exact: read from the status sets)."""
        pipe = self.client.pipeline(transaction=False)
        for status in InstanceStatus:
            pipe.scard(self.keys.run_status(run, status.value))
        return {s.value: int(n) for s, n in zip(InstanceStatus, pipe.execute(), strict=True)}

    def run_meta(self, run: str) -> dict[str, str]:
        """The run's metadata hash (created_at, total, workflows...)."""
        return {_s(k): _s(v) for k, v in self.client.hgetall(self.keys.run_meta(run)).items()}

    def runs(self, limit: int = 50) -> list[str]:
        """Run labels, newest first."""
        return [_s(r) for r in self.client.zrevrange(self.keys.runs, 0, limit - 1)]

    def run_ids(self, run: str, statuses: Iterable[InstanceStatus] | None = None) -> list[str]:
        """Ids of the instances of ``run`` in any of ``statuses`` (all statuses when None)."""
        keys = [self.keys.run_status(run, s.value) for s in (statuses or InstanceStatus)]
        return sorted(_s(i) for i in self.client.sunion(keys)) if keys else []

    def iter_run_ids(self, run: str, status: InstanceStatus, batch: int = 1000) -> Iterator[str]:
        """Ids of ``run`` in ``status``, scanned in batches (for big runs)."""
        for iid in self.client.sscan_iter(self.keys.run_status(run, status.value), count=batch):
            yield _s(iid)

    # -- epoch sentinel ----------------------------------------------------------------------

    def ensure_epoch(self) -> str:
        """The data set's epoch: a random token written the first time any process asks.

        A process remembers it and passes it to :meth:`check_epoch` later: a Redis restarted
        empty (or swapped for another) has lost or changed it.
        """
        self.client.set(self.keys.epoch, uuid.uuid4().hex, nx=True)
        return _s(self.client.get(self.keys.epoch))

    def check_epoch(self, expected: str) -> None:
        """Raise :class:`DataSetLost` unless the data set's epoch is still ``expected``.

        It never writes: a process that knew the old data set does not adopt a new one.
        """
        epoch = self.client.get(self.keys.epoch)
        if epoch is None or _s(epoch) != expected:
            found = "gone" if epoch is None else f"now {_s(epoch)}"
            raise DataSetLost(
                f"Redis lost tradeflow's data: epoch {expected} is {found} (Redis restarted empty or was "
                "replaced). Instances in flight are gone. Restore Redis from its AOF/RDB and restart the "
                "workers; or restart the workers to accept the empty data set and start the run again "
                "(see the README's runbook)."
            )

def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
