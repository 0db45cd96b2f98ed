"""What the platform keeps in Redis is bounded: proposals and the simulated brokerage's records expire
with the retention (on fakeredis and a real Redis), and their indexes are trimmed."""

from __future__ import annotations

import time
from datetime import date

import redis

from portfolio_manager.brokerage import BrokerOrder, SimulatedBrokerage
from portfolio_manager.config import PMSettings
from portfolio_manager.proposals import Proposal, ProposalStore


def proposal(run: str, account: str) -> Proposal:
    return Proposal(run=run, account_id=account, region="CA", account_type="TFSA", as_of=date(2026, 11, 20),
                    workflow="rebalance-ca", version=1, instance_id=f"{run}-{account}", mode="rebalance", orders=[],
                    recorded_at=time.time())


def test_a_proposal_and_its_runs_account_set_expire_with_the_retention(any_redis: redis.Redis,
                                                                        key_prefix: str) -> None:
    store = ProposalStore(any_redis, f"{key_prefix}:prop:", retention_seconds=600)
    store.record(proposal("day1", "A1"))
    assert 0 < any_redis.ttl(store.key("day1", "A1")) <= 600
    assert 0 < any_redis.ttl(store.accounts_key("day1")) <= 600
    assert store.runs() == ["day1"]


def test_the_runs_index_loses_runs_whose_proposals_expired_when_a_new_run_records(any_redis: redis.Redis,
                                                                                   key_prefix: str) -> None:
    short = ProposalStore(any_redis, f"{key_prefix}:prop:", retention_seconds=1)
    store = ProposalStore(any_redis, f"{key_prefix}:prop:", retention_seconds=600)
    short.record(proposal("day1", "A1"))
    store.record(proposal("kept", "A1"))
    deadline = time.monotonic() + 10
    while any_redis.exists(store.accounts_key("day1")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(store.runs()) == ["day1", "kept"]
    store.record(proposal("day2", "A1"))
    assert sorted(store.runs()) == ["day2", "kept"]
    assert 0 < any_redis.ttl(store.runs_key) <= 600  # the index itself goes a retention after the last record


def test_the_brokerage_forgets_receipts_and_deliveries_past_the_retention(any_redis: redis.Redis,
                                                                          key_prefix: str) -> None:
    broker = SimulatedBrokerage(any_redis, f"{key_prefix}:broker:", retention_seconds=60)
    first = broker.submit(BrokerOrder(idempotency_key="k1", account_id="A1", symbol="VTI", side="BUY", quantity=1,
                                      est_price=10.0))
    assert broker.submit(BrokerOrder(idempotency_key="k1", account_id="A1", symbol="VTI", side="BUY", quantity=1,
                                     est_price=10.0)).order_id == first.order_id  # within the retention: once
    broker.submit(BrokerOrder(idempotency_key="k2", account_id="A1", symbol="VTI", side="SELL", quantity=1,
                              est_price=10.0))
    assert broker.received_count() == 3 and len(broker.accepted_orders()) == 2
    assert 0 < any_redis.ttl(broker.orders_key) <= 60  # the records go wholesale a retention after the last
    assert broker.trim(now=time.time() + 30, every=0) == 0  # nothing is older than a minute yet
    assert broker.trim(now=time.time() + 120, every=0) == 5  # two receipts, three deliveries
    assert broker.received_count() == 0 and broker.accepted_orders() == []
    broker.clear()
    assert not any_redis.keys(f"{key_prefix}:broker:*")


def test_the_settings_carry_the_engines_retention() -> None:
    assert PMSettings.from_env({"TRADEFLOW_RETENTION_DAYS": "0.5"}).retention_seconds == 43200
    assert PMSettings.from_env({}).retention_days == 14.0
