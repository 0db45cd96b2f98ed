"""The portfolio manager's actions as plain functions on fakeredis: no engine, no Celery."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import fakeredis
import pytest

import order_calc.actions as oc_actions
import portfolio_manager.actions as pm_actions
from engine.errors import ActionFailed
from engine.expressions.cel import Scope, compile_expression
from portfolio_manager.actions import (
    FetchHoldingsInput,
    FetchTargetInput,
    RecordProposalInput,
    Services,
    StepIdentity,
    SubmitOrdersInput,
    build_services,
)
from portfolio_manager.config import PMSettings, SettingsError
from portfolio_manager.daily import TradingDaySchedule
from portfolio_manager.errors import BrokerageTimeout, SourceUnavailable
from portfolio_manager.generator import GeneratorConfig, SeedSummary, seed_book
from portfolio_manager.plugin import register_expression_functions
from portfolio_manager.proposals import ProposalStatus

AS_OF = date(2026, 11, 20)


@pytest.fixture(scope="module")
def seeded() -> tuple[fakeredis.FakeRedis, SeedSummary]:
    """A 60-account book (seed 7, ~12% broken) on one fakeredis server, shared by the module's tests."""
    client = fakeredis.FakeRedis()
    svc = build_services(PMSettings(prefix="t:"), client=client)
    summary = seed_book(svc.book, 60, 7, AS_OF, GeneratorConfig(broken_share=0.12))
    assert summary.closed_accounts and summary.missing_price_accounts
    return client, summary


@pytest.fixture
def svc(seeded: tuple[fakeredis.FakeRedis, SeedSummary]) -> Iterator[Services]:
    """Services on the seeded book, with an empty proposal store and brokerage for each test."""
    client, _ = seeded
    services = build_services(PMSettings(prefix="t:"), client=client)
    for key in client.scan_iter(match="t:prop:*"):
        client.delete(key)
    client.delete("t:broker:received", "t:broker:orders")
    with pm_actions.services_in_use(services):
        yield services


def _account(svc: Services, region: str, taxable: bool | None = None) -> str:
    broken = set()
    for acct in svc.book.list_accounts():
        if acct.region.value != region or acct.id in broken:
            continue
        if taxable is None or acct.type.taxable == taxable:
            try:
                _target(acct.id)
            except ActionFailed:
                continue
            return acct.id
    raise AssertionError(f"no healthy {region} account")


def _holdings(account_id: str, lookback: int = 30) -> dict[str, Any]:
    answer = pm_actions.fetch_holdings(FetchHoldingsInput(account_id=account_id, as_of=AS_OF, lookback_days=lookback))
    assert answer.name == "ok"
    return dict(answer.data)


def _target(account_id: str, parameters: dict[str, Any] | None = None, deposit: float = 0.0) -> dict[str, Any]:
    holdings = _holdings(account_id)["holdings"]
    answer = pm_actions.fetch_target(FetchTargetInput(holdings=holdings, as_of=AS_OF, parameters=parameters or {},
                                                      deposit=deposit))
    return dict(answer.data)


def test_fetch_holdings_reads_the_lookback_the_region_asks_for(svc: Services) -> None:
    us = _account(svc, "US")
    month, year = _holdings(us, 30)["holdings"], _holdings(us, 365)["holdings"]
    assert all(date.fromisoformat(t["date"]) >= AS_OF - timedelta(days=30) for t in month["trade_history"])
    assert any(date.fromisoformat(t["date"]) < AS_OF - timedelta(days=30) for t in year["trade_history"])
    assert len(year["trade_history"]) > len(month["trade_history"])
    assert year["lookback_days"] == 365


def test_a_closed_account_takes_the_closed_transition(seeded: tuple[Any, SeedSummary], svc: Services) -> None:
    closed = seeded[1].closed_accounts[0]
    answer = pm_actions.fetch_holdings(FetchHoldingsInput(account_id=closed, as_of=AS_OF, lookback_days=30))
    assert answer.name == "closed"
    assert closed in answer.data["reason"]


