"""Instances: reading them, and every change of one (with its indexes and its run).

Each change is one operation of ``lua/state.lua``, called with one JSON document of named
fields (plus the stored documents it carries: activity records, context entries, data...).
Operations on an existing instance are a compare-and-set on its step sequence (and, where
it matters, its attempt and status): a redelivered or duplicated message fails it and is
recorded as a no-op. A change may carry that no-op's record, or (:data:`LateNoop`) a way to build
it: then the record is built and written only when the change comes back stale, in one more
round trip -- the common change carries nothing it does not use.

Round trips: a change may carry riders (:mod:`engine.store.riders`: a drained step's next
start, which :meth:`Instances.start` then serves without one), and changes collected with
:meth:`Instances.collect` go together in one pipeline (:meth:`Instances.send_collected`: a
tick's wakes); each is still its own compare-and-set, and consecutive changes of one instance (a
worker's held transitions) go as one script call, ``chain`` (:func:`chained`).

Adding an operation: a method here that builds its document and calls :meth:`_change`, and
a function of the same name in ``ops`` of ``lua/state.lua`` (listed in ``needs_instance`` when
it acts on an existing instance under the compare-and-set).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from engine.connections import PinnedCalls
from engine.definitions.nodes import Definition
from engine.errors import NotFound
from engine.instance import TERMINAL_STATUSES, Activity, Instance, InstanceStatus
from engine.keyspace import read_lua
from engine.store.codec import (
    Applied,
    Envelope,
    NewInstance,
    Placement,
    decode_activities,
    decode_instance_hash,
    decode_split_hash,
    dumps,
    dumps_with,
    pack,
    pack_text,
    seconds,
    text,
)
from engine.store.keys import Keys
from engine.store.riders import Rider, evalsha, send_all_with_riders, send_with_riders

#: What a change returns while collected (:meth:`Instances.collect`): its outcome comes with the others'.
PENDING = Applied(False, None, None)

#: Statuses in which a step's outcome is applied (a paused instance records it and stays paused).
LIVE = (InstanceStatus.RUNNING, InstanceStatus.PAUSED)

log = logging.getLogger(__name__)

#: A change's no-op record built only if the change comes back stale (:meth:`Instances.advance`).
LateNoop = Callable[[], Activity]


def state_script(client: redis.Redis) -> Any:
    """``lua/state.lua`` registered on ``client``, its terminal statuses filled in from the model's."""
    terminal = ", ".join(f"{status.value} = true" for status in sorted(TERMINAL_STATUSES))
    source = read_lua(__file__, "state.lua").replace("__TERMINAL__", terminal)
    return client.register_script(source)


