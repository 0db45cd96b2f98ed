"""Scenario 4: the order submission step killed at random points.

Fault points (``submission_fault_points``): before order k reaches the brokerage; after the
brokerage accepted order k, before anything is recorded; after every order was accepted and
the proposal marked submitted, before the engine applies the step; and a timeout with an
unknown outcome (the brokerage took order k, the caller got ``BrokerageTimeout``).

Pass criterion: whatever the point, the simulated brokerage holds exactly one order per
approved order (same account, symbol, side and quantity; one receipt per idempotency key),
every proposal ends ``submitted`` with one receipt per order, every submission instance
succeeds with one applied transition per step (the invariant checker).

- ``test_many_seeds_one_message_at_a_time``: 120 seeds on fakeredis through the Driver; the seed
  picks the proposals, the fault point, the order and how the lost step comes back (broker
  redelivery, sweeper re-send, or both at once).
- ``test_real_workers_sigkilled_at_each_fault_point``: real worker processes on the harness's
  Redis; each armed point SIGKILLs the portfolio_manager worker from inside; the test restarts
  it until every submission is done. A submission whose lost step outlived the sweeper's
  budget while the worker was down ends ``failed`` (Timeout); the test retries it as an
  operator would (``tradeflow retry --run``): the retry keeps the step's seq, so the same keys.

Run: ``.venv/bin/pytest -s tests/faults/test_submission_faults.py``
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import fakeredis
import pytest

import portfolio_manager.actions as pm_actions
from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.ops.fleet import FleetSpec
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, runtime_of, store_of
from portfolio_manager.actions import build_services
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import ensure_definitions
from portfolio_manager.proposals import ProposalStatus, ProposalStore, proposal_from_plan, submit_approved
from tests.faults.exactly_once import assert_exactly_once
from tests.faults.harness import fault_lab
from tests.faults.invariants import check_invariants
from tests.faults.submission_fault_points import POINTS, Killed, faults_key, wrap

SEEDS = 120
SYMBOLS = ("XIU", "XBB", "VTI", "BND", "ZAG", "VXUS", "XEF", "GLD")


def seed_proposals(store: ProposalStore, run: str, rng: random.Random, count: int) -> dict[str, int]:
    """Record ``count`` approved proposals of 1-6 orders each; account id -> orders."""
    orders = {}
    for n in range(count):
        account = {"id": f"CA-{n:05d}", "region": "CA", "type": "TFSA"}
        plan = {"mode": "REBALANCE", "orders": [
            {"side": rng.choice(["BUY", "SELL"]), "symbol": symbol, "quantity": float(rng.randint(1, 500)),
             "reason": "REBALANCE", "est_value": round(rng.uniform(100, 5000), 2)}
            for symbol in rng.sample(SYMBOLS, rng.randint(1, 6))]}
        store.record(proposal_from_plan(run=run, account=account, as_of="2026-11-20", workflow="rebalance-ca",
                                        version=1, instance_id=f"{run}-{account['id']}", plan=plan))
        orders[account["id"]] = len(plan["orders"])
    assert store.decide(run, None, ProposalStatus.APPROVED, by="faults").changed == sorted(orders)
    return orders


def arm(rng: random.Random, orders: int, point: str | None = None) -> str:
    """A fault point for a submission of ``orders`` orders (chosen by ``rng`` unless given)."""
    point = point or rng.choice(POINTS)
    return point if point == "after_mark" else f"{point}:{rng.randrange(orders)}"


# --------------------------------------------------------------------------- many seeds, in-process


@dataclass
class Seeded:
    """One seed's world: what was armed and how the lost step came back."""

    point: str
    recovery: str
    killed: bool = False


def _one_seed(seed: int) -> tuple[Seeded, tuple[int, int]]:
    rng = random.Random(seed)
    client = fakeredis.FakeRedis()
    clock = ManualClock(1_800_000_000.0)
    engine = Engine(RedisStore(client, Keys("wf")), MemoryEnqueuer(), clock)
    ensure_definitions(engine, PMSettings().definitions_dir)

    def kill() -> None:
        raise Killed

    svc = wrap(build_services(PMSettings(prefix="pm:"), client=client), "wf", kill)
    run = f"seed-{seed}"
    orders = seed_proposals(svc.proposals, run, rng, rng.randint(1, 4))
    victim = rng.choice(sorted(orders))
    seeded = Seeded(arm(rng, orders[victim]), rng.choice(["redeliver", "sweep", "both"]))
    client.hset(faults_key("wf"), f"submit-{run}-{victim}", seeded.point)
    with pm_actions.services_in_use(svc):
        started = submit_approved(engine, svc.proposals, run)
        driver = Driver(engine)
        for _ in range(50):  # deliver, recover from the kill, let backoffs pass
            try:
                driver.run_until_idle()
            except Killed:
                seeded.killed = True
                lost = driver.delivered[-1]
                if seeded.recovery in ("redeliver", "both"):
                    driver.deliver(lost) if seeded.recovery == "redeliver" else driver.queue.enqueue(lost)
                if seeded.recovery in ("sweep", "both"):
                    clock.advance(70)  # past the submit node's timeout (60 s) and grace
                    runtime_of(engine).sweep()
                continue
            if engine.progress(started.submission_run).done:
                break
            clock.advance(30)  # past a retry backoff
    assert seeded.killed == (not seeded.point.startswith("timeout_unknown")), seeded
    assert client.hlen(faults_key("wf")) == 0  # the fault fired
    check_invariants(store_of(engine), started.started, started.submission_run)
    return seeded, assert_exactly_once(svc, run, sorted(orders))