def test_an_unknown_account_fails_with_its_id(svc: Services) -> None:
    with pytest.raises(ActionFailed, match="'NOPE-1' not found"):
        pm_actions.fetch_holdings(FetchHoldingsInput(account_id="NOPE-1", as_of=AS_OF, lookback_days=30))


def test_fetch_target_builds_the_request_with_the_definition_parameters(svc: Services) -> None:
    ca = _account(svc, "CA")
    data = _target(ca, {"tlh_min_loss_value": 500, "solver": "greedy"})
    request = data["request"]
    assert request["account"]["id"] == ca
    assert request["parameters"] == {"tlh_min_loss_value": 500, "solver": "greedy"}
    assert request["as_of"] == AS_OF.isoformat()
    assert all(price > 0 for price in request["prices"].values())
    cash = request["cash"]
    assert _target(ca, deposit=1234.5)["request"]["cash"] == pytest.approx(cash + 1234.5)


def test_fetch_target_right_after_fetch_holdings_builds_what_validating_the_holdings_builds(svc: Services) -> None:
    """The holdings fetch_holdings just answered on this thread are not validated again, with the same
    request as a result; holdings that differ from them (another account's, changed) are read as given."""
    ca, us = _account(svc, "CA"), _account(svc, "US")
    fresh = _target(ca)  # fetch_holdings, then fetch_target on its answer: the remembered holdings
    ca_holdings = _holdings(ca)["holdings"]
    _holdings(us)  # this thread's last answer is now another account's
    validated = pm_actions.fetch_target(FetchTargetInput(holdings=ca_holdings, as_of=AS_OF, parameters={}))
    assert dict(validated.data) == fresh
    changed = dict(_holdings(ca)["holdings"], cash=ca_holdings["cash"] + 100.0)
    answer = pm_actions.fetch_target(FetchTargetInput(holdings=changed, as_of=AS_OF, parameters={}))
    assert answer.data["request"]["cash"] == pytest.approx(ca_holdings["cash"] + 100.0)
    bad = dict(_holdings(ca)["holdings"], lookback_days=-1)
    with pytest.raises(ActionFailed, match="holdings are not valid"):
        pm_actions.fetch_target(FetchTargetInput(holdings=bad, as_of=AS_OF, parameters={}))


def test_a_missing_price_fails_the_account_naming_the_symbol(seeded: tuple[Any, SeedSummary], svc: Services) -> None:
    broken = seeded[1].missing_price_accounts[0]
    with pytest.raises(ActionFailed, match=r"no price for '\w+' for account '" + broken):
        _target(broken)


class _DownBook:
    def get_holdings(self, account_id: str, as_of: date, lookback_days: int) -> Any:
        raise SourceUnavailable("custodian answered 503 three times")


def test_a_source_outage_is_raised_as_is_so_the_node_retries(svc: Services) -> None:
    with pm_actions.services_in_use(Services(_DownBook(), svc.proposals, svc.brokerage)),  \
            pytest.raises(SourceUnavailable):  # type: ignore[arg-type]
        pm_actions.fetch_holdings(FetchHoldingsInput(account_id="X", as_of=AS_OF, lookback_days=30))


def test_plan_orders_answers_the_plan_with_counts(svc: Services) -> None:
    request = _target(_account(svc, "US", taxable=True), {"solver": "greedy"})["request"]
    answer = oc_actions.plan_orders(request)
    assert answer.name == "ok"
    assert answer.data["order_count"] == len(answer.data["orders"])
    assert answer.data["tlh_harvests"] == sum(1 for o in answer.data["orders"] if o["reason"] == "TLH"
                                              and o["side"] == "SELL")


def test_a_bad_plan_request_fails_naming_the_field(svc: Services) -> None:
    request = _target(_account(svc, "CA"))["request"]
    bad = {**request, "sleeves": [{**request["sleeves"][0], "target_weight": 1.5}, *request["sleeves"][1:]]}
    with pytest.raises(ActionFailed, match=r"field sleeves\[0\]\.target_weight: must lie in \[0, 1\]$"):
        oc_actions.plan_orders(bad)
    with pytest.raises(ActionFailed, match=r"field parameters.solvr: unknown parameter \(did you mean 'solver'\?\)"):
        oc_actions.plan_orders({**request, "parameters": {"solvr": "milp"}})


