"""Block orders: the approved orders of a batch of accounts traded as one order per symbol and side.

``trade_blocks`` is the action of the rebalances' ``block`` gather node (one batch per run and
exchange). For the batch it:

1. moves each member's approved proposal to ``submitting`` (from then on it can no longer be
   rejected or expire; a proposal in any other state fails that member alone);
2. sums the orders per (symbol, side) into blocks -- a buy and a sell of the same symbol are two
   blocks, never netted across accounts -- and sends each block once, with its own key
   ``<batch id>:<symbol>:<side>`` (:func:`block_key`): the batch id is the same on every attempt
   and redelivery of the batch step, so the brokerage places each block once;
3. allocates each block's fill to its orders (:mod:`portfolio_manager.allocation`), and records
   each account's receipts on its proposal (``submitted``): per order its allocation, the
   block's key and order id, and the average price; a rejected block rejects its orders with
   the brokerage's reason;
4. answers ``ok`` per member with the counts its workflow's terminal shows.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ActionFailed
from engine.service import Transition, action
from portfolio_manager.allocation import Request, allocate
from portfolio_manager.brokerage import BlockOrder, BlockReceipt, OrderStatus
from portfolio_manager.errors import BrokerageError
from portfolio_manager.proposals import Proposal, ProposalStatus, ProposedOrder
from portfolio_manager.services import services

SERVICE = "portfolio_manager"


class BlockMember(BaseModel):
    """What one account brings to the block: which proposal, and whether it takes fractional shares."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    fractional: bool = False


@dataclass(frozen=True)
class Leg:
    """One account's order inside a block."""

    instance_id: str
    proposal: Proposal
    order: ProposedOrder
    fractional: bool

    @property
    def request(self) -> Request:
        """Its claim on the block's fill."""
        return Request((self.proposal.account_id, self.order.index), self.order.quantity, self.fractional)


def block_key(batch_id: str, symbol: str, side: str) -> str:
    """The idempotency key of the block of ``symbol``/``side`` in batch ``batch_id``."""
    return f"{batch_id}:{symbol}:{side}"


def build_blocks(legs: list[Leg]) -> dict[tuple[str, str], list[Leg]]:
    """The legs grouped per (symbol, side), sorted by key so that blocks go out in a stable order."""
    blocks: dict[tuple[str, str], list[Leg]] = defaultdict(list)
    for leg in legs:
        if leg.order.quantity > 0:
            blocks[(leg.order.symbol, leg.order.side)].append(leg)
    return dict(sorted(blocks.items()))


def block_order(key: str, legs: list[Leg]) -> BlockOrder:
    """The brokerage order of one block: the legs' summed quantity, at their value-weighted price."""
    quantity = sum(leg.order.quantity for leg in legs)
    value = sum(leg.order.est_value for leg in legs)
    quantity = round(quantity, 6)
    first = legs[0].order
    return BlockOrder(idempotency_key=key, symbol=first.symbol, side=first.side, quantity=quantity,
                      accounts=len({leg.proposal.account_id for leg in legs}),
                      est_price=round(value / quantity, 6) if quantity and value > 0 else None)


def leg_receipts(key: str, legs: list[Leg], receipt: BlockReceipt) -> list[dict[str, Any]]:
    """Each leg's receipt: its allocation of the block's fill (pro rata, largest remainder)."""
    allocation = allocate(receipt.filled_quantity, [leg.request for leg in legs])
    out = []
    for leg, quantity in zip(legs, allocation.quantities, strict=True):
        asked = leg.order.quantity
        if receipt.status is OrderStatus.REJECTED:
            status, reason = OrderStatus.REJECTED, receipt.reason
        elif quantity == asked:
            status, reason = OrderStatus.FILLED, ""
        elif quantity > 0:
            status, reason = OrderStatus.PARTIALLY_FILLED, f"{quantity:g} of {asked:g} allocated ({receipt.reason})"
        else:
            status, reason = OrderStatus.REJECTED, f"nothing allocated ({receipt.reason})"
        price = receipt.avg_price if quantity > 0 else None
        out.append({"order_id": receipt.order_id, "idempotency_key": key, "block": key, "index": leg.order.index,
                    "account_id": leg.proposal.account_id, "symbol": leg.order.symbol, "side": leg.order.side,
                    "requested": asked, "quantity": quantity, "status": status.value, "fill_price": price,
                    "avg_price": price, "filled_value": round(price * quantity, 2) if price else None,
                    "reason": reason, "accepted_at": receipt.accepted_at.isoformat()})
    return out


