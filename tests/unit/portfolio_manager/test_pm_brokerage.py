"""SimulatedBrokerage on fakeredis: fills, idempotency, key reuse, faults."""

from __future__ import annotations

import threading

import fakeredis
import pytest

from portfolio_manager.brokerage import BlockOrder, Brokerage, BrokerOrder, OrderStatus, SimulatedBrokerage
from portfolio_manager.errors import BrokerageTimeout, DuplicateOrder

PRICES = {"VTI": 250.0, "BND": 72.5}


def order(key: str = "run1:A1:VTI:BUY", **overrides: object) -> BrokerOrder:
    fields: dict = {
        "idempotency_key": key,
        "account_id": "A1",
        "symbol": "VTI",
        "side": "BUY",
        "quantity": 4,
        "est_price": 249.0,
    } | overrides
    return BrokerOrder(**fields)


@pytest.fixture
def broker(fake_redis: fakeredis.FakeRedis) -> SimulatedBrokerage:
    return SimulatedBrokerage(fake_redis, last_price=PRICES.get)


def test_is_a_brokerage(broker: SimulatedBrokerage) -> None:
    assert isinstance(broker, Brokerage)


def test_fills_at_the_last_price(broker: SimulatedBrokerage) -> None:
    receipt = broker.submit(order())
    assert receipt.status is OrderStatus.FILLED
    assert receipt.fill_price == 250.0 and receipt.filled_value == 1000.0
    assert receipt.order_id.startswith("SIM-") and receipt.accepted_at.tzinfo is not None


def test_without_a_last_price_it_fills_at_the_estimate(fake_redis: fakeredis.FakeRedis) -> None:
    assert SimulatedBrokerage(fake_redis).submit(order()).fill_price == 249.0


def test_same_key_twice_returns_the_original_and_places_one_order(broker: SimulatedBrokerage) -> None:
    first = broker.submit(order())
    PRICES_AFTER = {"VTI": 260.0}
    broker.last_price = PRICES_AFTER.get  # the market moved: a second fill would differ
    second = broker.submit(order())
    assert second == first
    assert broker.received_count() == 2
    assert broker.accepted_orders() == [first]
    assert broker.get_receipt(first.idempotency_key) == first


def test_distinct_keys_are_distinct_orders(broker: SimulatedBrokerage) -> None:
    a = broker.submit(order("k1"))
    b = broker.submit(order("k2", symbol="BND", side="SELL", quantity=10))
    assert [r.idempotency_key for r in broker.accepted_orders()] == ["k1", "k2"]
    assert a.order_id != b.order_id and b.filled_value == 725.0
    assert [o.idempotency_key for o in broker.received_orders()] == ["k1", "k2"]


@pytest.mark.parametrize("change", [{"quantity": 5}, {"side": "SELL"}, {"symbol": "BND"}, {"account_id": "A2"}])
def test_key_reused_for_another_order_is_refused(broker: SimulatedBrokerage, change: dict) -> None:
    broker.submit(order())
    with pytest.raises(DuplicateOrder, match="run1:A1:VTI:BUY"):
        broker.submit(order(**change))
    assert len(broker.accepted_orders()) == 1


def test_the_refusal_names_the_order_taken_and_the_one_refused(broker: SimulatedBrokerage) -> None:
    taken = broker.submit(order())
    with pytest.raises(DuplicateOrder) as info:
        broker.submit(order(side="SELL", quantity=5, account_id="A2"))
    assert str(info.value) == ("idempotency key 'run1:A1:VTI:BUY' was used for BUY 4 VTI in A1 "
                               f"(order {taken.order_id}), not SELL 5 VTI in A2")


def block(key: str = "run1:block:VTI:BUY", **overrides: object) -> BlockOrder:
    return BlockOrder(**({"idempotency_key": key, "symbol": "VTI", "side": "BUY", "quantity": 40, "accounts": 3,
                          "est_price": 249.0} | overrides))


def test_a_block_is_placed_once_per_key_and_a_reused_key_is_refused(broker: SimulatedBrokerage) -> None:
    first = broker.submit_block(block())
    assert first.status is OrderStatus.FILLED and first.filled_quantity == 40 and first.avg_price == 250.0
    assert broker.submit_block(block()) == first
    with pytest.raises(DuplicateOrder) as info:
        broker.submit_block(block(quantity=41))
    assert str(info.value) == (f"idempotency key 'run1:block:VTI:BUY' was used for the block BUY 40 VTI "
                               f"(order {first.order_id}), not BUY 41 VTI")
    assert broker.accepted_blocks() == [first] and broker.received_block_count() == 3
    assert broker.accepted_orders() == [] and broker.received_count() == 0  # blocks have keys of their own


