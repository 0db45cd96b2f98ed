"""A promoted replica is the same data set; ``WAIT`` puts what ends an instance on the replica first.

On a primary, a replica and three sentinels (``tests/faults/sentinel.py``), through the
``sentinel://`` client tradeflow builds from its settings:

- the epoch key replicates: after ``kill -9`` of the primary and the replica's promotion,
  the same client (reconnected by itself) reads the same epoch, ``check_epoch`` passes (no
  ``DataSetLost``), and what was written before the failover is there;
- a master that comes back empty (its data gone) is a new data set: ``DataSetLost``;
- with ``TRADEFLOW_REDIS_WAIT_REPLICAS=1``, a terminal transition returns only once the
  replica has it: read on the replica right after, the instance is already terminal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.config import Settings
from engine.connections import client_for, replica_wait
from engine.definitions.validation import load_definition
from engine.errors import DataSetLost
from engine.instance import InstanceStatus
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver
from tests.faults.sentinel import SentinelGroup

#: The longest ``WAIT`` for the replica's acknowledgement, in ms: generous for a busy machine (``WAIT``
#: returns as soon as the replica acknowledged; the clients' socket timeout is longer still).
WAIT_MS = 30_000

DEFINITION = {"name": "one-step", "start": "a", "nodes": {
    "a": {"type": "service", "service": "s", "action": "a", "input": {}, "transitions": {"ok": "done"}},
    "done": {"type": "terminal", "status": "succeeded"}}}


def _settings(group: SentinelGroup, **extra: str) -> Settings:
    return Settings.from_env({**group.env(), **extra})


def test_the_epoch_survives_a_failover_and_an_empty_promoted_replica_is_reported(tmp_path: Path) -> None:
    with SentinelGroup(tmp_path) as group:
        client = client_for(_settings(group), socket_timeout=60)
        store = RedisStore(client, Keys("tfepoch"))
        epoch = store.ensure_epoch()
        client.set("tfepoch:marker", "before")
        assert client.wait(1, WAIT_MS) == 1  # the replica has both before the kill (WAIT returns once it acks)
        group.primary.kill()
        group.wait_failover()
        store.check_epoch(epoch)  # the promoted replica: same data set, no DataSetLost
        assert store.ensure_epoch() == epoch and client.get("tfepoch:marker") == b"before"
        # Now lose the data: the new master (the old replica) restarts empty, still the master.
        group.replica.extra = ()
        group.replica.restart_empty()
        assert group.master_port() == group.replica.port
        with pytest.raises(DataSetLost):
            store.check_epoch(epoch)
        client.close()


def test_a_terminal_transition_waits_until_the_replica_has_it(tmp_path: Path) -> None:
    with SentinelGroup(tmp_path) as group:
        settings = _settings(group, TRADEFLOW_REDIS_WAIT_REPLICAS="1", TRADEFLOW_REDIS_WAIT_MS=str(WAIT_MS))
        client = client_for(settings, socket_timeout=60)
        calls: list[int] = []
        wait = replica_wait(settings)
        assert wait is not None

        def replicate(c: redis.Redis) -> int:
            calls.append(wait(c))
            return calls[-1]

        store = RedisStore(client, Keys("tfwait"), replicate=replicate)
        engine = Engine(store, MemoryEnqueuer())
        actions = ActionRegistry()
        action("s", "a", into=actions)(lambda payload: Transition("ok", {}))
        engine.publish(load_definition(json.dumps(DEFINITION)))
        driver = Driver(engine, actions)
        replica = redis.Redis(port=group.replica.port)
        for n in range(20):
            iid = engine.start("one-step", {"n": n})
            driver.run_until_idle()
            assert engine.get(iid).status is InstanceStatus.SUCCEEDED
            assert replica.hget(store.keys.instance(iid), "status") == b"succeeded"  # already on the replica
        assert calls == [1] * 20  # one WAIT per instance (its terminal transition), acknowledged by the replica
        client.close()
