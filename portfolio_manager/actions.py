"""The portfolio manager's service actions, called by the workflows (queue ``portfolio_manager``).

Each action is a plain function: typed input in, a transition out. Where the book, the
proposals and the brokerage live is decided at the edge (:class:`Services`, built from
:class:`~portfolio_manager.config.PMSettings` on first use, or handed in by a test with
:func:`use_services`); the actions never see an engine key.

- ``fetch_holdings``: cash, lots and the household's trades of ``lookback_days`` (the
  definition's parameter: 30 days in Canada, a calendar year in the US). ``closed`` for a
  closed account.
- ``fetch_target``: the account's model portfolio and the prices it needs, turned into the
  order calculation's request (with the definition's planning parameters; an optional
  ``deposit`` not yet in the book is added to the cash).
- ``record_proposal``: the endpoint a workflow dumps its plan into; with ``review`` terms (the
  cut-off and the four-eyes threshold) the proposal is reviewed inside the workflow. A shadow
  instance's proposal goes to the shadow namespace (never the review queue) and expires with
  its run (:mod:`portfolio_manager.shadow`); its orders, should it ever reach ``submit_orders``,
  are refused by the brokerage adapter.
- ``submit_orders``: send an approved proposal's orders to the brokerage, each with the
  idempotency key ``<instance>:<node>:<seq>:<order index>`` -- the same on every redelivery or
  retry of the step, so the brokerage never places an order twice.
- ``record_decision``: the engine applied the review's decision (the quorum of approvals, or a
  rejection): write it on the proposal, with who sent it. The only writer of a decision on a
  proposal reviewed in its workflow.
- ``expire_proposal``: the review's cut-off passed without a decision: the proposal expires
  (and can never be submitted).

Errors: a book error that another attempt can fix (``SourceUnavailable``,
``BrokerageTimeout``) is raised as is, so the node's retry policy applies; any other
(unknown or closed account, missing price, model of another region...) fails that account's
instance at once with the reason, and never stops the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import ActionFailed
from engine.service import Transition, action, ok
from portfolio_manager import blocks as _blocks  # noqa: F401  (the block gather node's action registers with these)
from portfolio_manager.book import Holdings
from portfolio_manager.brokerage import BrokerOrder, OrderStatus
from portfolio_manager.errors import AccountClosed, BrokerageError, PortfolioError
from portfolio_manager.expressions import register_expression_functions
from portfolio_manager.order_request import build_plan_request
from portfolio_manager.proposals import NoSuchProposal, ProposalStatus, proposal_from_plan
from portfolio_manager.services import (
    Services,
    build_services,
    engine_settings,
    services,
    services_in_use,
    use_services,
)
from portfolio_manager.shadow import expire_with_run, proposals_for

register_expression_functions()  # workers evaluate waits such as market_open(...) too

SERVICE = "portfolio_manager"
T = TypeVar("T")


def _guard(call: Callable[[], T], account_id: str = "") -> T:
    """Run ``call``; turn a non-retryable PortfolioError into ActionFailed (fail this instance only)."""
    try:
        return call()
    except PortfolioError as exc:
        if exc.retryable:
            raise
        where = f"account {account_id}: " if account_id and account_id not in str(exc) else ""
        raise ActionFailed(f"{where}{exc}") from exc


# --------------------------------------------------------------------------- inputs


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FetchHoldingsInput(_Input):
    """Which account, as of which day, and how far back its household's trades are needed."""

    account_id: str = Field(min_length=1)
    as_of: date
    lookback_days: int = Field(ge=0, le=3660)


class FetchTargetInput(_Input):
    """The account's holdings (``fetch_holdings``' answer) and the planning parameters."""

    holdings: dict[str, Any]
    as_of: date
    parameters: dict[str, Any] = Field(default_factory=dict)
    deposit: float = Field(0.0, ge=0, allow_inf_nan=False, description="Cash arriving now, not yet in the book.")