class Instances:
    """The instance half of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    #: The client's commands on a connection each thread keeps (see :attr:`_calls`).
    _pinned: PinnedCalls
    keys: Keys
    retention_seconds: int
    replicate: Callable[[redis.Redis], int] | None
    _state: Any
    definition: Callable[[str, int], Definition]
    #: This thread's collected changes (:meth:`collect`), None when it sends each at once.
    _collecting: threading.local
    #: Starts sent as riders (:meth:`start_rider`), by (id, node, seq, attempt, carrier): their replies.
    _prefetched: dict[tuple[str, str, int, int, str | None], Any]

    @property
    def _calls(self) -> PinnedCalls:
        """The script calls of every change and start: ``client``'s commands on a connection each thread
        keeps (:class:`engine.connections.PinnedCalls`), made anew when ``client`` is replaced."""
        calls = self._pinned
        if calls.client is not self.client:
            calls = self._pinned = PinnedCalls(self.client)
        return calls

    # -- reading ------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh instance id: 20 hex digits of a random uuid4 (unique, not ordered)."""
        return uuid.uuid4().hex[:20]

    def load(self, instance_id: str) -> Instance | None:
        """The instance, or None when it does not exist (never created, or expired)."""
        raw = self.client.hgetall(self.keys.instance(instance_id))
        if not raw:
            return None
        return Instance.from_hash(decode_instance_hash(raw))

    def load_many(self, ids: Sequence[str]) -> list[Instance]:
        """The instances that exist among ``ids`` (one pipelined round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for iid in ids:
            pipe.hgetall(self.keys.instance(iid))
        return [Instance.from_hash(decode_instance_hash(raw)) for raw in pipe.execute() if raw]

    def existing(self, ids: Sequence[str]) -> list[bool]:
        """For each of ``ids``, whether that instance exists (one pipelined round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for iid in ids:
            pipe.exists(self.keys.instance(iid))
        return [bool(found) for found in pipe.execute()]

    def activities(self, instance_id: str) -> list[dict[str, Any]]:
        """The instance's activity records, oldest first."""
        return decode_activities(self.client.lrange(self.keys.activities(instance_id), 0, -1))

    def kept_for(self, workflow: str, version: int) -> int | None:
        """The TTL (seconds) a finished instance of ``workflow`` ``version`` gets from its definition's
        ``retention_days``; None when it has none (the store's ``retention_seconds`` applies)."""
        try:
            days = self.definition(workflow, version).retention_days
        except NotFound:
            return None
        return None if days is None else max(1, int(days * 86400))

    def retention_for(self, workflow: str, version: int) -> int:
        """The TTL (seconds) a finished instance of ``workflow`` ``version`` gets (and its batches)."""
        return self.kept_for(workflow, version) or self.retention_seconds

    def ttl(self, instance_id: str) -> int:
        """Seconds until the instance expires; -1 when it has no TTL, -2 when it is gone."""
        return int(self.client.ttl(self.keys.instance(instance_id)))

    # -- the operations -----------------------------------------------------------------------

    def create(self, instances: Iterable[NewInstance], batch: int = 500) -> list[bool]:
        """Create ``instances``; for each, True if created, False if its id already existed.

        One ``create_many`` call of ``lua/state.lua`` per ``batch`` instances: a batch lands
        whole, first step messages (``send``) included, each instance exactly as ``create``
        alone would write it.
        """
        created: list[bool] = []
        pending: list[NewInstance] = []
        for new in instances:
            pending.append(new)
            if len(pending) == batch:
                created += self._create_many(pending)
                pending = []
        if pending:
            created += self._create_many(pending)
        return created

    def _create_many(self, instances: Sequence[NewInstance]) -> list[bool]:
        """One ``create_many`` call: the instances' shared fields once, then a document per instance."""
        k = self.keys
        first = instances[0]
        shared = (first.workflow, first.version, first.run)
        items: list[dict[str, Any]] = []
        keys = [k.instance(first.id), k.activities(first.id), k.timers, k.deadlines, k.instance(first.id), k.queued]
        args: list[Any] = [""]
        places: dict[int, dict[str, Any]] = {}  # id(placement) -> its document: instances often share one
        kept = self.kept_for(first.workflow, first.version)
        for new in instances:
            item: dict[str, Any] = {"id": new.id, "now": seconds(new.created_at)}
            if (new.workflow, new.version, new.run) != shared:  # the item's own, over the shared ones
                item.update(workflow=new.workflow, version=new.version, run=new.run,
                            retention=self.kept_for(new.workflow, new.version) or False)
            if new.shadow != first.shadow:
                item["shadow"] = new.shadow
            docs: dict[str, Any] = {"data": pack(new.data), "activity": pack(new.activity.to_dict())}
            if new.error is not None:
                docs["error"] = pack(new.error)
            place = places.get(id(new.placement))
            if place is None:
                self._place(item, new.placement, docs)
                if new.placement.result is None and new.placement.gather is None:
                    places[id(new.placement)] = item["place"]
            else:
                item["place"] = place
            instance_key = k.instance(new.id)
            keys += (instance_key, k.activities(new.id), new.send.key if new.send else instance_key)
            if new.send is not None:
                docs["message"] = new.send.body
            item["docs"] = list(docs)
            args += docs.values()
            items.append(item)
        shared_doc = {"op": "create_many", "workflow": first.workflow, "version": first.version, "run": first.run,
                      "shadow": first.shadow,
                      "ttl": self.retention_seconds, "runs": k.runs_prefix, "docs": [], "wall": seconds(time.time()),
                      "items": items}
        if kept is not None:
            shared_doc["retention"] = kept
        args[0] = dumps(shared_doc)
        return [flag == "1" for flag in text(self._state(keys=keys, args=args))]

    def advance(self, instance_id: str, *, seq: int, activity: Activity, placement: Placement,
                statuses: Iterable[InstanceStatus] = LIVE, context: tuple[str, Any] | None = None,
                noop: Activity | LateNoop | None = None, carrier: str | None = None,
                send: Envelope | None = None, encoded: str | None = None,
                riders: Sequence[Rider] = (), forget: Sequence[str] = ()) -> Applied:
        """Take a transition at ``seq``: record ``context`` (node, data), seq + 1, then ``placement``.

        ``noop`` is recorded instead when the instance moved on meanwhile (a :data:`LateNoop`: built
        and recorded only then, in one more round trip); ``carrier`` names the
        message whose worker runs the next step inline ("" clears it). ``encoded``: the context
        data as compact JSON when the service's answer was encoded already; it is written as
        is, in the context entry and as the activity's ``received``. ``riders``
        (:mod:`engine.store.riders`) are sent after the change in the same round trip. ``forget``:
        context entries (node names) deleted with the change, no node after it reading them; when
        ``context``'s own node is one of them, its entry is not written at all.
        """
        if context is not None and context[0] in forget:
            context = encoded = None
        late = noop if callable(noop) else None  # a LateNoop: built only for a stale reply
        carried = noop if isinstance(noop, Activity) else None
        record = activity.to_dict()
        if context is not None and encoded is not None:
            docs = {"activity": pack_text(dumps_with(record, "received", encoded)
                                          if record.get("received") is context[1] else dumps(record)),
                    f"c:{context[0]}": pack_text(encoded)}
        else:
            docs = {"activity": pack(record)}
            if context is not None:
                docs[f"c:{context[0]}"] = pack(context[1])
        if carried is not None:
            docs["noop"] = pack(carried.to_dict())
        doc = {"expect": _expect(statuses, seq), "carrier": carrier, "place": placement}
        if forget:
            doc["forget"] = list(forget)
        return self._change("advance", instance_id, doc, docs, send, riders, late)

    def signal(self, instance_id: str, *, seq: int, activity: Activity, placement: Placement,
               context: tuple[str, Any], noop: Activity | None = None, marker: str | None = None,
               quorum: dict[str, Any] | None = None, quorum_reached: bool = False,
               send: Envelope | None = None) -> Applied:
        """Apply a signal to an instance awaiting at ``seq``: ``context`` (node, data), seq + 1, ``placement``.

        ``marker`` (a field of the instance hash, set to the new seq) remembers the signal's key;
        ``quorum`` (the principals counted so far at its await node) is kept on the instance when
        given and dropped when ``quorum_reached`` (or when the instance leaves the node); ``noop``
        (if given) is recorded instead when the instance moved on meanwhile (another signal, its timeout).
        """
        docs = {"activity": pack(activity.to_dict()), f"c:{context[0]}": pack(context[1])}
        if noop is not None:
            docs["noop"] = pack(noop.to_dict())
        if quorum is not None:
            docs["quorum"] = pack(quorum)
        return self._change("signal", instance_id, {"expect": _expect((InstanceStatus.AWAITING,), seq),
                                                     "marker": marker, "carrier": "" if send else None,
                                                     "quorum_reached": quorum_reached or None,
                                                     "place": placement}, docs, send)

    def refuse(self, instance_id: str, activity: Activity) -> None:
        """Record a refused signal on the instance, if it exists; nothing else of it changes."""
        self._change("refuse", instance_id, {}, {"activity": pack(activity.to_dict())})

    def marker(self, instance_id: str, name: str) -> str | None:
        """The value of marker field ``name`` of an instance (see :meth:`signal`), if set."""
        found = self.client.hget(self.keys.instance(instance_id), name)
        return None if found is None else text(found)

    def retry(self, instance_id: str, *, seq: int, attempt: int, next_attempt: int, placement: Placement,
              activity: Activity | None = None, statuses: Iterable[InstanceStatus] = LIVE,
              carrier: str | None = None, send: Envelope | None = None) -> Applied:
        """Make ``next_attempt`` of the step at (``seq``, ``attempt``): sent now or after a backoff timer."""
        docs = {} if activity is None else {"activity": pack(activity.to_dict())}
        return self._change("retry", instance_id, {"expect": _expect(statuses, seq, attempt), "attempt": next_attempt,
                                                    "carrier": carrier, "place": placement}, docs, send)

    def fail(self, instance_id: str, *, seq: int, attempt: int, activity: Activity, error: dict[str, Any],
             noop: Activity | None = None, statuses: Iterable[InstanceStatus] = LIVE) -> Applied:
        """Fail the instance at (``seq``, ``attempt``) with ``error``; ``noop`` is recorded if it moved on."""
        docs = {"activity": pack(activity.to_dict()), "error": pack(error)}
        if noop is not None:
            docs["noop"] = pack(noop.to_dict())
        return self._change("fail", instance_id, {"expect": _expect(statuses, seq, attempt),
                                                   "place": Placement(InstanceStatus.FAILED)}, docs)

    def park(self, instance_id: str, *, seq: int, activity: Activity) -> Applied:
        """Set aside a delivered step of a paused instance at ``seq``: nothing is in flight after."""
        return self._change("park", instance_id, {"expect": _expect((InstanceStatus.PAUSED,), seq),
                                                   "place": Placement(inflight=False)},
                            {"activity": pack(activity.to_dict())})

    def hold(self, instance_id: str, *, seq: int, attempt: int, activity: Activity, until: float,
             reason: str) -> Applied:
        """Park the started step at (``seq``, ``attempt``) over its limit: waiting, for ``reason``, until ``until``.

        The step keeps its node, seq and attempt (it never ran); the ``limit`` timer re-sends it.
        """
        return self._change("hold", instance_id, {"expect": _expect((InstanceStatus.RUNNING,), seq, attempt),
                                                   "place": Placement.limited(until, reason)},
                            {"activity": pack(activity.to_dict())})

    def control(self, instance_id: str, *, seq: int, statuses: Iterable[InstanceStatus], activity: Activity,
                placement: Placement, attempt: int | None = None, context: Mapping[str, Any] | None = None,
                carrier: str | None = None, send: Envelope | None = None) -> Applied:
        """An operator's change at ``seq`` (pause, resume, retry, cancel): ``context`` entries replaced,
        ``attempt`` set, the error cleared, then ``placement``."""
        docs = {"activity": pack(activity.to_dict())}
        docs.update({f"c:{node}": pack(data) for node, data in (context or {}).items()})
        return self._change("control", instance_id, {"expect": _expect(statuses, seq), "attempt": attempt,
                                                      "carrier": carrier, "place": placement}, docs, send)

    def noop(self, instance_id: str, activity: Activity) -> None:
        """Record a no-op (a stale or duplicate delivery) on the instance, if it exists."""
        self._change("noop", instance_id, {}, {"noop": pack(activity.to_dict())})

    def release(self, instance_id: str, index: str) -> None:
        """Drop the instance's entry from ``index`` ("timers", "deadlines" or "queued"): it no longer applies."""
        self._change("release", instance_id, {"id": instance_id, "index": index}, {})

    def start(self, instance_id: str, node: str, seq: int, attempt: int, now: float,
              carrier: str | None = None) -> Instance | None:
        """Read the instance as a worker starts step (``node``, ``seq``, ``attempt``); None when it does not exist.

        In the same round trip, a queued step that is the instance's current one leaves the
        queued set and gets its deadline: its timeout counts from ``now``, not from its sending;
        and, when that step is the instance's current one, ``carrier`` (``node:seq:attempt@host:pid``,
        the process running it) is recorded. The instance returned is as it was read, before.
        """
        raw = self._prefetched.pop((instance_id, node, seq, attempt, carrier), None) \
            if self._prefetched else None
        if raw is None:
            doc: dict[str, Any] = {"node": node, "seq": seq, "attempt": attempt, "now": seconds(now)}
            if carrier is not None:
                doc["carrier"] = carrier
            raw = self._call("start", instance_id, doc, {}, None)
        if not raw:
            return None
        return Instance.from_hash(decode_split_hash(raw[0], raw[1]))

    def forget_start(self, instance_id: str, node: str, seq: int, attempt: int, carrier: str) -> None:
        """Drop the kept reply of a start sent as a rider (:meth:`start_rider`) whose step will not run here."""
        self._prefetched.pop((instance_id, node, seq, attempt, carrier), None)

    def prefetch_starts(self, steps: Sequence[tuple[str, str, int, int, str]], clock: Callable[[], float]) -> None:
        """:meth:`start` each of ``steps`` (instance id, node, seq, attempt, carrier) now, all in one script
        call (``start_many``); the :meth:`start` of each by the same carrier then takes the kept reply
        without a round trip. When Redis refuses the call, nothing is kept: each start sends its own."""
        if not steps:
            return
        items = [{"node": node, "seq": seq, "attempt": attempt, "carrier": carrier}
                 for _, node, seq, attempt, carrier in steps]
        keys, args = self._operation("start_many", steps[0][0], {"items": items, "now": seconds(clock())}, {}, None)
        keys += [self.keys.instance(step[0]) for step in steps[1:]]
        try:
            replies = run_script(self._calls, self._state, keys, args)
        except redis.ResponseError:
            return
        for step, reply in zip(steps, replies, strict=True):
            self._prefetched[tuple(step)] = reply

    def start_rider(self, instance_id: str, node: str, seq: int, attempt: int, clock: Callable[[], float],
                    carrier: str, started: Callable[[], None] | None = None) -> Rider:
        """The :meth:`start` of step (``node``, ``seq``, ``attempt``) by ``carrier``, as a rider of another change.

        Its ``now`` is read from ``clock`` when it is sent; its reply is kept for the
        :meth:`start` of the same step by the same carrier, which then makes no round trip
        (``started`` is told when it landed). A start that failed is not kept: that
        :meth:`start` sends its own.
        """
        key = (instance_id, node, seq, attempt, carrier)

        def command() -> tuple[Any, ...]:
            doc = {"node": node, "seq": seq, "attempt": attempt, "now": seconds(clock()), "carrier": carrier}
            keys, args = self._operation("start", instance_id, doc, {}, None)
            return evalsha(self._state, keys, args)

        def landed(reply: Any) -> None:
            if not isinstance(reply, Exception):
                self._prefetched[key] = reply
                if started is not None:
                    started()

        return Rider(command, landed, self._state)

    # -- the call -----------------------------------------------------------------------------

    def _change(self, op: str, instance_id: str, doc: dict[str, Any], docs: dict[str, Any],
                send: Envelope | None = None, riders: Sequence[Rider] = (), late: LateNoop | None = None) -> Applied:
        """Run operation ``op`` on one instance and say what it did (``riders`` in the same round trip;
        ``late``: the no-op record to write when it comes back stale)."""
        collected = getattr(self._collecting, "calls", None)
        if collected is not None:  # inside collect(): sent with the others by send_collected()
            if late is not None:
                self._collecting.late.append((len(collected), instance_id, late))
            collected.append(self._operation(op, instance_id, doc, docs, send))
            self._collecting.riders.extend(riders)
            return PENDING
        if riders:
            keys, args = self._operation(op, instance_id, doc, docs, send)
            raw = send_with_riders(self._calls, evalsha(self._state, keys, args), self._state, riders)
        else:
            raw = self._call(op, instance_id, doc, docs, send)
        applied = self._applied(raw)
        if late is not None and _stale(applied):
            self._record_noops([(instance_id, late)])
        return applied

    def collect(self) -> None:
        """Collect this thread's changes from now on instead of sending them (each returns :data:`PENDING`)
        until :meth:`send_collected` sends them all in one round trip."""
        self._collecting.calls = []
        self._collecting.riders = []
        self._collecting.late = []

    def send_collected(self) -> list[Applied]:
        """Send the changes collected since :meth:`collect` in one pipelined round trip, in order, then
        their riders, and say what each change did (each exactly as alone: its own compare-and-set).
        Consecutive changes of one instance go as one ``chain`` call (:func:`chained`). Collecting stops."""
        calls: list[tuple[list[str], list[Any]]] = self._collecting.calls
        riders: list[Rider] = self._collecting.riders
        late: list[tuple[int, str, LateNoop]] = self._collecting.late
        self._collecting.calls = self._collecting.riders = self._collecting.late = None
        if not calls:
            return []
        groups = chained(calls)
        replies = send_all_with_riders(self._calls, [(evalsha(self._state, *chain_call(group)), self._state)
                                                     for group in groups], riders)
        out = []
        for group, reply in zip(groups, replies, strict=True):
            for item in reply if len(group) > 1 and isinstance(reply, list) else [reply]:  # a chain's: one each
                if isinstance(item, Exception):
                    raise item
                out.append(self._applied(item))
        self._record_noops([(instance_id, build) for index, instance_id, build in late if _stale(out[index])])
        return out

    def _record_noops(self, noops: Sequence[tuple[str, LateNoop]]) -> None:
        """Record each stale change's no-op (instance id, its record's builder), all in one round trip.

        The changes are decided already (stale: nothing of theirs applied) and so are the others sent
        with them: a Redis error here loses these records only, logged, and is not the changes' error.
        """
        if not noops:
            return
        pipe = self.client.pipeline(transaction=False)
        for instance_id, build in noops:
            self._call("noop", instance_id, {}, {"noop": pack(build().to_dict())}, None, client=pipe)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("the no-op records of %d stale changes were not written (%s): %s", len(noops),
                        ", ".join(instance_id for instance_id, _ in noops), exc)

    def _applied(self, raw: Any) -> Applied:
        """What a change's reply says it did."""
        reply = [text(x) for x in raw]
        if reply[0] in ("missing", "released", "refused") or (reply[0] == "stale" and len(reply) == 1):
            return Applied(False, None, None)
        if reply[0] == "stale":
            return Applied(False, InstanceStatus(reply[2]), int(reply[1]))
        if len(reply) > 4:
            applied = Applied(True, InstanceStatus(reply[1]), int(reply[2]), batch=reply[3], last=reply[4] == "1")
        else:
            applied = Applied(True, InstanceStatus(reply[1]), int(reply[2]))
        if self.replicate is not None and applied.status is not None and applied.status.is_terminal:
            self.replicate(self.client)
        return applied

    def _place(self, doc: dict[str, Any], place: Placement, docs: dict[str, Any]) -> None:
        """Write ``place`` into an operation's (or a create_many item's) document, and the documents it carries."""
        doc["place"] = place.document()
        if place.result is not None:
            docs["result"] = pack(place.result)
        if place.gather is not None:
            doc["gather"] = {**place.gather, **self.gather_keys()}
            docs["contribution"] = pack(place.contribution)

    def _call(self, op: str, instance_id: str, doc: dict[str, Any], docs: dict[str, Any],
              send: Envelope | None, client: Any = None) -> Any:
        """Run operation ``op`` of ``lua/state.lua`` (on ``client``: a pipeline, or the store's client).

        ``doc`` holds the named fields (a :class:`Placement` under ``place``); ``docs`` the stored
        documents, passed after it and named in its ``docs`` list.
        """
        keys, args = self._operation(op, instance_id, doc, docs, send)
        if client is not None:  # a pipeline: the Script object makes it load the script first
            return self._state(keys=keys, args=args, client=client)
        return run_script(self._calls, self._state, keys, args)

    def _operation(self, op: str, instance_id: str, doc: dict[str, Any], docs: dict[str, Any],
                   send: Envelope | None) -> tuple[list[str], list[Any]]:
        """The keys and arguments of operation ``op`` of ``lua/state.lua`` (see :meth:`_call`)."""
        k = self.keys
        place = doc.get("place")
        if isinstance(place, Placement):
            self._place(doc, place, docs)
        if send is not None:
            docs["message"] = send.body
        doc = {key: value for key, value in doc.items() if value is not None}
        wall = repr(time.time())  # when a step is queued: the reconciliation ages on the wall clock
        doc.update(op=op, ttl=self.retention_seconds, runs=k.runs_prefix, docs=list(docs), wall=wall)
        doc.setdefault("now", wall)
        instance_key = k.instance(instance_id)
        keys = [instance_key, k.activities(instance_id), k.timers, k.deadlines, send.key if send else instance_key,
                k.queued]
        return keys, [dumps(doc), *docs.values()]


def _stale(applied: Applied) -> bool:
    """Whether a change came back stale from an instance that exists (its no-op is to be recorded)."""
    return not applied.applied and applied.status is not None


def run_script(calls: PinnedCalls, script: Any, keys: list[str], args: list[Any]) -> Any:
    """``script(keys=keys, args=args)`` (a registered script) on ``calls``' client, as one EVALSHA.

    redis-py's Script call goes through three more layers (and an import) on every call, about
    8 us of a worker's CPU each time, and ``calls`` sends it on this thread's kept connection; a
    server that does not know the script yet (a restart, a failover) answers NOSCRIPT before
    running anything, and the Script call then loads it.
    """
    try:
        return calls.execute("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return script(keys=keys, args=args, client=calls.client)


def chained(calls: Sequence[tuple[list[str], list[Any]]]) -> list[list[tuple[list[str], list[Any]]]]:
    """``calls`` (the keys and arguments of operations of ``lua/state.lua``) in groups, in order: each
    run of consecutive calls on one instance (the same hash) together, as long as at most one queue
    gets a message from them; a group of one is a call as alone."""
    groups: list[list[tuple[list[str], list[Any]]]] = []
    for keys, args in calls:
        last = groups[-1] if groups else []
        instance = keys[0]
        if last and last[0][0][0] == instance and len({k[4] for k, _ in last} | {keys[4], instance}) <= 2:
            last.append((keys, args))
        else:
            groups.append([(keys, args)])
    return groups


def chain_call(group: Sequence[tuple[list[str], list[Any]]]) -> tuple[list[str], list[Any]]:
    """The keys and arguments of one call of ``lua/state.lua`` that runs ``group`` (see :func:`chained`):
    the call itself when alone, else a ``chain`` of them (their documents as they are, one after
    another; the stored documents they carry after it, in the same order)."""
    if len(group) == 1:
        return group[0]
    keys = list(group[0][0])
    keys[4] = next((k[4] for k, _ in group if k[4] != k[0]), keys[0])  # the queue of the one that sends
    items = ",".join(args[0] for _, args in group)
    return keys, ['{"op":"chain","items":[' + items + "]}", *(doc for _, args in group for doc in args[1:])]


def _expect(statuses: Iterable[InstanceStatus], seq: int, attempt: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"statuses": [s.value for s in statuses], "seq": seq}
    if attempt is not None:
        out["attempt"] = attempt
    return out

