"""Redis bytes per workflow instance: live (mid-run) and finished, broken down.

Measured on a morning run (:mod:`bench.morning`) through a :class:`MemoryProbe`:

- **live**: once half the run is terminal, a sample of the instances still pending, running
  or waiting: ``MEMORY USAGE`` (``SAMPLES 0``: every element counted) of the instance hash and
  of its activity list, plus its share of the run's status sets, of the timer and deadline
  sorted sets and of the messages waiting in the broker's queues;
- **finished**: after the run, a sample of the terminal instances: hash + activity list + the
  share of the run's indexes, each hash field and each activity record (by node) in bytes;
- the **proposal** each account leaves to the portfolio manager (``<pm>prop:…``), apart from
  the engine's bytes;
- INFO ``used_memory`` before and after the run, divided by the accounts started: a check on
  the sum above (noisy: the Redis is shared, and allocator overhead is in it).
"""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from engine.api import RunProgress
from engine.instance import LIVE_STATUSES, TERMINAL_STATUSES, InstanceStatus
from engine.keyspace import text
from engine.ops.inspect import Inspector

SAMPLE = 1000
TARGET_BYTES_PER_FINISHED = 4096


def used_memory(client: redis.Redis) -> int:
    """INFO used_memory: bytes the Redis allocator holds now."""
    return int(client.info("memory")["used_memory"])