class StepIdentity(_Input):
    """The engine's ``instance`` root: which instance and which step of it is running."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    node: str = Field(min_length=1)
    seq: int = Field(ge=1)
    run: str = Field(min_length=1)
    workflow: str = ""
    version: int = 0
    #: A shadow instance: its proposal goes to the shadow namespace, its orders are refused.
    shadow: bool = False


class ReviewTerms(_Input):
    """How a proposal reviewed inside its workflow is decided: by when, and from what value by two people."""

    cutoff: datetime = Field(description="No decision after this time: the proposal expires.")
    four_eyes_over: float | None = Field(None, ge=0, allow_inf_nan=False,
                                         description="Order value over which two different people must approve.")


class RecordProposalInput(_Input):
    """The plan to record, for which account, the step recording it, and (optionally) its review terms."""

    step: StepIdentity
    account: dict[str, Any]
    as_of: date
    plan: dict[str, Any]
    review: ReviewTerms | None = None


class RecordDecisionInput(_Input):
    """The decision the engine applied at the proposal's review, and who sent it (the engine's record)."""

    run: str = Field(min_length=1)
    account_id: str = Field(min_length=1)
    decision: Literal["approved", "rejected"]
    names: list[str] = Field(min_length=1, description="Who sent it, oldest first (a quorum: each person).")
    at: float | None = Field(None, description="When the engine applied it (epoch seconds).")
    note: str | None = Field(None, description="The note of the approval that completed the quorum.")
    reason: str | None = Field(None, description="A rejection's reason.")


class ExpireProposalInput(_Input):
    """Which proposal's review passed its cut-off."""

    run: str = Field(min_length=1)
    account_id: str = Field(min_length=1)


class SubmitOrdersInput(_Input):
    """Which proposal to submit, and the step submitting it (its identity makes the order keys)."""

    step: StepIdentity
    run: str = Field(min_length=1, description="The run of the proposal (not of the submitting instance).")
    account_id: str = Field(min_length=1)


# --------------------------------------------------------------------------- actions


#: This thread's last ``fetch_holdings`` answer: its holdings as answered, and the model they were dumped from.
_answered = threading.local()


@action(SERVICE, "fetch_holdings", reads_only=True)
def fetch_holdings(request: FetchHoldingsInput) -> Transition:
    """Cash, lots and the household's trades of the last ``lookback_days``; ``closed`` for a closed account."""
    book = services().book
    holdings = _guard(lambda: book.get_holdings(request.account_id, request.as_of, request.lookback_days),
                      request.account_id)
    if not holdings.account.active:
        return Transition("closed", {"reason": str(AccountClosed(request.account_id))})
    answered = holdings.model_dump(mode="json")
    _answered.holdings = (answered, holdings)
    return ok({"account": holdings.account.model_dump(mode="json"), "holdings": answered,
               "lots": len(holdings.lots), "trades": len(holdings.trade_history)})


def _holdings_of(answer: dict[str, Any]) -> Holdings:
    """``Holdings.model_validate(answer)``; when ``answer`` equals the holdings this thread's last
    ``fetch_holdings`` answered (the next step run inline in the same process), the model they were
    dumped from, not validated again: it is what validating them gives (a frozen model, whose dump
    reads back equal). Compared with ``==``, in which the values handed on unchanged are the same
    objects (an identity check each); read once."""
    last = getattr(_answered, "holdings", None)
    if last is not None:
        _answered.holdings = None
        if last[0] == answer:
            return last[1]
    return Holdings.model_validate(answer)


@action(SERVICE, "fetch_target", reads_only=True)
def fetch_target(request: FetchTargetInput) -> Transition:
    """The model portfolio and prices, built into the order calculation's request."""
    try:
        holdings = _holdings_of(request.holdings)
    except ValueError as exc:
        raise ActionFailed(f"fetch_target: holdings are not valid (fetch_holdings' answer expected): {exc}") from exc
    account = holdings.account
    if request.deposit:
        holdings = holdings.model_copy(update={"cash": holdings.cash + request.deposit})
    book = services().book
    model = _guard(lambda: book.get_model(account.model_id), account.id)
    symbols = [*holdings.positions(), *model.securities]
    prices = _guard(lambda: book.get_prices(symbols, request.as_of), account.id)
    plan_request = _guard(lambda: build_plan_request(holdings, model, prices, request.as_of, request.parameters),
                          account.id)
    return ok({"request": plan_request, "model_id": model.id, "prices": len(plan_request["prices"])})


@action(SERVICE, "record_proposal")
def record_proposal(request: RecordProposalInput) -> Transition:
    """Store the account's plan as a proposal to review (a decided one is kept as it is)."""
    for key in ("id", "region", "type"):
        if key not in request.account:
            raise ActionFailed(f"record_proposal: account.{key} is missing (pass fetch_holdings' account)")
    review = request.review
    proposal = proposal_from_plan(run=request.step.run, account=request.account, as_of=request.as_of,
                                  workflow=request.step.workflow, version=request.step.version,
                                  instance_id=request.step.id, plan=request.plan,
                                  cutoff=review.cutoff.timestamp() if review else None,
                                  four_eyes_over=review.four_eyes_over if review else None)
    store = proposals_for(services().proposals, request.step.shadow)
    recorded, status = store.record(proposal)
    if request.step.shadow:
        expire_with_run(store, proposal.run, proposal.account_id, engine_settings().retention_seconds)
    return ok({"run": proposal.run, "account_id": proposal.account_id, "status": status.value,
               "recorded": recorded, "orders": len(proposal.orders), "tlh_harvests": proposal.tlh_harvests,
               "realized_gain": proposal.realized_gain, "order_value": proposal.order_value,
               "approvals_required": proposal.approvals_required})