def _rejected(key: str, legs: list[Leg], reason: str) -> list[dict[str, Any]]:
    return [{"order_id": None, "idempotency_key": key, "block": key, "index": leg.order.index,
             "account_id": leg.proposal.account_id, "symbol": leg.order.symbol, "side": leg.order.side,
             "requested": leg.order.quantity, "quantity": 0, "status": OrderStatus.REJECTED.value,
             "fill_price": None, "avg_price": None, "filled_value": None, "reason": reason} for leg in legs]


def _take_proposals(members: list[tuple[str, BlockMember]], batch_id: str,
                    answers: dict[str, Any]) -> dict[str, tuple[Proposal, bool]]:
    """Each member's proposal, moved to ``submitting``; members whose proposal cannot be are answered failed."""
    store = services().proposals
    by_run: dict[str, list[tuple[str, BlockMember]]] = defaultdict(list)
    for iid, member in members:
        by_run[member.run].append((iid, member))
    found: dict[str, Proposal] = {}
    for run, group in by_run.items():
        proposals = {p.account_id: p for p in store.get_many(run, [m.account_id for _, m in group])}
        for iid, member in group:
            if member.account_id in proposals:
                found[iid] = proposals[member.account_id]
            else:
                answers[iid] = ActionFailed(f"no proposal for account {member.account_id} in run {member.run}")
    todo = [(iid, p) for iid, p in found.items() if p.status is ProposalStatus.APPROVED]
    moved = store.transition_many([(p.run, p.account_id, ProposalStatus.SUBMITTING, {"submission": batch_id})
                                   for _, p in todo])
    taken: dict[str, tuple[Proposal, bool]] = {}
    for (iid, p), (done, status) in zip(todo, moved, strict=True):
        if done:
            taken[iid] = (p, False)
        else:
            answers[iid] = ActionFailed(f"proposal {p.run}/{p.account_id} is {status}, not approved")
    for iid, p in found.items():
        if p.status in (ProposalStatus.SUBMITTING, ProposalStatus.SUBMITTED) and p.submission == batch_id:
            taken[iid] = (p, p.status is ProposalStatus.SUBMITTED)  # a retry of this batch's step
        elif iid not in taken and iid not in answers:
            answers[iid] = ActionFailed(f"proposal {p.run}/{p.account_id} is {p.status.value}, not approved "
                                        f"(submission {p.submission or 'none'})")
    return taken


@action(SERVICE, "trade_blocks")
def trade_blocks(batch: dict[str, Any]) -> dict[str, Any]:
    """Trade a batch's approved orders as one block per (symbol, side); answer each account with its receipts."""
    svc = services()
    batch_id = batch["batch"]["id"]
    answers: dict[str, Any] = {}
    members: list[tuple[str, BlockMember]] = []
    for entry in batch["members"]:
        try:
            members.append((entry["instance"], BlockMember.model_validate(entry["input"])))
        except ValueError as exc:
            answers[entry["instance"]] = ActionFailed(f"trade_blocks: bad contribution: {exc}")
    taken = _take_proposals(members, batch_id, answers)
    fractional = {iid: m.fractional for iid, m in members}
    legs = [Leg(iid, p, order, fractional[iid]) for iid, (p, _) in sorted(taken.items()) for order in p.orders]
    receipts: dict[str, list[dict[str, Any]]] = {iid: [] for iid in taken}
    for (symbol, side), block_legs in build_blocks(legs).items():
        key = block_key(batch_id, symbol, side)
        try:
            receipt = svc.brokerage.submit_block(block_order(key, block_legs))
        except BrokerageError as exc:
            if exc.retryable:
                raise  # the node's retry policy sends the batch step again: same keys
            mine = _rejected(key, block_legs, str(exc))
        else:
            mine = leg_receipts(key, block_legs, receipt)
        for leg, leg_receipt in zip(block_legs, mine, strict=True):
            receipts[leg.instance_id].append(leg_receipt)
    marks = [(p.run, p.account_id, ProposalStatus.SUBMITTED,
              {"receipts": sorted(receipts[iid], key=lambda r: r["index"]), "submission": batch_id,
               "submitted_at": repr(time.time())})
             for iid, (p, _) in taken.items()]
    svc.proposals.transition_many(marks)
    for iid in taken:
        mine = receipts[iid]
        filled = sum(1 for r in mine if r["status"] == OrderStatus.FILLED.value)
        partial = sum(1 for r in mine if r["status"] == OrderStatus.PARTIALLY_FILLED.value)
        answers[iid] = Transition("ok", {
            "orders": len(mine), "filled": filled, "partial": partial, "rejected": len(mine) - filled - partial,
            "filled_value": round(sum(r["filled_value"] or 0.0 for r in mine), 2), "batch": batch_id,
            "blocks": sorted({r["block"] for r in mine})})
    return answers


__all__ = ["BlockMember", "Leg", "block_key", "block_order", "build_blocks", "leg_receipts", "trade_blocks"]