def _step(node: str = "propose", seq: int = 5, run: str = "r1", iid: str = "i-1") -> StepIdentity:
    return StepIdentity(id=iid, node=node, seq=seq, run=run, workflow="rebalance-us", version=1, attempt=1)


def _propose(svc: Services, account_id: str, run: str = "r1") -> dict[str, Any]:
    fetched = _holdings(account_id)
    plan = oc_actions.plan_orders(_target(account_id, {"solver": "greedy"})["request"]).data
    answer = pm_actions.record_proposal(RecordProposalInput(step=_step(run=run, iid=f"i-{account_id}"),
                                                            account=fetched["account"], as_of=AS_OF, plan=dict(plan)))
    return dict(answer.data)


def _with_orders(svc: Services) -> str:
    for acct in svc.book.list_accounts():
        try:
            request = _target(acct.id, {"solver": "greedy"})["request"]
        except ActionFailed:
            continue
        if oc_actions.plan_orders(request).data["order_count"] >= 2:
            return acct.id
    raise AssertionError("no account with orders")


def test_record_proposal_keeps_a_decision_when_the_plan_is_recorded_again(svc: Services) -> None:
    account_id = _with_orders(svc)
    first = _propose(svc, account_id)
    assert first["recorded"] and first["status"] == "proposed" and first["orders"] >= 2
    proposal = svc.proposals.get("r1", account_id)
    assert proposal.instance_id == f"i-{account_id}" and proposal.workflow == "rebalance-us"
    assert [o.index for o in proposal.orders] == list(range(len(proposal.orders)))
    svc.proposals.decide("r1", [account_id], ProposalStatus.APPROVED, by="ana")
    again = _propose(svc, account_id)  # a retried workflow records its plan once more
    assert not again["recorded"] and again["status"] == "approved"
    assert svc.proposals.get("r1", account_id).decided_by == "ana"


def test_decisions_follow_the_review_rules(svc: Services) -> None:
    account_id = _with_orders(svc)
    _propose(svc, account_id)
    store = svc.proposals
    assert store.decide("r1", [account_id], ProposalStatus.REJECTED, note="too big").changed == [account_id]
    assert store.decide("r1", [account_id], ProposalStatus.APPROVED).changed == [account_id]
    assert store.transition("r1", account_id, ProposalStatus.SUBMITTING)[0]
    late = store.decide("r1", [account_id, "GHOST"], ProposalStatus.REJECTED)
    assert late.changed == []
    assert late.skipped == {account_id: "submitting: can no longer be rejected",
                            "GHOST": "no proposal for GHOST in run r1"}


def test_submit_orders_keys_every_order_by_step_and_never_sends_one_twice(svc: Services) -> None:
    account_id = _with_orders(svc)
    _propose(svc, account_id)
    orders = svc.proposals.get("r1", account_id).orders
    request = SubmitOrdersInput(step=_step(node="submit", seq=1, run="submit-r1", iid="sub-1"), run="r1",
                                account_id=account_id)
    with pytest.raises(ActionFailed, match="is proposed, not approved for submission: `tradeflow pm approve"):
        pm_actions.submit_orders(request)
    svc.proposals.decide("r1", None, ProposalStatus.APPROVED)
    svc.proposals.transition("r1", account_id, ProposalStatus.SUBMITTING)
    first = pm_actions.submit_orders(request)
    second = pm_actions.submit_orders(request)  # a redelivered or retried step: same keys
    assert first.data["keys"] == second.data["keys"] == [f"sub-1:submit:1:{i}" for i in range(len(orders))]
    brokerage = svc.brokerage
    assert brokerage.received_count() == 2 * len(orders)  # type: ignore[attr-defined]
    accepted = brokerage.accepted_orders()  # type: ignore[attr-defined]
    assert len(accepted) == len(orders)
    assert {(r.symbol, r.side.value, r.quantity) for r in accepted} == {(o.symbol, o.side, o.quantity)
                                                                          for o in orders}
    proposal = svc.proposals.get("r1", account_id)
    assert proposal.status is ProposalStatus.SUBMITTED and len(proposal.receipts) == len(orders)
    assert first.data["filled"] + first.data["rejected"] == len(orders)