def key_bytes(client: redis.Redis, keys: Iterable[str]) -> list[int]:
    """``MEMORY USAGE key SAMPLES 0`` of each key (0 for a missing key)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return [int(n or 0) for n in pipe.execute()]


@dataclass
class Footprint:
    """Mean bytes of a sample of instances: their hashes and activity lists, and what is inside."""

    count: int = 0
    hash_bytes: float = 0.0
    activity_bytes: float = 0.0
    records: float = 0.0
    fields: dict[str, float] = field(default_factory=dict)
    activity_records: dict[str, float] = field(default_factory=dict)
    fields_zlib: dict[str, float] = field(default_factory=dict)
    activity_records_zlib: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """Hash plus activity list."""
        return self.hash_bytes + self.activity_bytes

    def as_dict(self) -> dict[str, Any]:
        """The figures, rounded, largest parts first."""
        def ranked(parts: dict[str, float]) -> dict[str, float]:
            return {k: round(v, 1) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}

        return {"sampled": self.count, "hash_bytes": round(self.hash_bytes, 1),
                "activity_list_bytes": round(self.activity_bytes, 1), "activity_records": round(self.records, 2),
                "hash_fields_payload_bytes": ranked(self.fields),
                "activity_records_payload_bytes": ranked(self.activity_records),
                "hash_fields_zlib_bytes": ranked(self.fields_zlib),
                "activity_records_zlib_bytes": ranked(self.activity_records_zlib)}


def footprint(client: redis.Redis, keys: Inspector, ids: list[str]) -> Footprint:
    """Mean bytes per instance of ``ids``: ``MEMORY USAGE`` of hash and activity list, and the
    payload (name + value, or record JSON) of each hash field and of each activity record by node,
    with what that payload would take zlib-compressed (level 6; to size a recommendation)."""
    out = Footprint(count=len(ids))
    if not ids:
        return out
    sizes = key_bytes(client, [k for i in ids for k in (keys.instance(i), keys.activities(i))])
    out.hash_bytes = sum(sizes[0::2]) / len(ids)
    out.activity_bytes = sum(sizes[1::2]) / len(ids)
    pipe = client.pipeline(transaction=False)
    for iid in ids:
        pipe.hgetall(keys.instance(iid))
        pipe.lrange(keys.activities(iid), 0, -1)
    replies = pipe.execute()
    sums: dict[str, dict[str, int]] = {part: defaultdict(int) for part in ("f", "fz", "r", "rz")}
    count = 0
    for raw_hash, raw_acts in zip(replies[0::2], replies[1::2], strict=True):
        for name, value in raw_hash.items():
            sums["f"][text(name)] += len(name) + len(value)
            sums["fz"][text(name)] += len(name) + min(len(value), len(zlib.compress(value, 6)))
        for raw in raw_acts:
            count += 1
            sums["r"][_activity_label(raw)] += len(raw)
            sums["rz"][_activity_label(raw)] += min(len(raw), len(zlib.compress(raw, 6)))
    out.records = count / len(ids)
    out.fields, out.fields_zlib, out.activity_records, out.activity_records_zlib = (
        {k: v / len(ids) for k, v in sums[part].items()} for part in ("f", "fz", "r", "rz"))
    return out


def _activity_label(raw: bytes) -> str:
    try:
        record = json.loads(Inspector.decode(raw))
    except ValueError:
        return "?"
    return f"{record.get('node', '?')} ({record.get('outcome', 'applied')})"


def index_bytes(client: redis.Redis, keys: Inspector, run: str) -> dict[str, int]:
    """Bytes of the run's indexes (a status set per status, the run's hash) and of the global
    timer and deadline sorted sets."""
    names = keys.run_indexes(run)
    return dict(zip(names, key_bytes(client, names.values()), strict=True))


def broker_bytes(client: redis.Redis, broker_prefix: str) -> int:
    """Bytes of every key of the broker (queues with their waiting messages, unacked messages)."""
    names = [text(k) for k in client.scan_iter(match=f"{broker_prefix}*", count=1000)]
    return sum(key_bytes(client, names))


def _sample(ids: list[str], size: int, seed: int = 1) -> list[str]:
    return ids if len(ids) <= size else random.Random(seed).sample(ids, size)


@dataclass
class MemoryProbe:
    """Watches one run: used_memory before, a live sample mid-run, the finished breakdown after."""

    client: redis.Redis
    keys: Inspector
    run: str
    broker_prefix: str
    proposal_key: Any = None  # (run, account id) -> key of the account's proposal, when there is one
    proposals_index: str | None = None
    sample: int = SAMPLE
    before: int = 0
    live: dict[str, Any] | None = None

    def baseline(self) -> None:
        """Call just before the run starts."""
        self.before = used_memory(self.client)

    def observe(self, progress: RunProgress) -> None:
        """Call while the run goes on: takes the live sample once half the run is terminal."""
        if self.live is None and progress.total and progress.finished * 2 >= progress.total:
            self.live = self.measure_live(progress)

    def measure_live(self, progress: RunProgress) -> dict[str, Any]:
        """Bytes per instance not yet terminal, with its share of the indexes and of the queued messages."""
        ids = self.keys_in(LIVE_STATUSES)
        live = len(ids)
        prints = footprint(self.client, self.keys, _sample(ids, self.sample))
        index = index_bytes(self.client, self.keys, self.run)
        live_index = sum(v for k, v in index.items() if k.removeprefix("run:") in {s.value for s in LIVE_STATUSES}
                         or k in {"timers", "deadlines"})
        queued = broker_bytes(self.client, self.broker_prefix)
        share_index = live_index / live if live else 0.0
        share_broker = queued / live if live else 0.0
        return {"finished_when_sampled": progress.finished, "live_when_sampled": live,
                "by_status": {k: v for k, v in progress.counts.items() if v and k in {s.value for s in LIVE_STATUSES}},
                **prints.as_dict(), "index_share_bytes": round(share_index, 1),
                "broker_share_bytes": round(share_broker, 1),
                "total_bytes": round(prints.total + share_index + share_broker, 1)}

    def keys_in(self, statuses: Iterable[InstanceStatus]) -> list[str]:
        """Ids of the run's instances in ``statuses``."""
        found = self.client.sunion([self.keys.run_status(self.run, s.value) for s in statuses])
        return sorted(text(i) for i in found)

    def finish(self, accounts_started: int) -> dict[str, Any]:
        """After the run: bytes per finished instance (sampled) with the breakdown, and the used_memory check."""
        after = used_memory(self.client)
        ids = self.keys_in(TERMINAL_STATUSES)
        finished = len(ids)
        picked = _sample(ids, self.sample)
        prints = footprint(self.client, self.keys, picked)
        index = index_bytes(self.client, self.keys, self.run)
        share_index = sum(index.values()) / finished if finished else 0.0
        per_finished = prints.total + share_index
        figures: dict[str, Any] = {
            "finished": finished, "per_finished": {**prints.as_dict(), "index_share_bytes": round(share_index, 1),
                                                   "index_bytes": index, "total_bytes": round(per_finished, 1)},
            "target_bytes": TARGET_BYTES_PER_FINISHED,
        }
        proposals = self._proposal_bytes(picked, accounts_started)
        figures["proposal_per_account_bytes"] = round(proposals, 1)
        figures["used_memory_before"] = self.before
        figures["used_memory_after"] = after
        delta = (after - self.before) / accounts_started if accounts_started else 0.0
        figures["used_memory_delta_per_account"] = round(delta, 1)
        figures["sum_per_account_bytes"] = round(per_finished + proposals, 1)
        figures["live"] = self.live
        return figures

    def _proposal_bytes(self, picked: list[str], accounts: int) -> float:
        """Mean bytes of the proposals of the sampled instances' accounts (absent ones count 0),
        plus each account's share of the run's proposal index."""
        if self.proposal_key is None or not picked:
            return 0.0
        pipe = self.client.pipeline(transaction=False)
        for iid in picked:
            pipe.hget(self.keys.instance(iid), "data")
        ids = [json.loads(raw)["account_id"] if raw else "" for raw in pipe.execute()]
        sizes = key_bytes(self.client, [self.proposal_key(self.run, a) for a in ids])
        index = key_bytes(self.client, [self.proposals_index])[0] if self.proposals_index else 0
        return sum(sizes) / len(picked) + index / max(1, accounts)
