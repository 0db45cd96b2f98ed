"""Service actions of the fault scenarios (loaded by the harness's real workers).

``faults.work`` counts its calls per (key, node), announces its pid when asked (so a test
can kill the process running it), sleeps as long as the instance asks, and waits for a gate
file when asked (so a test can hold a step in its action until it opens the gate; the step then
leaves marker files by the gate, see :func:`work`).
``faults.submit`` does the same, then sends an effect under an idempotency key (``key:node``,
as the brokerage adapter's order keys): a second execution of the step finds it sent.
``faults.batch`` is a gather node's batch step: it counts its calls per batch.
``faults.barrier`` blocks until two deliveries of the same step are inside it: it forces
the duplicate race. The ``linger`` hook holds a worker process *after* a step applied its
transition and before its message is acknowledged, when the test set
``<prefix>:linger[<instance>]`` to a number of seconds: the window in which a kill
makes the redelivery a no-op. Counters live in the test's Redis under ``$TRADEFLOW_KEY_PREFIX:``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery.signals import task_postrun

from engine.runtime import pipeline
from engine.service import Transition, action

#: The barrier waits this long at most for the second delivery (generous: a busy machine may be slow to hand it out).
BARRIER_SECONDS = 120.0
#: A gated step waits this long at most for its gate (then goes on: a test that failed never hangs a worker).
GATE_SECONDS = 180.0
_clients: dict[int, redis.Redis] = {}
#: Per thread: the marker prefix of the gated step this thread's action just returned from.
_gated = threading.local()


class _ResultWriteFailed(logging.Filter):
    """Marks ``<gate>.<key>.write-failed`` when the pipeline, in the thread whose gated action just returned,
    says Redis is unreachable: the write of that step's result (the first Redis call after the action) failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        marker = getattr(_gated, "marker", None)
        if marker and str(record.msg).startswith("Redis unreachable"):
            _gated.marker = None
            Path(f"{marker}.write-failed").touch()
        return True


pipeline.log.addFilter(_ResultWriteFailed())


def _client() -> redis.Redis:
    client = _clients.get(os.getpid())
    if client is None:
        client = _clients[os.getpid()] = redis.Redis.from_url(os.environ["TRADEFLOW_REDIS_URL"])
    return client


def _patiently(call: Any, *args: Any) -> Any:
    """``call(*args)``, again while Redis does not answer (for up to ``GATE_SECONDS``): the service's own
    bookkeeping waits out an outage, so a step whose action began just as Redis froze is not failed
    by its counter's write (what a scenario checks is the engine's recovery, not this counter's)."""
    end = time.monotonic() + GATE_SECONDS
    while True:
        try:
            return call(*args)
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def _key(name: str) -> str:
    return f"{os.environ['TRADEFLOW_KEY_PREFIX']}:{name}"


def _answer(payload: dict[str, Any]) -> Transition:
    """``ok`` with data that tells the executions apart (pid, thread and a fresh token)."""
    return Transition("ok", {"node": payload["node"], "pid": os.getpid(), "thread": threading.get_ident(),
                             "token": uuid.uuid4().hex})


@action("faults", "work")
def work(payload: dict[str, Any]) -> Transition:
    """Count the call; announce and sleep when the instance's data asks for this node.

    ``data.sleep``: node -> seconds; ``data.announce``: nodes whose executions push
    ``pid:key:node`` to ``<prefix>:busy`` before sleeping (the test kills that process);
    ``data.hold``: node -> n: after sleeping, wait until the step was called ``n`` times (its
    redelivery has started; at most ``GATE_SECONDS``);
    ``data.gate``: node -> path of a file: then wait until the file exists (at most
    ``GATE_SECONDS``), touch ``<gate>.<key>.returned`` and return; ``<gate>.<key>.write-failed``
    follows if the pipeline then finds Redis unreachable (:class:`_ResultWriteFailed`).
    No Redis call is made after the gate opened, so a gated step runs on with Redis down.
    """
    _gated.marker = None
    client = _client()
    node, data = payload["node"], payload.get("data") or {}
    _patiently(client.hincrby, _key("calls"), f"{payload['key']}:{node}", 1)
    if node in data.get("announce", []):
        _patiently(client.rpush, _key("busy"), f"{os.getpid()}:{payload['key']}:{node}")
    time.sleep(float(data.get("sleep", {}).get(node, 0)))
    hold = int(data.get("hold", {}).get(node, 0))
    end = time.monotonic() + GATE_SECONDS
    while hold and int(client.hget(_key("calls"), f"{payload['key']}:{node}") or 0) < hold \
            and time.monotonic() < end:
        time.sleep(0.05)
    gate = data.get("gate", {}).get(node)
    if gate:
        end = time.monotonic() + GATE_SECONDS
        while not Path(gate).exists() and time.monotonic() < end:
            time.sleep(0.02)
        marker = f"{gate}.{payload['key']}"
        Path(f"{marker}.returned").touch()
        _gated.marker = marker
    return _answer(payload)


@action("faults", "batch")
def batch(payload: dict[str, Any]) -> dict[str, Any]:
    """A gather node's batch step: counts its calls per batch (``batch:<id>``); every member goes on ``ok``."""
    _client().hincrby(_key("calls"), f"batch:{payload['batch']['id']}", 1)
    return {m["instance"]: Transition("ok") for m in payload["members"]}


@action("faults", "submit")
def submit(payload: dict[str, Any]) -> Transition:
    """``work``, then one effect per idempotency key: ``<prefix>:effects`` counts the effects sent,
    ``<prefix>:effect_refusals`` the executions that found theirs already sent."""
    transition = work(payload)
    client = _client()
    idempotency_key = f"{payload['key']}:{payload['node']}"
    if client.set(_key(f"effect:{idempotency_key}"), os.getpid(), nx=True):
        client.hincrby(_key("effects"), idempotency_key, 1)
    else:
        client.hincrby(_key("effect_refusals"), idempotency_key, 1)
    return transition


@task_postrun.connect
def linger(task_id: str, task: Any, args: tuple[Any, ...] | None = None, **_: Any) -> None:
    """After a step applied and before its message is acked: linger when the test asks for it."""
    if not task.name.startswith("faults.") or not args:
        return
    instance_id = args[0]
    seconds = _client().hget(_key("linger"), instance_id)
    if seconds:
        _client().rpush(_key("lingering"), f"{os.getpid()}:{instance_id}")
        time.sleep(float(seconds))


@action("faults", "barrier")
def barrier(payload: dict[str, Any]) -> Transition:
    """Count the call, then wait until a second delivery of the same step arrived (or ``BARRIER_SECONDS``)."""
    client = _client()
    client.hincrby(_key("calls"), f"{payload['key']}:{payload['node']}", 1)
    arrived = _key(f"barrier:{payload['key']}:{payload['node']}")
    client.incr(arrived)
    end = time.monotonic() + BARRIER_SECONDS
    while int(client.get(arrived) or 0) < 2 and time.monotonic() < end:
        time.sleep(0.01)
    return _answer(payload)