def test_a_brokerage_timeout_is_retryable(svc: Services) -> None:
    account_id = _with_orders(svc)
    _propose(svc, account_id)
    svc.proposals.decide("r1", None, ProposalStatus.APPROVED)
    svc.proposals.transition("r1", account_id, ProposalStatus.SUBMITTING)
    svc.brokerage.fail_before_accept = 1.0  # type: ignore[attr-defined]
    request = SubmitOrdersInput(step=_step(node="submit", seq=1), run="r1", account_id=account_id)
    with pytest.raises(BrokerageTimeout):
        pm_actions.submit_orders(request)
    assert svc.proposals.get("r1", account_id).status is ProposalStatus.SUBMITTING


def test_market_open_and_close_are_expression_functions() -> None:
    register_expression_functions()
    scope = Scope(data={"day": "2026-11-20"})
    opened = compile_expression("market_open(data.day, 'XNYS') + duration('5m')").evaluate(scope)
    assert opened == "2026-11-20T14:35:00+00:00"
    assert compile_expression("market_close(data.day, 'XTSE')").evaluate(scope) == "2026-11-20T21:00:00+00:00"
    assert compile_expression("trading_day('2026-11-26', 'XNYS')").evaluate(scope) is False
    with pytest.raises(Exception, match="no session on 2026-11-26"):
        compile_expression("market_open('2026-11-26', 'XNYS')").evaluate(scope)


def _fixed(moment: datetime) -> Any:
    return lambda: moment


def test_the_morning_schedule_fires_on_trading_days_only_in_the_exchange_zone() -> None:
    toronto = ZoneInfo("America/Toronto")
    schedule = TradingDaySchedule("XTSE", "09:00")
    # Thursday Dec 24 09:00 fired; Christmas and the observed Boxing Day (Mon 28) are holidays.
    last = datetime(2026, 12, 24, 9, 0, tzinfo=toronto).astimezone(UTC)
    assert schedule.next_after(last) == datetime(2026, 12, 29, 9, 0, tzinfo=toronto)
    nyse = TradingDaySchedule("XNYS", "09:00")
    assert nyse.next_after(last) == datetime(2026, 12, 28, 9, 0, tzinfo=ZoneInfo("America/New_York"))
    # Due once the time passed; not before; the summer time shift is the zone's business.
    before = TradingDaySchedule("XTSE", "09:00", nowfun=_fixed(datetime(2026, 12, 29, 13, 59, tzinfo=UTC)))
    after = TradingDaySchedule("XTSE", "09:00", nowfun=_fixed(datetime(2026, 12, 29, 14, 1, tzinfo=UTC)))
    assert not before.is_due(last).is_due
    assert after.is_due(last).is_due
    summer = datetime(2026, 7, 2, 9, 0, tzinfo=toronto)
    assert schedule.next_after(summer - timedelta(hours=1)) == summer  # 13:00 UTC in July, 14:00 in winter
    assert TradingDaySchedule("XTSE", "09:00") == schedule  # picklable by value for beat's shelve


def test_settings_come_from_the_environment_and_bad_ones_say_how_to_fix_them(tmp_path: Path) -> None:
    env = {"TRADEFLOW_REDIS_URL": "redis://x:1/2", "TRADEFLOW_PM_PREFIX": "acme:", "TRADEFLOW_DEFINITIONS_DIR":
           str(tmp_path)}
    settings = PMSettings.from_env(env)
    assert (settings.redis_url, settings.proposals_prefix, settings.broker_prefix) == \
           ("redis://x:1/2", "acme:prop:", "acme:broker:")
    assert settings.definitions_dir == tmp_path
    with pytest.raises(SettingsError, match="TRADEFLOW_PM_BROKER_LATENCY must be a number"):
        PMSettings.from_env({"TRADEFLOW_PM_BROKER_LATENCY": "fast"})
    with pytest.raises(SettingsError, match="use HH:MM"):
        PMSettings.from_env({"TRADEFLOW_MORNING_AT": "9am"})
