"""The block orders a batch page shows: planned from the approved proposals, then summed from the receipts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest

from engine.api import Batch, BatchView
from portfolio_manager.block_view import batch_sections, block_lines
from portfolio_manager.blocks import Leg, block_key, leg_receipts
from portfolio_manager.brokerage import BlockReceipt, OrderStatus
from portfolio_manager.proposals import ProposalStatus, ProposalStore, proposal_from_plan
from portfolio_manager.services import Services, use_services

BATCH = "run-1:XNYS#1"


@pytest.fixture
def store() -> Iterator[ProposalStore]:
    proposals = ProposalStore(fakeredis.FakeRedis(), prefix="t:prop:")
    use_services(Services(book=None, proposals=proposals, brokerage=None))  # type: ignore[arg-type]
    try:
        yield proposals
    finally:
        use_services(None)


def propose(store: ProposalStore, account: str, orders: list[dict[str, Any]], approve: bool = True) -> None:
    plan = {"orders": [{"reason": "rebalance", "lots": None, **o} for o in orders]}
    store.record(proposal_from_plan(run="run-1", account={"id": account, "region": "US", "type": "TAXABLE"},
                                    as_of="2026-12-04", workflow="rebalance-us", version=1,
                                    instance_id=f"i-{account}", plan=plan))
    if approve:
        assert store.transition("run-1", account, ProposalStatus.APPROVED, decided_by="paula")[0]


def members(*accounts: str) -> list[tuple[str, Any]]:
    return [(f"i-{a}", {"run": "run-1", "account_id": a, "fractional": False}) for a in accounts]


def test_before_the_batch_trades_the_approved_orders_make_the_blocks_to_send(store: ProposalStore) -> None:
    propose(store, "A", [{"side": "BUY", "symbol": "VTI", "quantity": 10, "est_value": 2000.0}])
    propose(store, "B", [{"side": "BUY", "symbol": "VTI", "quantity": 5, "est_value": 1000.0},
                         {"side": "SELL", "symbol": "BND", "quantity": 3, "est_value": 210.0}])
    propose(store, "C", [{"side": "BUY", "symbol": "VTI", "quantity": 99, "est_value": 9900.0}], approve=False)
    lines = block_lines(BATCH, members("A", "B", "C"))
    assert [(x.key, x.accounts, x.requested, x.avg_price, x.status) for x in lines] == [
        (block_key(BATCH, "BND", "SELL"), 1, 3, 70.0, "to send"),
        (block_key(BATCH, "VTI", "BUY"), 2, 15, 200.0, "to send")]  # C is not approved: not in a block


def test_once_traded_each_block_sums_its_accounts_receipts(store: ProposalStore) -> None:
    propose(store, "A", [{"side": "BUY", "symbol": "VTI", "quantity": 10, "est_value": 2000.0}])
    propose(store, "B", [{"side": "BUY", "symbol": "VTI", "quantity": 10, "est_value": 2000.0}])
    proposals = {p.account_id: p for p in store.get_many("run-1", ["A", "B"])}
    key = block_key(BATCH, "VTI", "BUY")
    legs = [Leg(f"i-{a}", p, p.orders[0], False) for a, p in sorted(proposals.items())]
    receipt = BlockReceipt(order_id="o-1", idempotency_key=key, symbol="VTI", side="BUY", quantity=20,
                           filled_quantity=15, status=OrderStatus.PARTIALLY_FILLED, avg_price=201.0,
                           reason="thin market", accepted_at=datetime.now(UTC))
    receipts = leg_receipts(key, legs, receipt)
    for account, mine in zip(("A", "B"), receipts, strict=True):
        store.transition("run-1", account, ProposalStatus.SUBMITTING, submission=BATCH)
        store.transition("run-1", account, ProposalStatus.SUBMITTED, receipts=[mine], submission=BATCH)
    [line] = block_lines(BATCH, members("A", "B"))
    assert (line.accounts, line.requested, line.filled, line.avg_price, line.status) == (
        2, 20, 15, 201.0, OrderStatus.PARTIALLY_FILLED.value)
    assert "thin market" in line.reason and line.value == 15 * 201.0


def test_the_console_section_is_only_for_trade_blocks_batches(store: ProposalStore) -> None:
    propose(store, "A", [{"side": "BUY", "symbol": "VTI", "quantity": 10, "est_value": 2000.0}])
    fields: dict[str, Any] = {"id": BATCH, "name": "run-1:XNYS", "group": "run-1:XNYS", "status": "open",
                              "node": "block", "workflow": "rebalance-us", "version": 1, "opened_at": 1.0,
                              "close_at": 2.0, "close_early": True, "attempt": 1, "members": 1}
    blocks = BatchView(Batch(service="portfolio_manager", action="trade_blocks", **fields), members("A"),
                       ["run-1"], [])
    [section] = batch_sections(blocks)
    assert section.rows[0][:4] == ["VTI", "BUY", 1, 10] and "Not sent yet" in section.note
    other = BatchView(Batch(service="svc", action="total", **fields), members("A"), ["run-1"], [])
    assert batch_sections(other) == []
