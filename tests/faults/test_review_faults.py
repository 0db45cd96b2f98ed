"""Scenario 13: the portfolio managers' review across restarts, on the offset clock.

- ``test_unapproved_proposals_expire_at_the_cut_off_across_a_worker_and_redis_restart``: a CA
  run of a fixed session is planned on a clock set just before that session's cut-off (the
  TSX close minus ``review_cutoff``: 20:30 UTC); one proposal is approved, one rejected, the
  rest left alone. Then the engine worker and beat are SIGKILLed, Redis is killed -9 and
  restarted on its AOF, the clock passes the cut-off while nothing runs, and the nodes come
  back. Pass: every unreviewed proposal expires exactly once, not before the cut-off (its
  ``timed_out`` record is stamped after it), never reaches the brokerage, and a late approval
  is refused naming the cut-off; the approved one is submitted once; invariants hold.
- ``test_sigkill_of_the_submitting_worker_after_approval``: proposals approved (four-eyes ones
  by two people), the portfolio_manager node SIGKILLed while their instances submit (an order
  held at the submission gate after the first two), started again: exactly one brokerage
  order per approved order, one receipt per idempotency key.

Run: ``.venv/bin/pytest -s tests/faults/test_review_faults.py``
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import Principal
from engine.instance import InstanceStatus, Outcome
from engine.ops.fleet import FleetSpec
from engine.testing import store_of
from portfolio_manager import review
from portfolio_manager.actions import build_services
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import ensure_definitions, instance_id_for, start_daily_rebalance
from portfolio_manager.generator import GeneratorConfig, seed_book
from portfolio_manager.proposals import ProposalStatus
from tests.faults.exactly_once import assert_exactly_once, submit_seq
from tests.faults.harness import FaultLab, fault_lab
from tests.faults.invariants import check_invariants
from tests.faults.submission_fault_points import Gate, gate_key

RUN_DATE = date(2026, 11, 20)  # a Friday: the TSX closes at 21:00 UTC
CUTOFF = datetime(2026, 11, 20, 20, 30, tzinfo=UTC).timestamp()  # the close minus review_cutoff (30m)
PM_NODE = "portfolio_manager"
ANN, BOB = Principal("ann", frozenset({"pm"})), Principal("bob", frozenset({"pm"}))


def nodes() -> dict[str, FleetSpec]:
    """The engine queue, the portfolio manager (threads, as in production) and the order calculation."""
    return {"engine": FleetSpec("engine", "threads", 2), PM_NODE: FleetSpec(PM_NODE, "threads", 4),
            "order_calc": FleetSpec("order_calc", "prefork", 1)}


def env(pm_prefix: str, **extra: str) -> dict[str, str]:
    """The nodes' services, the brokerage behind the submission gate (``tests.faults.submission_fault_points``)."""
    return {"TRADEFLOW_SERVICE_MODULES": "portfolio_manager.actions,order_calc.actions,"
                                         "tests.faults.submission_fault_points",
            "TRADEFLOW_SUBMIT_FAULTS": "1", "TRADEFLOW_PM_PREFIX": pm_prefix, **extra}


def gate(lab: FaultLab) -> Gate:
    """The gate in front of the nodes' brokerage: a kill "mid-submission" waits until a call is held there."""
    return Gate(lab.client, gate_key(lab.prefix))


def world(lab: FaultLab, pm_prefix: str, accounts: int) -> Any:
    """The services on the lab's Redis, a seeded book (no broken accounts) and the definitions."""
    svc = build_services(PMSettings(redis_url=lab.redis.url, prefix=pm_prefix), client=lab.client)
    seed_book(svc.book, accounts, 11, RUN_DATE, GeneratorConfig(broken_share=0.0))
    ensure_definitions(lab.engine, PMSettings().definitions_dir)
    return svc


def set_clock(lab: FaultLab, at: float) -> None:
    """Put every process of the lab at epoch second ``at`` (seen within a second)."""
    lab.clock_file.write_text(repr(at - time.time()))
    time.sleep(1.2)


def wait_planned(lab: FaultLab, run: str, timeout: float = 120.0) -> None:
    lab.wait_until(lambda: lab.engine.progress(run).settled, timeout, lambda: str(lab.engine.progress(run).counts))


