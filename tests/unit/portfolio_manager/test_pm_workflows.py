"""The real definitions (definitions/*.json) driven one message at a time on fakeredis: no Celery.

Each test gets a fresh world: a seeded book, the services on it, an engine on a manual clock
set after the open of the run date, and every definition published at ``production``.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import fakeredis
import pytest

import order_calc.actions  # registers order_calc.plan_orders
import portfolio_manager.actions as pm_actions
from engine import Principal
from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.errors import SignalRefused
from engine.instance import InstanceStatus
from engine.service import ActionRegistry, ActionSpec, registry
from engine.testing import Driver, make_store, runtime_of, store_of
from portfolio_manager import review
from portfolio_manager.actions import Services, build_services
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import enqueue_accounts, ensure_definitions, instance_id_for, start_daily_rebalance
from portfolio_manager.demo import failure_reason
from portfolio_manager.generator import GeneratorConfig, SeedSummary, seed_book
from portfolio_manager.proposals import ProposalStatus, submission_id, submit_approved

RUN_DATE = date(2026, 11, 20)  # a Friday: both exchanges trade; XNYS and XTSE open 14:30 UTC
AFTER_OPEN = datetime(2026, 11, 20, 15, 0, tzinfo=UTC).timestamp()
CUTOFF = datetime(2026, 11, 20, 20, 30, tzinfo=UTC).timestamp()  # both exchanges close 21:00 UTC; minus 30m
DEFINITIONS = PMSettings().definitions_dir
PM, PM2, ANN, BOB, CARL = (Principal(name, frozenset({"pm"})) for name in ("pm", "pm2", "ann", "bob", "carl"))
OPERATOR = Principal("olga", frozenset({"operator"}))


@dataclass
class World:
    """Everything a workflow test needs."""

    engine: Engine
    driver: Driver
    svc: Services
    seeded: SeedSummary
    clock: ManualClock

    def instances(self, run: str) -> list[Any]:
        return self.engine.list(run)


@pytest.fixture
def world() -> Iterator[World]:
    client = fakeredis.FakeRedis()
    svc = build_services(PMSettings(prefix="pm:"), client=client)
    seeded = seed_book(svc.book, 40, 3, RUN_DATE, GeneratorConfig(broken_share=0.1))
    clock = ManualClock(AFTER_OPEN)
    engine = Engine(make_store(client, "wf"), MemoryEnqueuer(), clock)
    ensure_definitions(engine, DEFINITIONS)
    with pm_actions.services_in_use(svc):
        yield World(engine, Driver(engine), svc, seeded, clock)


def test_the_daily_run_proposes_for_healthy_accounts_and_fails_broken_ones_with_their_reason(world: World) -> None:
    started = start_daily_rebalance(world.engine, world.svc.book, RUN_DATE)
    active = [a.id for a in world.svc.book.list_accounts()]
    assert started.run == "rebalance-2026-11-20"
    assert started.total == len(active) == 40 - len(world.seeded.closed_accounts)
    assert set(started.started) == {"rebalance-ca", "rebalance-us"}
    world.driver.run_until_idle()
    instances = {i.data["account_id"]: i for i in world.instances(started.run)}
    assert set(instances) == set(active)  # closed accounts are not started
    broken = set(world.seeded.missing_price_accounts)
    assert broken
    for account_id, instance in instances.items():
        if account_id in broken:
            assert instance.status is InstanceStatus.FAILED
            assert instance.error["node"] == "fetch_target"
            assert "no price for" in failure_reason(instance) and account_id in failure_reason(instance)
        elif instance.status is InstanceStatus.AWAITING:  # proposed: the portfolio managers' review
            assert instance.node == "review" and instance.wake_at == CUTOFF, (account_id, instance.node)
        else:
            assert instance.status is InstanceStatus.SUCCEEDED, (account_id, instance.error)
            assert instance.result["outcome"] == "nothing_to_do"
    proposed = {a for a, i in instances.items() if i.status is InstanceStatus.AWAITING}
    assert proposed and {p.account_id for p in world.svc.proposals.list(started.run)} == proposed
    assert {p.account_id for p in review.pending(world.engine, world.svc.proposals, started.run)} == proposed
    assert world.engine.progress(started.run).phase == "planned"
    # Starting the same run again starts nothing new.
    again = start_daily_rebalance(world.engine, world.svc.book, RUN_DATE)
    assert again.total == 0 and again.already_started == len(active)


def test_ca_and_us_accounts_get_their_region_rules(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # A succeeded rebalance drops the fetched documents (drop_on_success): watch the calls instead.
    lookbacks: dict[str, int] = {}
    requests: dict[str, dict[str, Any]] = {}
    get_holdings, calculate = world.svc.book.get_holdings, order_calc.actions.calculate

    def watched(account_id: str, as_of: Any, lookback_days: int) -> Any:
        lookbacks[account_id] = lookback_days
        return get_holdings(account_id, as_of, lookback_days)

    def calculated(request: dict[str, Any]) -> Any:
        requests[request["account"]["id"]] = request
        return calculate(request)

    monkeypatch.setattr(world.svc.book, "get_holdings", watched)
    monkeypatch.setattr(order_calc.actions, "calculate", calculated)
    started = start_daily_rebalance(world.engine, world.svc.book, RUN_DATE)
    world.driver.run_until_idle()
    by_region: dict[str, Any] = {}
    for instance in world.instances(started.run):
        if instance.status is InstanceStatus.SUCCEEDED:
            by_region.setdefault(instance.workflow, instance)
    ca, us = by_region["rebalance-ca"], by_region["rebalance-us"]
    assert ca.data["account_id"].startswith("CA-") and us.data["account_id"].startswith("US-")
    assert lookbacks[ca.data["account_id"]] == 30
    assert lookbacks[us.data["account_id"]] == 365
    assert "fetch_target" not in ca.context and "fetch_holdings" not in ca.context  # dropped on success
    ca_request, us_request = (requests[i.data["account_id"]] for i in (ca, us))
    assert ca_request["parameters"]["tlh_min_loss_value"] == 500
    assert us_request["parameters"]["tlh_min_loss_value"] == 200
    assert ca_request["account"]["region"] == "CA" and us_request["account"]["region"] == "US"


def test_the_run_waits_for_the_open_and_a_holiday_skips_the_region(world: World) -> None:
    world.clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()  # before the open
    started = start_daily_rebalance(world.engine, world.svc.book, date(2026, 11, 27))
    world.driver.run_until_idle()
    instances = world.instances(started.run)
    assert {i.status for i in instances} == {InstanceStatus.WAITING}
    open_plus_5 = datetime(2026, 11, 27, 14, 35, tzinfo=UTC).timestamp()
    assert {i.wake_at for i in instances} == {open_plus_5}
    world.clock.now = open_plus_5 + 1
    world.driver.run_until_idle()
    assert all(i.status.is_terminal or i.status is InstanceStatus.AWAITING for i in world.instances(started.run))
    assert world.engine.progress(started.run).settled
    # US Thanksgiving: the NYSE is closed, the TSX is not.
    thanksgiving = start_daily_rebalance(world.engine, world.svc.book, date(2026, 11, 26), wait_for_open=False)
    assert set(thanksgiving.started) == {"rebalance-ca"}
    assert "XNYS has no session on 2026-11-26" in thanksgiving.skipped_regions["US"]


def test_a_run_is_paused_and_resumed_mid_way(world: World) -> None:
    started = start_daily_rebalance(world.engine, world.svc.book, RUN_DATE)
    for _ in range(30):  # part of the run
        runtime_of(world.engine).tick()
        world.driver.step()
    assert world.engine.bulk("pause", started.run).done > 0
    world.driver.run_until_idle()
    paused = world.engine.list(started.run, ["paused"])
    assert paused
    before = {i.id: (i.node, i.seq) for i in paused}
    world.clock.advance(3600)
    world.driver.run_until_idle()
    assert {i.id: (i.node, i.seq) for i in world.engine.list(started.run, ["paused"])} == before  # nothing moved
    assert world.engine.bulk("resume", started.run).done == len(paused)
    world.driver.run_until_idle()
    progress = world.engine.progress(started.run)
    assert progress.settled and progress.counts["paused"] == 0 and progress.awaiting > 0
    assert progress.counts["failed"] == len(world.seeded.missing_price_accounts)


def _crash_once_after(spec: ActionSpec, crashes: list[str]) -> ActionSpec:
    """The action, but the first call dies after it did its work (a worker killed before the apply)."""

    def fn(payload: Any) -> Any:
        answer = spec.fn(payload)
        if not crashes:
            crashes.append("crashed")
            raise ConnectionError("worker lost after the brokerage answered")
        return answer

    return ActionSpec(spec.service, spec.name, fn, spec.input_model)


def _approve_all(world: World, run: str, accounts: list[str]) -> None:
    """Approve ``accounts``: by "pm", and by "pm2" too where four-eyes asks for a second person."""
    first = review.approve(world.engine, world.svc.proposals, run, accounts, by=PM)
    assert first.changed == accounts, first.skipped
    second = [p.account_id for p in world.svc.proposals.get_many(run, accounts) if p.approvals_required > 1]
    if second:
        assert review.approve(world.engine, world.svc.proposals, run, second, by=PM2).changed == second


def test_approved_orders_reach_the_brokerage_exactly_once_despite_crash_and_duplicate(world: World) -> None:
    started = start_daily_rebalance(world.engine, world.svc.book, RUN_DATE)
    world.driver.run_until_idle()
    store, brokerage = world.svc.proposals, world.svc.brokerage
    proposals = store.list(started.run)
    assert len(proposals) >= 3
    rejected, *approved = [p.account_id for p in proposals]
    crashes: list[str] = []
    actions = ActionRegistry()
    for spec in registry:
        actions.register(_crash_once_after(spec, crashes) if spec.task_name == "portfolio_manager.trade_blocks"
                         else spec)
    driver = Driver(world.engine, actions)
    _approve_all(world, started.run, approved)
    assert review.reject(world.engine, store, started.run, [rejected], by=PM, reason="client called").changed
    # Everything is decided: the workflows record the decisions, the approved accounts gather, and
    # each exchange's block closes early (nothing of the run left to decide); the first batch step
    # to run dies after the brokerage answered: it is retried.
    driver.run_until_idle(tick=False)
    runtime_of(world.engine).tick()
    driver.run_until_idle(max_steps=1000)
    assert len({m.batch for m in (world.engine.get(instance_id_for(started.run, a)) for a in approved)}) == len(
        {p.region for p in store.get_many(started.run, approved)})
    world.clock.advance(60)  # past the retry backoff of the crashed batch step
    driver.run_until_idle()
    assert crashes == ["crashed"]
    instances = [world.engine.get(instance_id_for(started.run, a)) for a in approved]
    assert {i.status for i in instances} == {InstanceStatus.SUCCEEDED}
    assert {i.result["outcome"] for i in instances} <= {"filled", "partly_rejected"}
    exchange = {"CA": "XTSE", "US": "XNYS"}
    submitted = store.get_many(started.run, approved)
    expected = {(exchange[p.region], o.symbol, o.side) for p in submitted for o in p.orders}
    accepted = brokerage.accepted_blocks()  # type: ignore[attr-defined]
    assert len(accepted) == len(expected)  # one brokerage order per (exchange, symbol, side)
    assert brokerage.received_block_count() > len(expected)  # type: ignore[attr-defined]  # though sent again
    assert len({r.idempotency_key for r in accepted}) == len(expected)
    assert brokerage.accepted_orders() == []  # type: ignore[attr-defined]  # no per-account ticket
    assert all(p.status is ProposalStatus.SUBMITTED for p in submitted)
    filled = {r.idempotency_key: r.filled_quantity for r in accepted}
    allocated: dict[str, float] = {}
    for p in submitted:
        assert len(p.receipts) == len(p.orders) and {r["account_id"] for r in p.receipts} == {p.account_id}
        for receipt, order in zip(p.receipts, p.orders, strict=True):
            assert receipt["requested"] == order.quantity and receipt["quantity"] <= order.quantity
            allocated[receipt["block"]] = allocated.get(receipt["block"], 0) + receipt["quantity"]
    assert allocated == pytest.approx(filled)  # each block's fill allocated exactly
    assert store.get(started.run, rejected).status is ProposalStatus.REJECTED
    assert world.engine.get(instance_id_for(started.run, rejected)).result["outcome"] == "rejected"
    # Approving again sends nothing; neither does pm submit (the workflows submitted them).
    again = review.approve(world.engine, store, started.run, approved, by=PM)
    assert again.changed == [] and again.skipped == {} and set(again.already) == set(approved)
    assert submit_approved(world.engine, store, started.run).started == []
    driver.run_until_idle()
    assert len(brokerage.accepted_blocks()) == len(expected)  # type: ignore[attr-defined]


def _four_eyes_for_all(world: World) -> int:
    """Publish rebalance-ca/us with four_eyes_over 0 (every proposal needs two people); their version."""
    versions = set()
    for name in ("rebalance-ca", "rebalance-us"):
        document = json.loads((DEFINITIONS / f"{name}.json").read_text())
        document["parameters"]["four_eyes_over"] = 0
        versions.add(world.engine.publish(load_definition(json.dumps(document))))
    (version,) = versions
    return version


def test_four_eyes_one_approval_does_not_submit_the_same_person_twice_is_refused(world: World) -> None:
    started = start_daily_rebalance(world.engine, world.svc.book, RUN_DATE, version=_four_eyes_for_all(world))
    world.driver.run_until_idle()
    store, brokerage = world.svc.proposals, world.svc.brokerage
    account = store.list(started.run)[0].account_id
    iid = instance_id_for(started.run, account)
    assert store.get(started.run, account).approvals_required == 2
    first = review.approve(world.engine, store, started.run, [account], by=ANN, note="looks right")
    assert first.changed == [account] and first.waiting == [account]
    world.driver.run_until_idle()
    instance, proposal = world.engine.get(iid), review.proposal(world.engine, store, started.run, account)
    assert instance.status is InstanceStatus.AWAITING and instance.node == "review"  # counted, still awaiting
    assert proposal.status is ProposalStatus.PROPOSED
    assert [(a["by"], a["at"]) for a in proposal.approvals] == [("ann", AFTER_OPEN)]
    assert store.get(started.run, account).approvals == []  # the store never counts approvals
    assert brokerage.accepted_orders() == []  # type: ignore[attr-defined]
    twice = review.approve(world.engine, store, started.run, [account], by=ANN)
    assert twice.changed == [] and "ann sent it already" in twice.skipped[account]
    with pytest.raises(SignalRefused):  # a forged approvals list is no second approval
        world.engine.signal(iid, "approve", {"approvals": [1, 2], "by": "bob"}, by=ANN)
    assert world.engine.get(iid).status is InstanceStatus.AWAITING
    assert review.approve(world.engine, store, started.run, [account], by=CARL).changed == [account]
    world.driver.run_until_idle()
    decided = review.proposal(world.engine, store, started.run, account)
    assert decided.status is ProposalStatus.APPROVED and [a["by"] for a in decided.approvals] == ["ann", "carl"]
    other = store.list(started.run)[1].account_id
    review.approve(world.engine, store, started.run, [other], by=ANN)
    second = review.approve(world.engine, store, started.run, [other], by=BOB)
    assert second.changed == [other] and second.waiting == []
    world.driver.run_until_idle()
    assert world.engine.get(instance_id_for(started.run, other)).status is InstanceStatus.GATHERING
    world.clock.now = CUTOFF  # the block closes at the cut-off (the others are under review until then)
    world.driver.run_until_idle()
    assert [a["by"] for a in store.get(started.run, other).approvals] == ["ann", "bob"]
    assert store.get(started.run, other).status is ProposalStatus.SUBMITTED
    signals = [(r["outcome"], r["by"]) for r in world.engine.activities(instance_id_for(started.run, other))
               if r.get("signal") == "approve"]
    assert signals == [("counted", "ann"), ("signalled", "bob")]  # one history holds the whole review
    assert world.engine.get(instance_id_for(started.run, other)).result["approved_by"] == "ann, bob"
    assert brokerage.accepted_orders() == []  # type: ignore[attr-defined]  # traded in blocks
    receipts = store.get(started.run, other).receipts
    assert {r["account_id"] for r in receipts} == {other}
    assert len(receipts) == len(store.get(started.run, other).orders)
    both = receipts + store.get(started.run, account).receipts  # ann and carl approved the first one
    assert len(brokerage.accepted_blocks()) == len({(r["symbol"], r["side"]) for r in both})  # type: ignore


def test_an_unreviewed_proposal_expires_at_the_cut_off_and_a_late_approval_names_it(world: World) -> None:
    started = start_daily_rebalance(world.engine, world.svc.book, RUN_DATE)
    world.driver.run_until_idle()
    store = world.svc.proposals
    accounts = [p.account_id for p in store.list(started.run)]
    world.clock.now = CUTOFF - 1
    world.driver.run_until_idle()
    assert all(world.engine.get(instance_id_for(started.run, a)).node == "review" for a in accounts)
    world.clock.now = CUTOFF + 1
    world.driver.run_until_idle()
    for account in accounts:
        instance = world.engine.get(instance_id_for(started.run, account))
        assert instance.status is InstanceStatus.SUCCEEDED and instance.result["outcome"] == "expired"
        assert store.get(started.run, account).status is ProposalStatus.EXPIRED
    late = review.approve(world.engine, store, started.run, accounts[:1], by=ANN)
    assert late.changed == [] and late.already == {} and "refused" in late.skipped[accounts[0]]
    assert world.svc.brokerage.accepted_orders() == []  # type: ignore[attr-defined]
    assert world.engine.progress(started.run).phase == "finished"


def test_a_failed_account_succeeds_when_retried_after_the_fix(world: World) -> None:
    broken = world.seeded.missing_price_accounts[0]
    started = enqueue_accounts(world.engine, world.svc.book, [broken, "NOPE"], RUN_DATE)
    assert started.unknown_accounts == ["NOPE"]
    world.driver.run_until_idle()
    iid = instance_id_for(started.run, broken)
    failed = world.engine.get(iid)
    assert failed.status is InstanceStatus.FAILED
    symbol = failure_reason(failed).split("'")[1]
    world.svc.book.put_prices({symbol: 12.5}, RUN_DATE)  # type: ignore[attr-defined]
    world.engine.retry(iid)
    world.driver.run_until_idle()
    assert world.engine.get(iid).status is InstanceStatus.SUCCEEDED


def test_a_closed_account_enqueued_on_demand_fails_with_the_reason(world: World) -> None:
    closed = world.seeded.closed_accounts[0]
    started = enqueue_accounts(world.engine, world.svc.book, [closed], RUN_DATE)
    world.driver.run_until_idle()
    instance = world.engine.get(instance_id_for(started.run, closed))
    assert instance.status is InstanceStatus.FAILED and instance.node == "closed"
    assert failure_reason(instance) == f"account {closed!r} is closed"


def test_a_deposit_is_invested_with_the_same_actions_buys_only(world: World) -> None:
    account = next(a for a in world.svc.book.list_accounts() if a.id not in world.seeded.missing_price_accounts)
    cash = world.svc.book.get_holdings(account.id, RUN_DATE, 0).cash
    iid = world.engine.start("invest-deposit", {"account_id": account.id, "as_of": RUN_DATE.isoformat(),
                                                "amount": 25_000.0}, run="deposits")
    world.driver.run_until_idle()
    instance = world.engine.get(iid)
    assert instance.status is InstanceStatus.SUCCEEDED and instance.result["outcome"] == "proposed"
    proposal = world.svc.proposals.get("deposits", account.id)
    assert proposal.orders and {(o.side, o.reason) for o in proposal.orders} == {("BUY", "CASH_INVEST")}
    assert 24_000 < proposal.buy_value <= 25_000 + cash
    # A deposit's proposal is submitted separately: approved, then one submit-orders instance.
    assert not proposal.in_workflow
    assert review.approve(world.engine, world.svc.proposals, "deposits", [account.id], by=PM).changed
    assert review.submit(world.engine, world.svc.proposals, "deposits", by=PM).started == [
        submission_id("deposits", account.id)]
    world.driver.run_until_idle()
    assert world.svc.proposals.get("deposits", account.id).status is ProposalStatus.SUBMITTED
    assert len(world.svc.brokerage.accepted_orders()) == len(proposal.orders)  # type: ignore[attr-defined]


def test_a_new_version_with_a_tweaked_threshold_runs_beside_the_old_one(world: World) -> None:
    document = json.loads((DEFINITIONS / "rebalance-us.json").read_text())
    document["parameters"]["plan"]["tlh_min_loss_value"] = 1_000_000_000  # harvest nothing
    v2 = world.engine.publish(load_definition(json.dumps(document)))
    assert v2 == 2 and store_of(world.engine).resolve_version("rebalance-us", "production") == 1
    old = start_daily_rebalance(world.engine, world.svc.book, RUN_DATE, regions=["US"], run="old")
    new = start_daily_rebalance(world.engine, world.svc.book, RUN_DATE, regions=["US"], run="new", version=2)
    world.driver.run_until_idle()
    versions = collections.Counter((i.run, i.version) for i in world.instances("old") + world.instances("new"))
    assert versions == {("old", 1): old.total, ("new", 2): new.total}
    harvests = {run: sum(p.tlh_harvests for p in world.svc.proposals.list(run)) for run in ("old", "new")}
    assert harvests["old"] > 0 and harvests["new"] == 0
