"""Block orders on real Redis with real worker fleets: the morning's approved accounts trade together.

Uses the fleets of ``test_morning`` (one set for this module). Each test starts its own run with
the review's deadline a day away (``review_until``). Pins: a decided morning sends one brokerage
order per (exchange, symbol, side), and every account gets its receipts (its allocation, the
block, the average price); a partial fill is allocated pro rata by largest remainder and a halted
symbol's block rejects its orders with the reason; an approval after its block closed trades on
its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from engine.instance import InstanceStatus
from engine.testing import store_of
from portfolio_manager import review
from portfolio_manager.allocation import Request, allocate
from portfolio_manager.blocks import block_key
from portfolio_manager.brokerage import OrderStatus
from portfolio_manager.daily import instance_id_for, start_daily_rebalance
from portfolio_manager.proposals import ProposalStatus
from tests.integration.test_morning import ITEST, Morning, approve, morning_fleets, review_until

pytestmark = pytest.mark.integration
EXCHANGE = {"CA": "XTSE", "US": "XNYS"}


@pytest.fixture(scope="module")
def morning(redis_url: str) -> Iterator[Morning]:
    """Fleets and a book of this module's own (as ``test_morning``'s)."""
    with morning_fleets(redis_url) as found:
        yield found


def planned(m: Morning, run: str, **options: object) -> list[str]:
    """Start ``run`` and wait until it is planned; the accounts awaiting review."""
    start_daily_rebalance(m.engine, m.svc.book, m.run_date, run=run, wait_for_open=False,
                          review_until=review_until(), **options)  # type: ignore[arg-type]
    m.wait_run(run, timeout=120, settled=True)
    return [p.account_id for p in review.pending(m.engine, m.svc.proposals, run)]


def wait_terminal(m: Morning, run: str, accounts: list[str], timeout: float = 120) -> None:
    ids = [instance_id_for(run, a) for a in accounts]
    m.wait_until(lambda: all(i.status.is_terminal for i in store_of(m.engine).load_many(ids)), timeout, f"{run} to end")


def blocks_of(m: Morning, run: str) -> dict[str, object]:
    """The brokerage's accepted blocks of ``run`` (their keys name the run's batches), by key."""
    return {r.idempotency_key: r for r in m.svc.brokerage.accepted_blocks()  # type: ignore[attr-defined]
            if f":{run}:" in r.idempotency_key}


def test_a_decided_morning_trades_one_order_per_exchange_symbol_and_side(morning: Morning) -> None:
    m, run = morning, "blocks-morning"
    waiting = planned(m, run)
    assert len(waiting) > 100
    rejected, approved = waiting[:5], waiting[5:]
    approve(m, run, approved)
    for iid in [instance_id_for(run, a) for a in approved[:3]]:
        assert m.engine.get(iid).status in (InstanceStatus.GATHERING, InstanceStatus.RUNNING,
                                            InstanceStatus.SUCCEEDED)
    assert review.reject(m.engine, m.svc.proposals, run, rejected, by=ITEST, reason="hold").changed == rejected
    wait_terminal(m, run, approved)  # the last decision leaves nothing to decide: each exchange's block closes
    proposals = m.svc.proposals.get_many(run, approved)
    expected = {(EXCHANGE[p.region], o.symbol, o.side) for p in proposals for o in p.orders}
    blocks = blocks_of(m, run)
    assert len(blocks) == len(expected)  # one brokerage order per (exchange, symbol, side)
    assert {(k.rsplit(":", 3)[1].split("#")[0], k.rsplit(":", 2)[1], k.rsplit(":", 1)[1]) for k in blocks} == expected
    assert not [r for r in m.svc.brokerage.accepted_orders()  # type: ignore[attr-defined]
                if r.idempotency_key.startswith(tuple(f"{instance_id_for(run, a)}:" for a in approved))]
    allocated: dict[str, float] = defaultdict(float)
    for p in proposals:
        assert p.status is ProposalStatus.SUBMITTED and len(p.receipts) == len(p.orders)
        for receipt, order in zip(p.receipts, p.orders, strict=True):
            block = blocks[receipt["block"]]
            assert receipt["block"] == block_key(p.submission, order.symbol, order.side)  # type: ignore[arg-type]
            assert receipt["order_id"] == block.order_id and receipt["avg_price"] == block.avg_price
            assert receipt["quantity"] == receipt["requested"] == order.quantity  # a full fill: all asked
            allocated[receipt["block"]] += receipt["quantity"]
        instance = m.engine.get(instance_id_for(run, p.account_id))
        assert instance.status is InstanceStatus.SUCCEEDED and instance.result["outcome"] == "filled"
        assert instance.result["block_batch"] == p.submission
    assert allocated == pytest.approx({k: b.filled_quantity for k, b in blocks.items()})
    batches = {p.submission for p in proposals}
    assert len(batches) == len({p.region for p in proposals})  # one batch per exchange
    for batch_id in batches:
        view = m.engine.batch(batch_id)  # type: ignore[arg-type]
        assert view.batch.status == "applied" and view.batch.close_reason.startswith("early")
        assert view.batch.members == sum(1 for p in proposals if p.submission == batch_id)
    for account in rejected:
        assert m.engine.get(instance_id_for(run, account)).result["outcome"] == "rejected"


def test_a_partial_fill_is_allocated_pro_rata_and_a_halted_symbol_is_rejected(morning: Morning) -> None:
    m, run = morning, "blocks-partial"
    waiting = planned(m, run, regions=["CA"], limit=60)
    proposals = m.svc.proposals.get_many(run, waiting)
    legs: dict[tuple[str, str], list[tuple[str, int, float]]] = defaultdict(list)
    for p in proposals:
        for o in p.orders:
            legs[(o.symbol, o.side)].append((p.account_id, o.index, o.quantity))
    other = {"BUY": "SELL", "SELL": "BUY"}
    one_sided = [k for k in legs if (k[0], other[k[1]]) not in legs]  # liquidity and halts are per symbol
    shared = sorted((k for k in one_sided if len(legs[k]) >= 3), key=lambda k: (-len(legs[k]), k))
    assert len(shared) >= 2, legs
    (thin, thin_side), (halted, halted_side) = shared[0], shared[1]
    total = sum(q for _, _, q in legs[(thin, thin_side)])
    liquidity = int(total * 0.6)
    brokerage = m.svc.brokerage
    brokerage.set_liquidity(thin, liquidity)  # type: ignore[attr-defined]
    brokerage.halt(halted, "trading halted by the exchange")  # type: ignore[attr-defined]
    try:
        approve(m, run, waiting)
        wait_terminal(m, run, waiting)
    finally:
        brokerage.set_liquidity(thin, None)  # type: ignore[attr-defined]
        brokerage.halt(halted, None)  # type: ignore[attr-defined]
    after = {p.account_id: p for p in m.svc.proposals.get_many(run, waiting)}
    receipts = {(r["account_id"], r["index"]): r for p in after.values() for r in p.receipts}
    thin_legs = legs[(thin, thin_side)]
    expected = allocate(liquidity, [Request((a, i), q) for a, i, q in thin_legs]).quantities
    got = [receipts[(a, i)]["quantity"] for a, i, _ in thin_legs]
    assert got == expected and sum(got) == liquidity  # pro rata, largest remainder, the fill exactly
    assert all(q <= asked for q, (_, _, asked) in zip(got, thin_legs, strict=True))
    assert {receipts[(a, i)]["status"] for a, i, q in thin_legs} <= {OrderStatus.PARTIALLY_FILLED.value,
                                                                    OrderStatus.FILLED.value,
                                                                    OrderStatus.REJECTED.value}
    assert any(receipts[(a, i)]["status"] == OrderStatus.PARTIALLY_FILLED.value for a, i, _ in thin_legs)
    for account, index, _ in legs[(halted, halted_side)]:
        receipt = receipts[(account, index)]
        assert receipt["status"] == OrderStatus.REJECTED.value and receipt["quantity"] == 0
        assert "trading halted by the exchange" in receipt["reason"]
        result = m.engine.get(instance_id_for(run, account)).result
        assert result["outcome"] == "partly_rejected" and result["rejected"] >= 1
    short = {a for a, i, _ in thin_legs if receipts[(a, i)]["status"] == OrderStatus.PARTIALLY_FILLED.value}
    for account in short:  # a short fill says so in the outcome, not only in a count
        mine = [r["status"] for r in after[account].receipts]
        result = m.engine.get(instance_id_for(run, account)).result
        expected = "partly_rejected" if OrderStatus.REJECTED.value in mine else "partly_filled"
        assert result["outcome"] == expected and result["partial"] >= 1
    assert any(m.engine.get(instance_id_for(run, a)).result["outcome"] == "partly_filled" for a in short)


def test_a_member_cancelled_in_its_block_shows_cancelled_and_nothing_is_sent_for_it(morning: Morning) -> None:
    m, run = morning, "blocks-cancel"
    waiting = [a for a in planned(m, run, regions=["CA"], limit=12) if m.svc.proposals.get(run, a).orders]
    traded, cancelled, rest = waiting[0], waiting[1], waiting[2:]
    approve(m, run, [traded, cancelled])
    ids = [instance_id_for(run, a) for a in (traded, cancelled)]
    m.wait_until(lambda: all(m.engine.get(i).status is InstanceStatus.GATHERING for i in ids), 60, "the block")
    m.engine.cancel(ids[1], "client closed the account")
    assert review.proposal(m.engine, m.svc.proposals, run, cancelled).status is ProposalStatus.CANCELLED
    if rest:  # nothing left to decide: the block closes early
        assert review.reject(m.engine, m.svc.proposals, run, rest, by=ITEST, reason="hold").changed == rest
    wait_terminal(m, run, [traded])
    assert review.proposal(m.engine, m.svc.proposals, run, traded).status is ProposalStatus.SUBMITTED
    assert review.proposal(m.engine, m.svc.proposals, run, cancelled).status is ProposalStatus.CANCELLED
    assert m.engine.get(ids[1]).status is InstanceStatus.CANCELLED
    blocks = blocks_of(m, run)
    mine = m.svc.proposals.get(run, traded)
    assert {(b.symbol, b.side.value) for b in blocks.values()} == {(o.symbol, o.side) for o in mine.orders}
    for block in blocks.values():  # each block is the traded account's order alone
        assert block.quantity == sum(o.quantity for o in mine.orders if (o.symbol, o.side) == (block.symbol,
                                                                                                 block.side.value))


def test_an_approval_after_its_block_closed_trades_on_its_own(morning: Morning) -> None:
    m, run = morning, "blocks-late"
    # The block's close time is already past: the first arrival opens it and the next tick closes it.
    waiting = planned(m, run, regions=["CA"], limit=20, block_until=datetime.now(UTC) - timedelta(minutes=1))
    on_time = [a for a in waiting if m.svc.proposals.get(run, a).orders][:1]
    late = [a for a in waiting if a not in on_time and len(m.svc.proposals.get(run, a).orders) >= 2][:1]
    approve(m, run, on_time)
    wait_terminal(m, run, on_time)
    first = m.svc.proposals.get(run, on_time[0])
    assert first.status is ProposalStatus.SUBMITTED and first.receipts[0]["block"]
    approve(m, run, late)  # its group's batch has closed: `late` sends it to its own submission
    wait_terminal(m, run, late)
    instance = m.engine.get(instance_id_for(run, late[0]))
    assert instance.status is InstanceStatus.SUCCEEDED and instance.result["outcome"] in ("filled", "partly_filled",
                                                                                       "partly_rejected")
    assert instance.result["block_batch"] == "" and "block" not in instance.context and "submit" in instance.context
    recorded = [a for a in m.engine.activities(instance.id) if a["node"] == "record_approval"][-1]
    assert recorded["via"][-1] == "block" and recorded["next"] == "submit"  # after the decision was recorded
    proposal = m.svc.proposals.get(run, late[0])
    keys = [r["idempotency_key"] for r in proposal.receipts]
    assert len(keys) == len(proposal.orders) and all(k.startswith(f"{instance.id}:submit:") for k in keys)
    assert len(blocks_of(m, run)) == len({(o.symbol, o.side) for o in first.orders})  # nothing of it in a block
