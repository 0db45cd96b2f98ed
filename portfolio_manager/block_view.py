"""What a batch of the rebalances' ``block`` gather node holds, in trading terms: its block orders.

:func:`block_lines` reads the members' proposals (each member brought its run and account id,
:class:`portfolio_manager.blocks.BlockMember`): once traded, one line per block (the key
``<batch>:<symbol>:<side>``) with what was asked, what filled, the average price and the
brokerage's status, summed from the accounts' receipts; before, the blocks the approved
proposals would make (:func:`portfolio_manager.blocks.build_blocks`), marked ``to send``.
:func:`batch_sections` is the console's ``batch_detail`` hook over it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from console.batches import BatchSection
from engine.api import BatchView
from portfolio_manager.blocks import SERVICE, BlockMember, Leg, block_key, build_blocks
from portfolio_manager.brokerage import OrderStatus
from portfolio_manager.proposals import Proposal, ProposalStatus
from portfolio_manager.services import services

TRADED = (ProposalStatus.SUBMITTING, ProposalStatus.SUBMITTED)


@dataclass(frozen=True)
class BlockLine:
    """One block order of a batch: what was asked, what filled, at what price, its status."""

    key: str
    symbol: str
    side: str
    accounts: int
    requested: float
    filled: float
    avg_price: float | None
    value: float | None
    #: to send (planned), filled, partially_filled or rejected.
    status: str
    reason: str = ""


def _members(contributions: Iterable[tuple[str, Any]]) -> dict[str, list[str]]:
    by_run: dict[str, list[str]] = defaultdict(list)
    for _, contribution in contributions:
        try:
            member = BlockMember.model_validate(contribution)
        except ValueError:
            continue  # a bad contribution fails its member alone, and trades nothing
        by_run[member.run].append(member.account_id)
    return by_run


def _traded(batch_id: str, proposals: list[Proposal]) -> list[BlockLine]:
    receipts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in proposals:
        for receipt in p.receipts:
            if p.submission == batch_id and receipt.get("block"):
                receipts[receipt["block"]].append(receipt)
    lines = []
    for key, legs in sorted(receipts.items()):
        filled = round(sum(float(r.get("quantity") or 0) for r in legs), 6)
        value = round(sum(float(r.get("filled_value") or 0) for r in legs), 2)
        statuses = {r.get("status") for r in legs}
        status = (OrderStatus.REJECTED.value if statuses == {OrderStatus.REJECTED.value}
                  else OrderStatus.FILLED.value if statuses == {OrderStatus.FILLED.value}
                  else OrderStatus.PARTIALLY_FILLED.value)
        reasons = sorted({str(r.get("reason")) for r in legs if r.get("reason")})
        lines.append(BlockLine(key, legs[0]["symbol"], legs[0]["side"], len({r["account_id"] for r in legs}),
                               round(sum(float(r.get("requested") or 0) for r in legs), 6), filled,
                               round(value / filled, 6) if filled else None, value if filled else None, status,
                               reasons[0] if len(reasons) == 1 else "; ".join(reasons)[:200]))
    return lines


def _planned(batch_id: str, proposals: list[Proposal]) -> list[BlockLine]:
    legs = [Leg(p.instance_id, p, order, False) for p in proposals if p.status is ProposalStatus.APPROVED
            for order in p.orders]
    lines = []
    for (symbol, side), block in build_blocks(legs).items():
        quantity = round(sum(leg.order.quantity for leg in block), 6)
        value = round(sum(leg.order.est_value for leg in block), 2)
        lines.append(BlockLine(block_key(batch_id, symbol, side), symbol, side,
                               len({leg.proposal.account_id for leg in block}), quantity, 0.0,
                               round(value / quantity, 6) if quantity else None, value, "to send"))
    return lines


def block_lines(batch_id: str, contributions: Iterable[tuple[str, Any]]) -> list[BlockLine]:
    """The block orders of batch ``batch_id`` from its members' proposals (traded, else to send)."""
    store = services().proposals
    proposals = [p for run, accounts in _members(contributions).items() for p in store.get_many(run, accounts)]
    traded = [p for p in proposals if p.status in TRADED and p.submission == batch_id]
    return _traded(batch_id, traded) if traded else _planned(batch_id, proposals)


def batch_sections(view: BatchView) -> list[BatchSection]:
    """The console's ``batch_detail`` hook: the block orders of a ``trade_blocks`` batch (nothing for others)."""
    b = view.batch
    if (b.service, b.action) != (SERVICE, "trade_blocks"):
        return []
    lines = block_lines(b.id, view.contributions)
    sent = any(line.status != "to send" for line in lines)
    note = ("One order per symbol and side was sent for the whole batch; each account got its share of the fill "
            "(pro rata, largest remainder)." if sent else
            "Not sent yet: the orders the approved accounts would trade together when the batch closes "
            "(estimated prices).")
    columns = ["Symbol", "Side", "Accounts", "Quantity asked", "Filled", "Avg price", "Value", "Status", "Reason"]
    rows: list[list[Any]] = [[line.symbol, line.side, line.accounts, line.requested, line.filled if sent else None,
                              line.avg_price, line.value, line.status, line.reason] for line in lines]
    return [BatchSection("Block orders and fills", columns, rows, note,
                         frozenset({"Accounts", "Quantity asked", "Filled", "Avg price", "Value"}),
                         frozenset({"Avg price", "Value"}))]


__all__ = ["BlockLine", "batch_sections", "block_lines"]