def idempotency_key(step: StepIdentity, index: int) -> str:
    """The brokerage key of order ``index`` sent by ``step``: stable across redeliveries and retries."""
    return f"{step.id}:{step.node}:{step.seq}:{index}"


@action(SERVICE, "submit_orders")
def submit_orders(request: SubmitOrdersInput) -> Transition:
    """Send an approved proposal's orders to the brokerage, once each, and record the receipts."""
    svc = services()
    shadow = request.step.shadow  # never approved: its orders go to the adapter marked so, which refuses them
    store = proposals_for(svc.proposals, shadow)
    try:
        proposal = store.get(request.run, request.account_id)
    except NoSuchProposal as exc:
        raise ActionFailed(str(exc)) from exc
    if not shadow and proposal.in_workflow and proposal.status is ProposalStatus.APPROVED:
        # approved in this workflow: from now on it can no longer be rejected or expire
        taken, now_status = svc.proposals.transition(request.run, request.account_id, ProposalStatus.SUBMITTING,
                                                     submission=request.step.id)
        if not taken and now_status not in (ProposalStatus.SUBMITTING.value, ProposalStatus.SUBMITTED.value):
            raise ActionFailed(f"proposal {request.run}/{request.account_id} is {now_status}, not approved")
        proposal = svc.proposals.get(request.run, request.account_id)
    if not shadow and proposal.status not in (ProposalStatus.SUBMITTING, ProposalStatus.SUBMITTED):
        raise ActionFailed(f"proposal {request.run}/{request.account_id} is {proposal.status.value}, not approved "
                           f"for submission: `tradeflow pm approve {request.run} {request.account_id}`, then "
                           f"`tradeflow pm submit {request.run}`")
    receipts: list[dict[str, Any]] = []
    for order in proposal.orders:
        broker_order = BrokerOrder(idempotency_key=idempotency_key(request.step, order.index),
                                   account_id=proposal.account_id, symbol=order.symbol, side=order.side,
                                   quantity=order.quantity, est_price=order.est_price or None, shadow=shadow)
        try:
            receipt = svc.brokerage.submit(broker_order)
        except BrokerageError as exc:
            if exc.retryable:
                raise  # the node's retry policy sends it again, with the same key
            raise ActionFailed(f"order {order.index} ({order.side} {order.quantity:g} {order.symbol}): {exc}") from exc
        receipts.append(receipt.model_dump(mode="json"))
    svc.proposals.mark_submitted(request.run, request.account_id, receipts, request.step.id)
    filled = sum(1 for r in receipts if r["status"] == OrderStatus.FILLED.value)
    partial = sum(1 for r in receipts if r["status"] == OrderStatus.PARTIALLY_FILLED.value)
    return ok({"orders": len(receipts), "filled": filled, "partial": partial,
               "rejected": len(receipts) - filled - partial,
               "keys": [r["idempotency_key"] for r in receipts],
               "filled_value": round(sum(r.get("filled_value") or 0.0 for r in receipts), 2)})


@action(SERVICE, "record_decision")
def record_decision(request: RecordDecisionInput) -> Transition:
    """Write the review's decision on the proposal, after the engine applied it (again: a no-op)."""
    to = ProposalStatus(request.decision)
    approvals = [{"by": name, "at": request.at, "note": request.note if i == len(request.names) - 1 else None}
                 for i, name in enumerate(request.names)]
    done, status = services().proposals.record_decision(request.run, request.account_id, to, approvals,
                                                        note=request.reason or "", at=request.at)
    if not done:
        raise ActionFailed(f"proposal {request.run}/{request.account_id} is {status or 'missing'}: "
                           f"cannot record it {request.decision}")
    return ok({"status": to.value, "by": ", ".join(request.names), "names": request.names,
               "reason": request.reason})


@action(SERVICE, "expire_proposal")
def expire_proposal(request: ExpireProposalInput) -> Transition:
    """The review's cut-off passed without a decision: mark the proposal expired (never to be submitted)."""
    store = services().proposals
    expired, status = store.transition(request.run, request.account_id, ProposalStatus.EXPIRED)
    if not expired and status:
        raise ActionFailed(f"proposal {request.run}/{request.account_id} is {status}; it cannot expire")
    return ok({"status": ProposalStatus.EXPIRED.value if expired else "missing"})


__all__ = [
    "Services",
    "build_services",
    "services",
    "use_services",
    "services_in_use",
    "idempotency_key",
    "fetch_holdings",
    "fetch_target",
    "record_proposal",
    "submit_orders",
    "record_decision",
    "expire_proposal",
]
