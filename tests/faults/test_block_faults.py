"""Scenario 14: block orders across a SIGKILL of the worker in the middle of the block submission
and a Redis restart.

A CA run is planned, every proposal approved (four-eyes ones by two people): the run's block
closes early and its batch step sends one block per (symbol, side), slowly (0.3 s per ticket).
After the first two blocks reach the brokerage, while the third waits at the submission gate
(``tests.faults.submission_fault_points``), the portfolio_manager node is SIGKILLed, Redis is
killed -9 and restarted on its AOF, and the node comes back. The batch step's deadline passes
(its node's ``timeout_seconds``, 5 s in this version), the timers send it again, the new attempt
sends the same block keys. Pass: exactly one brokerage order per block key (one per symbol and
side), some sent twice; every approved account submitted with one receipt per order; each
block's fill allocated exactly; the batch applied once; invariants hold.

Run: ``.venv/bin/pytest -s tests/faults/test_block_faults.py``
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from engine.instance import InstanceStatus, Outcome
from engine.testing import store_of
from portfolio_manager import review
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import instance_id_for, start_daily_rebalance
from portfolio_manager.proposals import ProposalStatus
from tests.faults.harness import fault_lab
from tests.faults.invariants import check_invariants
from tests.faults.test_review_faults import (
    ANN,
    BOB,
    CUTOFF,
    PM_NODE,
    RUN_DATE,
    env,
    gate,
    nodes,
    set_clock,
    wait_planned,
    world,
)


@pytest.mark.slow
def test_sigkill_during_the_block_submission_and_a_redis_restart(tmp_path: Path) -> None:
    pm_prefix = f"tflab-pm-{uuid.uuid4().hex[:6]}:"
    with fault_lab(tmp_path, nodes(), env=env(pm_prefix, TRADEFLOW_PM_BROKER_LATENCY="0.3")) as lab:
        svc = world(lab, pm_prefix, 30)
        document = json.loads((PMSettings().definitions_dir / "rebalance-ca.json").read_text())
        document["nodes"]["block"]["timeout_seconds"] = 5  # a lost batch step is sent again within seconds
        version = lab.publish(document)
        set_clock(lab, CUTOFF - 3600)
        run = "blocks-killed"
        start_daily_rebalance(lab.engine, svc.book, RUN_DATE, run=run, regions=["CA"], wait_for_open=False,
                              version=version)
        wait_planned(lab, run)
        chosen = review.pending(lab.engine, svc.proposals, run)
        accounts = [p.account_id for p in chosen]
        expected = {(o.symbol, o.side) for p in chosen for o in p.orders}
        assert len(expected) >= 6, expected
        held = gate(lab)
        held.close_after(2)  # the node is killed while its third block waits at the gate
        assert review.approve(lab.engine, svc.proposals, run, accounts, by=ANN).changed == accounts
        second = [p.account_id for p in chosen if p.approvals_required > 1]
        if second:
            assert review.approve(lab.engine, svc.proposals, run, second, by=BOB).changed == second
        brokerage = svc.brokerage
        lab.wait_until(lambda: held.held() >= 1, 120, "a block to wait at the gate after the first two")
        lab.kill_node(PM_NODE)
        sent = brokerage.received_block_count()
        assert sent == 2 < len(expected)  # it died in the middle of the block submission (one block at a time)
        lab.redis.restart()
        held.open()  # after the restart: a key deleted just before a kill -9 can come back from the AOF
        lab.start_node(PM_NODE)
        ids = [instance_id_for(run, a) for a in accounts]
        lab.wait_terminal(ids, timeout=180)
        instances = store_of(lab.engine).load_many(ids)
        assert {i.status for i in instances} == {InstanceStatus.SUCCEEDED}, [(i.id, i.error) for i in instances]
        blocks = {r.idempotency_key: r for r in brokerage.accepted_blocks()}
        assert len(blocks) == len(expected)  # one brokerage order per block key
        assert {(k.rsplit(":", 2)[1], k.rsplit(":", 1)[1]) for k in blocks} == expected
        received = brokerage.received_block_count()
        assert received > len(expected)  # blocks sent before the kill were sent again, under the same keys
        assert brokerage.accepted_orders() == []  # no per-account ticket
        allocated: dict[str, float] = defaultdict(float)
        for proposal in svc.proposals.get_many(run, accounts):
            assert proposal.status is ProposalStatus.SUBMITTED and len(proposal.receipts) == len(proposal.orders)
            for receipt in proposal.receipts:
                allocated[receipt["block"]] += receipt["quantity"]
        assert allocated == pytest.approx({k: b.filled_quantity for k, b in blocks.items()})
        (batch_id,) = {p.submission for p in svc.proposals.get_many(run, accounts)}
        view = lab.engine.batch(batch_id)  # type: ignore[arg-type]
        events = [a["event"] for a in view.activities]
        assert view.batch.status == "applied" and events.count("applied") == 1 and "timeout" in events
        for iid in ids:
            gathered = [a for a in lab.engine.activities(iid) if a["outcome"] == Outcome.GATHERED.value]
            assert len(gathered) == 1 and gathered[0]["batch"] == batch_id
        figures = check_invariants(store_of(lab.engine), ids, None)
        print(f"\nscenario 14 (blocks, kill during the block submission + Redis restart): {len(accounts)} accounts, "
              f"{len(expected)} blocks, {sent} reached the brokerage before the kill, {received} deliveries in all, "
              f"{len(blocks)} accepted; batch attempts {view.batch.attempt}; {figures.line()}")
