"""The portfolio manager's data side on a real Redis: the book contract, seeding speed, and
exactly-once order placement under concurrent duplicate submits from several processes.

Runs on database 15 of 127.0.0.1:6379 (override with TRADEFLOW_PM_TEST_REDIS_URL), under a key
prefix of its own; deletes only its own keys; skipped when no Redis answers.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import redis

from engine.testing import delete_prefix
from portfolio_manager.brokerage import BrokerOrder, BrokerReceipt, SimulatedBrokerage
from portfolio_manager.errors import BrokerageTimeout
from portfolio_manager.generator import seed_book
from portfolio_manager.redis_book import RedisBook
from portfolio_manager.sources import BookSource
from tests.unit.portfolio_manager import data
from tests.unit.portfolio_manager.contract import BookContract
from tests.unit.portfolio_manager.test_pm_sources import count_round_trips

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("TRADEFLOW_PM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
AS_OF = date(2025, 6, 2)


@pytest.fixture(scope="module")
def pm_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"no Redis answers at {REDIS_URL}")
    yield client
    client.close()


@pytest.fixture
def prefix(pm_redis: redis.Redis) -> Iterator[str]:
    value = f"pmit-{uuid.uuid4().hex[:10]}:"
    yield value
    delete_prefix(pm_redis, value)


class TestRedisBookOnRealRedis(BookContract):
    @pytest.fixture
    def book(self, pm_redis: redis.Redis, prefix: str) -> BookSource:
        return RedisBook(pm_redis, prefix=prefix)


def test_get_holdings_is_one_round_trip_on_real_redis(
    pm_redis: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = RedisBook(pm_redis, prefix=prefix)
    data.populate(book)
    book.get_holdings("B1", data.AS_OF, 30)  # the script may need loading once
    sent = count_round_trips(pm_redis, monkeypatch)
    assert len(book.get_holdings("A1", data.AS_OF, 365).trade_history) == 5
    assert len(sent) == 1


def test_seeding_ten_thousand_accounts_is_fast(
    pm_redis: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fast means batched: a few round trips per thousand accounts (the time is a printed figure)."""
    sentinel = f"{prefix[:-1]}-other:keep"
    pm_redis.set(sentinel, "not the book's")
    book = RedisBook(pm_redis, prefix=prefix)
    sent = count_round_trips(pm_redis, monkeypatch)
    began = time.perf_counter()
    summary = seed_book(book, 10_000, 42, AS_OF)
    elapsed = time.perf_counter() - began
    round_trips = len(sent)
    monkeypatch.undo()
    print(
        f"\nseeded 10,000 accounts ({summary.lots} lots, {summary.trades} trades) in {elapsed:.2f}s: "
        f"generate {summary.generate_seconds:.2f}s, write {summary.write_seconds:.2f}s, {round_trips} round trips"
    )
    assert round_trips <= 10_000 // 100  # pipelined: never a round trip per account
    assert len(book.list_accounts(active_only=False)) == 10_000
    many = book.get_holdings_many([a.id for a in book.list_accounts()[:500]], AS_OF, 365)
    assert len(many) == 500
    assert sum(len(h.lots) for h in many.values()) > 0
    book.clear()
    assert list(pm_redis.scan_iter(match=f"{prefix}*", count=1000)) == []
    assert pm_redis.get(sentinel) == b"not the book's"
    pm_redis.delete(sentinel)


# --- exactly-once order placement across processes ---------------------------------------------------


def _order(key: str = "run-2025-06-02:A1:VTI:BUY") -> BrokerOrder:
    return BrokerOrder(idempotency_key=key, account_id="A1", symbol="VTI", side="BUY", quantity=3, est_price=250.0)


def _submitter(url: str, prefix: str, keys: list[str], fail_after_accept: float, start: Any, out: Any) -> None:
    """Child process: wait for the others, then submit ``keys``, retrying lost answers."""
    client = redis.Redis.from_url(url)
    broker = SimulatedBrokerage(client, prefix=prefix, fail_after_accept=fail_after_accept, fault_seed=os.getpid())
    start.wait()
    receipts = []
    for key in keys:
        while True:
            try:
                receipts.append(broker.submit(_order(key)).model_dump_json())
                break
            except BrokerageTimeout:
                continue  # the caller never heard back: submit again with the same key
    out.put(receipts)
    client.close()


def _run_processes(prefix: str, key_lists: list[list[str]], fail_after_accept: float) -> list[list[str]]:
    """Run one :func:`_submitter` process per key list (separate processes, each its own client).

    The processes come from a fork server that imported this module once (not each a fresh
    interpreter importing it again): as separate as spawned ones, without the repeated imports."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    start = ctx.Barrier(len(key_lists))
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_submitter, args=(REDIS_URL, prefix, keys, fail_after_accept, start, out))
        for keys in key_lists
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return results


def test_processes_submitting_the_same_key_place_one_order(pm_redis: redis.Redis, prefix: str) -> None:
    results = _run_processes(prefix, [["run-2025-06-02:A1:VTI:BUY"]] * 6, fail_after_accept=0.0)
    broker = SimulatedBrokerage(pm_redis, prefix=prefix)
    receipts = {BrokerReceipt.model_validate_json(r[0]) for r in results}
    assert len(receipts) == 1  # all six were told about the same order
    assert broker.accepted_orders() == list(receipts)
    assert broker.received_count() == 6


def test_retries_after_lost_answers_still_place_each_order_once(pm_redis: redis.Redis, prefix: str) -> None:
    keys = [f"run-2025-06-02:A{i}:VTI:BUY" for i in range(40)]
    lists = [random.Random(n).sample(keys, len(keys)) for n in range(4)]  # each process, its own order
    results = _run_processes(prefix, lists, fail_after_accept=0.3)
    broker = SimulatedBrokerage(pm_redis, prefix=prefix)
    accepted = broker.accepted_orders()
    assert sorted(r.idempotency_key for r in accepted) == sorted(keys)
    by_key = {r.idempotency_key: r for r in accepted}
    for receipts in results:
        for raw in receipts:
            receipt = BrokerReceipt.model_validate_json(raw)
            assert receipt == by_key[receipt.idempotency_key]
    assert broker.received_count() > 4 * len(keys)  # lost answers were retried, and counted


def test_threads_submitting_the_same_key_place_one_order(pm_redis: redis.Redis, prefix: str) -> None:
    broker = SimulatedBrokerage(pm_redis, prefix=prefix)
    barrier = threading.Barrier(32)
    receipts: list[BrokerReceipt] = []

    def go() -> None:
        barrier.wait()
        receipts.append(broker.submit(_order()))

    threads = [threading.Thread(target=go) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(broker.accepted_orders()) == 1
    assert broker.received_count() == 32
    assert len(set(receipts)) == 1