def test_many_seeds_one_message_at_a_time() -> None:
    points: Counter[str] = Counter()
    accepted = received = 0
    for seed in range(SEEDS):
        seeded, (a, r) = _one_seed(seed)
        points[f"{seeded.point.split(':')[0]}/{seeded.recovery}"] += 1
        accepted, received = accepted + a, received + r
    assert received > accepted  # the faults did make the brokerage see orders twice
    assert len({p.split("/")[0] for p in points}) == len(POINTS)  # every fault point was exercised
    print(f"\nscenario 4 (Driver): {SEEDS} seeds, {accepted} approved orders, {accepted} accepted by the "
          f"brokerage, {received} deliveries to it; fault point/recovery: {dict(sorted(points.items()))}")


# --------------------------------------------------------------------------- real workers


PM_NODE = "portfolio_manager"


@pytest.mark.slow
def test_real_workers_sigkilled_at_each_fault_point(tmp_path: Path) -> None:
    rng = random.Random(4)
    nodes = {"engine": FleetSpec("engine", "threads", 2), PM_NODE: FleetSpec(PM_NODE, "threads", 4)}
    env = {"TRADEFLOW_SERVICE_MODULES": "portfolio_manager.actions,tests.faults.submission_fault_points",
           "TRADEFLOW_SUBMIT_FAULTS": "1", "TRADEFLOW_PM_BROKER_LATENCY": "0.05"}
    with fault_lab(tmp_path, nodes, env=env) as lab:
        env_pm = PMSettings(redis_url=lab.redis.url, prefix=lab.env.setdefault("TRADEFLOW_PM_PREFIX",
                                                                               f"{lab.prefix}:pm:"))
        lab.stop_nodes()  # restart with the PM prefix in their environment
        for name in [*nodes, "beat"]:
            lab.start_node(name)
        svc = wrap(build_services(env_pm, client=lab.client), lab.prefix, lambda: None)
        ensure_definitions(lab.engine, PMSettings().definitions_dir)
        document = json.loads((PMSettings().definitions_dir / "submit-orders.json").read_text())
        document["nodes"]["submit"]["timeout_seconds"] = 3  # the sweeper re-sends a lost step within seconds
        document["nodes"]["submit"]["retry"]["backoff_seconds"] = 0.5
        version = lab.engine.publish(load_definition(json.dumps(document)))
        run = "live"
        orders = seed_proposals(svc.proposals, run, rng, 12)
        accounts = sorted(orders)
        armed = {f"submit-{run}-{a}": arm(rng, orders[a], POINTS[i % len(POINTS)]) for i, a in enumerate(accounts)}
        lab.client.hset(faults_key(lab.prefix), mapping=armed)
        began = time.monotonic()
        started = submit_approved(lab.engine, svc.proposals, run, version=version)
        kills = retried = 0

        def all_submitted() -> bool:
            """True once every submission succeeded; meanwhile the operator's part: restart, retry."""
            nonlocal kills, retried
            if lab.nodes[PM_NODE].procs[0].poll() is not None:  # it killed itself at a fault point
                lab.nodes.pop(PM_NODE).stop()
                kills += 1
                lab.start_node(PM_NODE)
            progress = lab.engine.progress(started.submission_run)
            if progress.done and progress.counts.get("failed"):  # the sweeper gave up while the pm worker was down
                failed = lab.engine.list(started.submission_run, ["failed"])
                # its worker died with the step each try (WorkerLost), or was down past the timeout (Timeout)
                assert {i.error["type"] for i in failed} <= {"Timeout", "WorkerLost"}, [i.error for i in failed]
                retried += lab.engine.bulk("retry", started.submission_run, ["failed"]).done
                return False
            return progress.done

        # the bound only guards against a hang (pytest's own timeout is 300 s); the outcome is asserted below
        lab.wait_until(all_submitted, 240, lambda: str(lab.engine.progress(started.submission_run)))
        elapsed = time.monotonic() - began  # a figure for the report, not a pass criterion
        assert lab.engine.progress(started.submission_run).counts.get("succeeded") == len(started.started)
        figures = check_invariants(store_of(lab.engine), started.started, started.submission_run)
        accepted, received = assert_exactly_once(svc, run, accounts)
        assert lab.client.hlen(faults_key(lab.prefix)) == 0  # every armed fault fired
        fired = Counter(p.split(":")[0] for p in armed.values())
        assert kills >= 1 and kills <= len(armed) - fired["timeout_unknown"]
        assert received > accepted
        assert all(i.seq == 2 for i in lab.engine.list(started.submission_run))  # a retry keeps the step's seq
        print(f"\nscenario 4 (real workers): {len(accounts)} approved proposals, {accepted} orders; faults armed "
              f"{dict(fired)}; pm worker SIGKILLed {kills} times (one kill can take several armed steps down); "
              f"{accepted} orders accepted, {received} deliveries to the brokerage; {retried} submissions retried by "
              f"the operator after the sweeper gave up; {figures.line()}; {elapsed:.0f} s")
