"""The benchmarks' sandbox (``bench.sandbox``): its engine starts instances as ``tradeflow pm run``
does on the default broker (the state's Redis), so that a benchmark's start is the user's."""

from __future__ import annotations

import json

from bench.sandbox import Sandbox
from engine.broker import RedisQueueEnqueuer
from engine.definitions.validation import load_definition
from engine.testing import enqueuer_of

ONE_STEP = {
    "name": "sandboxed",
    "start": "opened",
    "nodes": {
        "opened": {"type": "wait", "until": "timestamp('2025-01-01T00:00:00Z')", "next": "work"},
        "work": {"type": "service", "service": "svc", "action": "work", "input": {}, "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


def test_the_sandbox_engine_pushes_each_first_step_with_its_instance(redis_url: str) -> None:
    with Sandbox(redis_url) as sandbox:
        enqueuer = enqueuer_of(sandbox.engine)
        assert isinstance(enqueuer, RedisQueueEnqueuer)  # the store's scripts push, not Celery's send_task
        assert enqueuer.key_prefix == sandbox.broker_prefix
        sandbox.engine.publish(load_definition(json.dumps(ONE_STEP)))
        ids = sandbox.engine.start_many("sandboxed", [{} for _ in range(3)])  # the wait's time has come
        assert enqueuer.waiting(["svc"]) == 3
        assert all(sandbox.engine.get(iid).node == "work" for iid in ids)


def _other_db(url: str) -> str:
    """``url`` on the next database number of the same server (the sandbox's keys carry a prefix of their own)."""
    base, db = url.rsplit("/", 1)
    return f"{base}/{(int(db or 0) + 1) % 16}"


def test_a_sandbox_whose_book_has_a_redis_of_its_own_keeps_the_book_there_and_cleans_both(redis_url: str) -> None:
    from datetime import date

    from portfolio_manager.generator import seed_book

    book_url = _other_db(redis_url)
    sandbox = Sandbox(redis_url, pm_redis_url=book_url)
    engine_keys, book_keys = sandbox.client, sandbox.pm_client
    pattern = f"{sandbox.prefix}:*"
    try:
        assert sandbox.env()["TRADEFLOW_PM_REDIS_URL"] == book_url  # the workers' book is there too
        assert sandbox.pm_url == book_url
        seed_book(sandbox.services().book, 3, 7, date(2026, 12, 4))
        sandbox.engine.publish(load_definition(json.dumps(ONE_STEP)))
        assert any(key.startswith(sandbox.pm_prefix.encode()) for key in book_keys.scan_iter(match=pattern))
        assert not any(key.startswith(sandbox.pm_prefix.encode()) for key in engine_keys.scan_iter(match=pattern))
        assert any(engine_keys.scan_iter(match=pattern))  # the definition, on the engine's Redis
    finally:
        sandbox.close()
    with Sandbox(redis_url) as probe, Sandbox(book_url) as probe_book:
        assert probe.pm_url == redis_url and "TRADEFLOW_PM_REDIS_URL" not in probe.env()  # one Redis by default
        assert not list(probe.client.scan_iter(match=pattern))
        assert not list(probe_book.client.scan_iter(match=pattern))
