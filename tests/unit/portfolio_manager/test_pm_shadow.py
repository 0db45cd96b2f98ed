"""Shadows on the platform's side, on fakeredis: proposals kept apart, orders refused, plan diffs.

Pins: the brokerage adapter refuses an order or block of a shadow before delivering anything; a
shadow's ``record_proposal`` writes to the shadow namespace (never the review queue) with a TTL;
``submit_orders`` for a shadow ends at the adapter's refusal; the pm diff compares orders,
outcomes and measures account by account, biggest change first.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import fakeredis
import pytest

import order_calc.actions as oc_actions
import portfolio_manager.actions as pm_actions
from engine.errors import ActionFailed
from order_calc.drift import drift_after
from portfolio_manager.actions import (
    FetchHoldingsInput,
    FetchTargetInput,
    RecordProposalInput,
    Services,
    StepIdentity,
    SubmitOrdersInput,
)
from portfolio_manager.brokerage import BlockOrder, BrokerOrder, SimulatedBrokerage
from portfolio_manager.config import PMSettings
from portfolio_manager.diff import Plan, compare_plans, compare_runs
from portfolio_manager.diff_console import sort_accounts
from portfolio_manager.errors import ShadowTradeRefused
from portfolio_manager.generator import seed_book
from portfolio_manager.services import build_services
from portfolio_manager.shadow import proposals_for

AS_OF = date(2026, 11, 20)


@pytest.fixture
def svc() -> Iterator[Services]:
    client = fakeredis.FakeRedis()
    services = build_services(PMSettings(prefix="s:"), client=client)
    seed_book(services.book, 30, 3, AS_OF)
    with pm_actions.services_in_use(services):
        yield services


def test_the_adapter_refuses_a_shadow_order_or_block_before_delivering_anything() -> None:
    broker = SimulatedBrokerage(fakeredis.FakeRedis())
    with pytest.raises(ShadowTradeRefused, match="a shadow never trades"):
        broker.submit(BrokerOrder(idempotency_key="k", account_id="A1", symbol="VTI", side="BUY", quantity=1,
                                  shadow=True))
    with pytest.raises(ShadowTradeRefused):
        broker.submit_block(BlockOrder(idempotency_key="b", symbol="VTI", side="BUY", quantity=3, accounts=2,
                                       shadow=True))
    assert broker.received_count() == 0 and broker.accepted_orders() == [] and broker.accepted_blocks() == []
    assert not ShadowTradeRefused.retryable


def _plan_with_orders(svc: Services) -> tuple[dict[str, Any], dict[str, Any]]:
    for account in svc.book.list_accounts():
        try:
            holdings = pm_actions.fetch_holdings(FetchHoldingsInput(account_id=account.id, as_of=AS_OF,
                                                                    lookback_days=30)).data
            target = pm_actions.fetch_target(FetchTargetInput(holdings=holdings["holdings"], as_of=AS_OF,
                                                              parameters={"solver": "greedy"})).data
        except ActionFailed:
            continue
        plan = dict(oc_actions.plan_orders(target["request"]).data)
        if plan["order_count"] >= 2:
            return holdings["account"], plan
    raise AssertionError("no account with orders")


def _step(shadow: bool, node: str = "propose") -> StepIdentity:
    return StepIdentity(id="i-1", node=node, seq=4, run="try", workflow="rebalance-us", version=2, shadow=shadow)


def test_a_shadow_proposal_goes_to_its_own_namespace_with_a_ttl_and_its_orders_are_refused(svc: Services) -> None:
    account, plan = _plan_with_orders(svc)
    answer = pm_actions.record_proposal(RecordProposalInput(step=_step(True), account=account, as_of=AS_OF, plan=plan))
    assert answer.data["recorded"] and answer.data["orders"] == plan["order_count"]
    assert svc.proposals.list("try") == [] and svc.proposals.runs() == []  # the review queue never sees it
    shadows = proposals_for(svc.proposals, True)
    assert shadows.prefix == "s:prop:shadow:" and [p.account_id for p in shadows.list("try")] == [account["id"]]
    assert svc.proposals.client.ttl(shadows.key("try", account["id"])) > 0
    submit = SubmitOrdersInput(step=_step(True, "submit"), run="try", account_id=account["id"])
    with pytest.raises(ActionFailed, match="a shadow never trades"):
        pm_actions.submit_orders(submit)
    assert svc.brokerage.received_count() == 0  # type: ignore[attr-defined]


def test_drift_after_is_the_largest_sleeve_gap_once_the_orders_fill() -> None:
    request = {"cash": 100.0, "prices": {"A": 10.0, "B": 10.0}, "parameters": {},
               "lots": [{"symbol": "A", "quantity": 60}, {"symbol": "B", "quantity": 30}],
               "sleeves": [{"target_weight": 0.5, "securities": ["A"]}, {"target_weight": 0.5, "securities": ["B"]}]}
    assert drift_after(request, []) == pytest.approx(0.2)  # B: 300 against 500 of 1000
    orders = [{"symbol": "A", "side": "SELL", "est_value": 100.0}, {"symbol": "B", "side": "BUY", "est_value": 200.0}]
    assert drift_after(request, orders) == pytest.approx(0.0)


def _plan(orders: dict[tuple[str, str], tuple[float, float]] | None = None, outcome: str = "proposed") -> Plan:
    orders = orders or {}
    return Plan(outcome if orders or outcome != "proposed" else "nothing_to_do", orders=orders,
                traded_value=sum(v for _, v in orders.values()))


def test_a_plan_diff_names_added_removed_and_changed_orders_and_outcome_changes() -> None:
    a = _plan({("VTI", "BUY"): (10, 2500.0), ("BND", "SELL"): (5, 360.0)})
    b = _plan({("VTI", "BUY"): (12, 3000.0), ("XIC", "BUY"): (3, 90.0)})
    diff = compare_plans("A1", a, b)
    assert diff.change == "changed" and not diff.outcome_changed
    assert [(c.symbol, c.a, c.b) for c in diff.added] == [("XIC", 0.0, 3.0)]
    assert [(c.symbol, c.a, c.b) for c in diff.removed] == [("BND", 5.0, 0.0)]
    assert [(c.symbol, c.a, c.b) for c in diff.changed] == [("VTI", 10.0, 12.0)]
    assert diff.size == 90.0 + 360.0 + 500.0
    assert compare_plans("A1", a, a).change == "equal"
    none = compare_plans("A2", _plan(), b)
    assert none.outcome_changed and none.to_dict()["outcome"] == {"a": "nothing_to_do", "b": "proposed"}
    failed = compare_plans("A3", Plan("failed", "no price for XYZ"), Plan("failed", "no price for XYZ"))
    assert failed.change == "equal"


def test_a_run_diff_lists_the_biggest_change_first_and_adds_up_totals() -> None:
    small = _plan({("VTI", "BUY"): (1, 100.0)})
    big = _plan({("VTI", "BUY"): (50, 5000.0)})
    left = {"A1": _plan(), "A2": small, "A3": small, "A4": Plan("failed", "closed")}
    right = {"A1": _plan(), "A2": big, "A3": _plan({("VTI", "BUY"): (2, 200.0)}), "A5": small}
    diff = compare_runs("prod", "shadow", left, right)
    assert [i.account_id for i in diff.accounts] == ["A2", "A3", "A4", "A5", "A1"]
    document = diff.to_dict()
    assert document["summary"] == {"accounts": 5, "equal": 1, "changed": 2, "only_a": 1, "only_b": 1,
                                   "outcome_changed": 0}
    assert document["totals"]["traded_value"] == {"a": 200.0, "b": 5300.0}
    assert document["totals"]["orders_changed"] == 2
    by_traded = sort_accounts(diff.accounts, "traded", desc=True)
    assert by_traded[0].account_id == "A2"
    assert [i.account_id for i in sort_accounts(diff.accounts, "account", desc=False)] == ["A1", "A2", "A3", "A4",
                                                                                           "A5"]