def test_a_block_lost_before_or_after_delivery(broker: SimulatedBrokerage) -> None:
    broker.fail_before_accept = 1.0
    with pytest.raises(BrokerageTimeout, match=r"block run1:block:VTI:BUY: no answer .*not delivered"):
        broker.submit_block(block())
    assert broker.received_block_count() == 0 and broker.accepted_blocks() == []
    broker.fail_before_accept, broker.fail_after_accept = 0.0, 1.0
    with pytest.raises(BrokerageTimeout, match=r"block run1:block:VTI:BUY: no answer .*did record it"):
        broker.submit_block(block())
    broker.fail_after_accept = 0.0
    assert broker.accepted_blocks() == [broker.submit_block(block())]


def test_limit_not_met_is_rejected_and_recorded(broker: SimulatedBrokerage) -> None:
    buy = broker.submit(order("b", limit_price=240.0))
    sell = broker.submit(order("s", side="SELL", limit_price=255.0))
    ok = broker.submit(order("ok", limit_price=251.0))
    assert buy.status is sell.status is OrderStatus.REJECTED and "limit" in buy.reason
    assert buy.fill_price is None and ok.status is OrderStatus.FILLED
    assert broker.submit(order("b", limit_price=240.0)) == buy  # the answer for the key is final


def test_no_price_at_all_is_rejected(fake_redis: fakeredis.FakeRedis) -> None:
    receipt = SimulatedBrokerage(fake_redis).submit(order(est_price=None))
    assert receipt.status is OrderStatus.REJECTED and receipt.reason == "no price for VTI"


def test_accepted_but_answer_lost_then_retry_gets_the_original(broker: SimulatedBrokerage) -> None:
    broker.fail_after_accept = 1.0
    with pytest.raises(BrokerageTimeout, match="did record it") as info:
        broker.submit(order())
    assert info.value.retryable
    assert len(broker.accepted_orders()) == 1  # it was placed
    broker.fail_after_accept = 0.0
    receipt = broker.submit(order())
    assert broker.accepted_orders() == [receipt]
    assert broker.received_count() == 2


def test_lost_before_delivery_records_nothing(broker: SimulatedBrokerage) -> None:
    broker.fail_before_accept = 1.0
    with pytest.raises(BrokerageTimeout, match="not delivered"):
        broker.submit(order())
    assert broker.received_count() == 0 and broker.accepted_orders() == []


def test_fault_probability_is_seeded(fake_redis: fakeredis.FakeRedis) -> None:
    def outcomes(prefix: str) -> list[bool]:
        b = SimulatedBrokerage(fake_redis, prefix=prefix, fail_after_accept=0.5, fault_seed=3)
        out = []
        for i in range(40):
            try:
                b.submit(order(f"k{i}"))
                out.append(True)
            except BrokerageTimeout:
                out.append(False)
        return out

    first = outcomes("x:")
    assert first == outcomes("y:")
    assert 5 < first.count(False) < 35


def test_threads_submitting_one_key_place_one_order(fake_redis: fakeredis.FakeRedis) -> None:
    broker = SimulatedBrokerage(fake_redis, last_price=PRICES.get)
    barrier = threading.Barrier(16)
    receipts = []

    def go() -> None:
        barrier.wait()
        receipts.append(broker.submit(order()))

    threads = [threading.Thread(target=go) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(broker.accepted_orders()) == 1
    assert broker.received_count() == 16
    assert len({r.order_id for r in receipts}) == 1


def test_clear_deletes_only_its_keys(fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.set("pm:accounts", "book data")
    broker = SimulatedBrokerage(fake_redis)
    broker.submit(order())
    broker.clear()
    assert [k.decode() for k in fake_redis.keys("*")] == ["pm:accounts"]


def test_fills_at_the_books_last_price(fake_redis: fakeredis.FakeRedis) -> None:
    from portfolio_manager.brokerage import last_price_from
    from portfolio_manager.redis_book import RedisBook
    from tests.unit.portfolio_manager import data

    book = RedisBook(fake_redis, prefix="pm:")
    data.populate(book)
    broker = SimulatedBrokerage(fake_redis, last_price=last_price_from(book, data.AS_OF))
    receipt = broker.submit(order(symbol="VCN", est_price=1.0))
    assert receipt.fill_price == 47.30
    assert broker.submit(order("k2", symbol="XIC", est_price=35.5)).fill_price == 35.5  # unpriced: the estimate