@pytest.mark.slow
def test_unapproved_proposals_expire_at_the_cut_off_across_a_worker_and_redis_restart(tmp_path: Path) -> None:
    pm_prefix = f"tflab-pm-{uuid.uuid4().hex[:6]}:"
    with fault_lab(tmp_path, nodes(), env=env(pm_prefix)) as lab:
        svc = world(lab, pm_prefix, 30)
        set_clock(lab, CUTOFF - 600)  # ten minutes before the cut-off
        run = "expiry"
        start_daily_rebalance(lab.engine, svc.book, RUN_DATE, run=run, regions=["CA"], wait_for_open=False,
                              block_orders=False)  # the approved one submits at once (blocks: test_block_faults)
        wait_planned(lab, run)
        proposals = review.pending(lab.engine, svc.proposals, run)
        assert len(proposals) >= 4, [p.account_id for p in proposals]
        approved, rejected = proposals[0].account_id, proposals[1].account_id
        left = [p.account_id for p in proposals[2:]]
        for who in (ANN, BOB)[:proposals[0].approvals_required]:
            assert review.approve(lab.engine, svc.proposals, run, [approved], by=who).changed == [approved]
        assert review.reject(lab.engine, svc.proposals, run, [rejected], by=ANN, reason="hold").changed
        lab.wait_until(lambda: lab.engine.get(instance_id_for(run, approved)).status.is_terminal, 60,
                       "the approved proposal's submission")
        assert {lab.engine.get(instance_id_for(run, a)).status for a in left} == {InstanceStatus.AWAITING}
        # Nothing runs while the cut-off passes: the engine node and beat die, Redis is killed -9.
        lab.kill_node("engine")
        lab.kill_node("beat")
        lab.redis.restart()
        set_clock(lab, CUTOFF + 20)
        assert {lab.engine.get(instance_id_for(run, a)).status for a in left} == {InstanceStatus.AWAITING}
        lab.start_node("engine")
        lab.start_node("beat")
        ids = [instance_id_for(run, p.account_id) for p in proposals]
        lab.wait_terminal(ids, timeout=90)
        for account in left:
            instance = lab.engine.get(instance_id_for(run, account))
            assert instance.result["outcome"] == "expired", (account, instance.result)
            fired = [a for a in lab.engine.activities(instance.id) if a["outcome"] == Outcome.TIMED_OUT.value]
            assert len(fired) == 1 and fired[0]["ended_at"] >= CUTOFF and fired[0]["timeout_at"] == CUTOFF
            assert svc.proposals.get(run, account).status is ProposalStatus.EXPIRED
        late = review.approve(lab.engine, svc.proposals, run, left[:1], by=ANN)
        assert late.changed == [] and "refused" in late.skipped[left[0]]
        brokerage = svc.brokerage
        assert {r.account_id for r in brokerage.accepted_orders()} == {approved}  # nothing expired was sent
        assert_exactly_once(svc, run, [approved], seq=submit_seq(lab.engine, run, approved))
        assert lab.engine.get(instance_id_for(run, rejected)).result["outcome"] == "rejected"
        figures = check_invariants(store_of(lab.engine), ids, None)
        print(f"\nscenario 13 (expiry): {len(left)} proposals expired at the cut-off after a worker and Redis "
              f"restart, 1 submitted, 1 rejected; {figures.line()}")


@pytest.mark.slow
def test_sigkill_of_the_submitting_worker_after_approval(tmp_path: Path) -> None:
    pm_prefix = f"tflab-pm-{uuid.uuid4().hex[:6]}:"
    with fault_lab(tmp_path, nodes(), env=env(pm_prefix, TRADEFLOW_PM_BROKER_LATENCY="0.3")) as lab:
        svc = world(lab, pm_prefix, 30)
        set_clock(lab, CUTOFF - 3600)
        run = "killed"
        start_daily_rebalance(lab.engine, svc.book, RUN_DATE, run=run, regions=["CA"], wait_for_open=False,
                              block_orders=False)  # each account submits on approval (blocks: test_block_faults)
        wait_planned(lab, run)
        chosen = [p for p in review.pending(lab.engine, svc.proposals, run) if len(p.orders) >= 3][:4]
        accounts = [p.account_id for p in chosen]
        assert len(accounts) == 4
        held = gate(lab)
        held.close_after(2)  # the node is killed while its third order waits at the gate
        assert review.approve(lab.engine, svc.proposals, run, accounts, by=ANN).changed == accounts
        second = [p.account_id for p in chosen if p.approvals_required > 1]
        if second:
            assert review.approve(lab.engine, svc.proposals, run, second, by=BOB).changed == second
        brokerage = svc.brokerage
        lab.wait_until(lambda: held.held() >= 1 and len([o for o in brokerage.received_orders()
                                                         if o.account_id in accounts]) >= 2, 120,
                       "the first two orders to reach the brokerage, the next to wait at the gate")
        lab.kill_node(PM_NODE)
        sent = len([o for o in brokerage.received_orders() if o.account_id in accounts])
        expected = sum(len(p.orders) for p in chosen)
        assert sent == 2 < expected  # it died mid-submission: the two orders let through reached the brokerage
        held.open()
        lab.start_node(PM_NODE)
        ids = [instance_id_for(run, a) for a in accounts]

        def all_succeeded() -> bool:
            """True once every instance succeeded; one whose step ran out of tries is retried, as an operator would."""
            instances = store_of(lab.engine).load_many(ids)
            for instance in instances:
                if instance.status is InstanceStatus.FAILED:
                    assert instance.error["type"] == "Timeout", instance.error
                    lab.engine.retry(instance.id, reason="after the pm worker was killed")
            return all(i.status is InstanceStatus.SUCCEEDED for i in instances)

        # the sweeper re-sends the lost steps; the bound only guards against a hang (pytest's own is 300 s)
        lab.wait_until(all_succeeded, 240,
                       lambda: str([(i.id, i.status.value, i.node) for i in store_of(lab.engine).load_many(ids)]))
        for account in accounts:
            assert_exactly_once(svc, run, [account], seq=submit_seq(lab.engine, run, account))
        received = len([o for o in brokerage.received_orders() if o.account_id in accounts])
        figures = check_invariants(store_of(lab.engine), ids, None)
        print(f"\nscenario 13 (kill during submission): {len(accounts)} approved proposals, {expected} orders, "
              f"{sent} reached the brokerage before the kill, {received} deliveries in all, {expected} accepted; "
              f"{figures.line()}")
