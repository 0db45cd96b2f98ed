"""The morning on real Redis with real worker fleets: the daily run, pause/resume, versions, submission.

One set of fleets for the module (``engine`` threads, ``portfolio_manager`` threads as in
production, ``order_calc`` prefork, beat), under an engine key prefix, a broker prefix and a
portfolio-manager prefix of its own; every key under the module's prefix is deleted after.
The run date is the most recent day both exchanges traded with the open past, so the
workflows' wait for the open ends at the first timer tick; its review gets a day from now
(``review_until``), so no verdict depends on the time of day the suite runs at.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

import portfolio_manager.actions  # noqa: F401  (registers market_open for the starts made here)
from engine import Principal
from engine.api import Engine
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.ops.fleet import Fleet, FleetSpec
from engine.testing import delete_prefix, enqueuer_of, step_message, store_of
from portfolio_manager import review
from portfolio_manager.actions import Services
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import instance_id_for, start_daily_rebalance
from portfolio_manager.demo import failure_reason
from portfolio_manager.generator import SeedSummary
from portfolio_manager.proposals import ProposalStatus
from tests.integration.conftest import seed_pm_book, stop_fleets

pytestmark = pytest.mark.integration

ACCOUNTS = 300
BROKER_LATENCY = 0.2  # seconds per order: a submission is slow enough to kill mid-way
PM = FleetSpec("portfolio_manager", "threads", 8)
REVIEW_HOURS = 24  # the review's deadline of every run started here: far away
ITEST, ITEST2 = Principal("itest", frozenset({"pm"})), Principal("itest2", frozenset({"pm"}))


def review_until() -> datetime:
    """A cut-off a day from now: the tests decide before it whatever the time of day."""
    return datetime.now(UTC) + timedelta(hours=REVIEW_HOURS)


@dataclass
class Morning:
    """The fleets, an engine that talks to them, the services on the same book, the seeded book."""

    engine: Engine
    svc: Services
    seeded: SeedSummary
    run_date: Any
    env: dict[str, str]
    fleets: list[Fleet]
    client: redis.Redis

    def wait_run(self, run: str, timeout: float = 60.0, *, settled: bool = False) -> Any:
        """Wait until every instance of ``run`` is terminal (``settled``: or awaiting review)."""
        progress = self.engine.wait_for_run(run, timeout=timeout, poll=0.1, settled=settled)
        if not (progress.settled if settled else progress.done):
            logs = "\n".join(p.read_text()[-2000:] for f in self.fleets for p in f.logdir.glob("*.log"))
            raise AssertionError(f"run {run} not done after {timeout}s: {progress.counts}\n{logs}")
        return progress

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not check():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def accepted(self, account_ids: set[str]) -> list[Any]:
        return [r for r in self.svc.brokerage.accepted_orders() if r.account_id in account_ids]  # type: ignore[attr-defined]

    def received(self, account_ids: set[str]) -> list[Any]:
        return [o for o in self.svc.brokerage.received_orders() if o.account_id in account_ids]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def morning(redis_url: str) -> Iterator[Morning]:
    """The module's fleets and book (see :func:`morning_fleets`)."""
    with morning_fleets(redis_url) as found:
        yield found


@contextmanager
def morning_fleets(redis_url: str) -> Iterator[Morning]:
    """Seed a book, publish the definitions, start the fleets; delete every key of theirs after."""
    book = seed_pm_book(redis_url, "morning", ACCOUNTS, 5, 0.04, BROKER_LATENCY)
    fleets = [Fleet([FleetSpec("engine", "threads", 4), FleetSpec("order_calc", "prefork", 2)], beat=True,
                    env=book.env, loglevel="INFO"),
              Fleet([PM], beat=False, env=book.env, loglevel="INFO")]
    try:
        for fleet in fleets:
            fleet.__enter__()
        yield Morning(book.engine, book.svc, book.seeded, book.run_date, book.env, fleets, book.client)
    finally:
        stop_fleets(fleets)
        delete_prefix(book.client, book.prefix)
        book.client.close()


@pytest.fixture(scope="module")
def daily(morning: Morning) -> str:
    """The morning run over every active account, planned: each account ended or awaits its review."""
    # block_orders=False: the submission tests below approve a few accounts, each submitting on its own
    # (the morning traded in blocks: test_blocks.py)
    started = start_daily_rebalance(morning.engine, morning.svc.book, morning.run_date,
                                    run=f"daily-{uuid.uuid4().hex[:6]}", review_until=review_until(),
                                    block_orders=False)
    assert started.total == ACCOUNTS - len(morning.seeded.closed_accounts)
    morning.wait_run(started.run, timeout=75, settled=True)
    return started.run


def test_a_daily_run_proposes_for_every_healthy_account_and_fails_broken_ones(morning: Morning, daily: str) -> None:
    instances = {i.data["account_id"]: i for i in morning.engine.list(daily)}
    broken = set(morning.seeded.missing_price_accounts)
    assert broken and set(instances) == {a.id for a in morning.svc.book.list_accounts()}
    for account_id, instance in instances.items():
        if account_id in broken:
            assert instance.status is InstanceStatus.FAILED
            assert "no price for" in failure_reason(instance) and account_id in failure_reason(instance)
        elif instance.status is InstanceStatus.AWAITING:
            assert instance.node == "review", (account_id, instance.node)
        else:
            assert instance.status is InstanceStatus.SUCCEEDED, (account_id, instance.error)
            assert instance.result["outcome"] == "nothing_to_do"
    proposed = {a for a, i in instances.items() if i.status is InstanceStatus.AWAITING}
    assert len(proposed) > ACCOUNTS / 3
    assert {p.account_id for p in morning.svc.proposals.list(daily)} == proposed
    progress = morning.engine.progress(daily)
    assert progress.counts["failed"] == len(broken)
    assert progress.counts["succeeded"] + progress.awaiting == len(instances) - len(broken)
    assert progress.phase == "planned"


def test_ca_and_us_accounts_get_their_region_rules(morning: Morning, daily: str) -> None:
    seen: dict[str, Any] = {}
    for instance in morning.engine.list(daily, ["succeeded", "awaiting"]):
        seen.setdefault(instance.workflow, instance)
    for workflow, lookback, tlh_min in (("rebalance-ca", 30, 500), ("rebalance-us", 365, 200)):
        instance = seen[workflow]
        assert instance.data["account_id"][:2] == workflow[-2:].upper()
        # The fetched documents are dropped on success (drop_on_success); the unit workflow tests
        # watch the rules reach the book and the calculation. Here: each region's instances are
        # pinned to a version that carries its rules, and finished with the context kept lean.
        parameters = store_of(morning.engine).definition(instance.workflow, instance.version).parameters
        assert parameters["lookback_days"] == lookback and parameters["plan"]["tlh_min_loss_value"] == tlh_min
        assert parameters["four_eyes_over"] == 250_000 and parameters["review_cutoff"] == "30m"
    for instance in morning.engine.list(daily, ["succeeded"]):
        assert "fetch_holdings" not in instance.context and "calculate" in instance.context


def test_a_run_is_paused_and_resumed_mid_way(morning: Morning) -> None:
    started = start_daily_rebalance(morning.engine, morning.svc.book, morning.run_date, run="pause",
                                    wait_for_open=False, limit=80, review_until=review_until())
    morning.wait_until(lambda: morning.engine.progress("pause").finished >= 5, 60, "the run to get going")
    assert morning.engine.bulk("pause", "pause").done > 0
    # the steps in flight come back and are recorded (however busy the machine); nothing further is sent
    morning.wait_until(lambda: not any(i.inflight for i in morning.engine.list("pause", ["paused"])), 60,
                       "the paused instances' steps in flight to come back")
    paused = {i.id: i.seq for i in morning.engine.list("pause", ["paused"])}
    assert paused, morning.engine.progress("pause").counts
    time.sleep(1.5)  # a window in which nothing may move
    assert {i.id: i.seq for i in morning.engine.list("pause", ["paused"])} == paused
    assert morning.engine.progress("pause").finished < started.total
    assert morning.engine.bulk("resume", "pause").done == len(paused)
    progress = morning.wait_run("pause", settled=True)
    broken = set(morning.seeded.missing_price_accounts)
    failed = {i.data["account_id"] for i in morning.engine.list("pause", ["failed"])}
    assert failed <= broken and progress.counts["succeeded"] + progress.awaiting + len(failed) == started.total


def test_a_new_version_of_rebalance_us_runs_beside_the_old_one(morning: Morning) -> None:
    document = json.loads((PMSettings().definitions_dir / "rebalance-us.json").read_text())
    document["parameters"]["plan"]["tlh_min_loss_value"] = 1_000_000_000  # harvest nothing
    version = morning.engine.publish(load_definition(json.dumps(document)))
    assert store_of(morning.engine).resolve_version("rebalance-us", "production") < version
    old = start_daily_rebalance(morning.engine, morning.svc.book, morning.run_date, regions=["US"], run="us-old",
                                wait_for_open=False, limit=50, review_until=review_until())
    new = start_daily_rebalance(morning.engine, morning.svc.book, morning.run_date, regions=["US"], run="us-new",
                                wait_for_open=False, limit=50, version=version, review_until=review_until())
    morning.wait_run("us-old", settled=True)
    morning.wait_run("us-new", settled=True)
    assert {i.version for i in morning.engine.list("us-new")} == {version} and new.total == old.total
    assert {i.version for i in morning.engine.list("us-old")} == {version - 1}
    harvests = {run: sum(p.tlh_harvests for p in morning.svc.proposals.list(run)) for run in ("us-old", "us-new")}
    assert harvests["us-old"] > 0 and harvests["us-new"] == 0


def approve(morning: Morning, run: str, accounts: list[str]) -> None:
    """Approve ``accounts`` of ``run``: by "itest", and by "itest2" too where four-eyes asks for it."""
    assert review.approve(morning.engine, morning.svc.proposals, run, accounts, by=ITEST).changed == accounts
    second = [p.account_id for p in morning.svc.proposals.get_many(run, accounts) if p.approvals_required > 1]
    if second:
        assert review.approve(morning.engine, morning.svc.proposals, run, second, by=ITEST2).changed == second


def pick(morning: Morning, run: str, count: int, skip: set[str]) -> list[str]:
    """``count`` proposals of ``run`` awaiting review with 3 orders or more."""
    chosen = [p.account_id for p in review.pending(morning.engine, morning.svc.proposals, run)
              if len(p.orders) >= 3 and p.account_id not in skip][:count]
    assert len(chosen) == count
    return chosen


def _expected_orders(morning: Morning, run: str, accounts: list[str]) -> set[tuple[str, str, str, float]]:
    return {(p.account_id, o.symbol, o.side, o.quantity)
            for p in morning.svc.proposals.get_many(run, accounts) for o in p.orders}


def submitted_by(morning: Morning) -> set[str]:
    """Accounts with an order at the brokerage (from any test of the module)."""
    return {r.account_id for r in morning.svc.brokerage.accepted_orders()}  # type: ignore[attr-defined]


def _submit_noops(morning: Morning, instance_id: str) -> list[dict[str, Any]]:
    return [a for a in morning.engine.activities(instance_id) if a["outcome"] == "noop" and a["node"] == "submit"]


def test_approved_orders_reach_the_brokerage_once_when_the_step_is_delivered_twice(morning: Morning,
                                                                                  daily: str) -> None:
    accounts = pick(morning, daily, 4, submitted_by(morning))
    ids = [instance_id_for(daily, a) for a in accounts]
    approve(morning, daily, accounts)
    definition = morning.engine.definition("rebalance-ca")
    duplicated = []
    for iid in ids:  # a duplicate of every submission step, while the first runs or after it
        morning.wait_until(lambda iid=iid: morning.engine.get(iid).node == "submit"
                           or morning.engine.get(iid).status.is_terminal, 60, f"{iid} to reach its submission")
        instance = morning.engine.get(iid)
        if instance.node == "submit":
            message = step_message("submit", definition.nodes["submit"], iid, instance.seq, 1)
            enqueuer_of(morning.engine).enqueue(message)
            duplicated.append(iid)
    morning.wait_until(lambda: all(morning.engine.get(i).status.is_terminal for i in ids), 60, "the submissions")
    finished = [morning.engine.get(i) for i in ids]
    assert {i.result["outcome"] for i in finished} <= {"filled", "partly_rejected"}
    expected = _expected_orders(morning, daily, accounts)
    accepted = morning.accepted(set(accounts))
    assert {(r.account_id, r.symbol, r.side.value, r.quantity) for r in accepted} == expected
    assert len(accepted) == len(expected) == len({r.idempotency_key for r in accepted})
    # A duplicate taken while the first runs reaches the brokerage, which keeps one order per key; one taken
    # after the first finished is stale and sends nothing. Which one happens depends on timing; either
    # way every duplicate ends as a recorded no-op of its own instance.
    assert len(morning.received(set(accounts))) >= len(expected)
    assert {p.status for p in morning.svc.proposals.get_many(daily, accounts)} == {ProposalStatus.SUBMITTED}
    assert duplicated
    morning.wait_until(lambda: all(_submit_noops(morning, iid) for iid in duplicated), 60, "the duplicates' no-ops")


def test_approved_orders_reach_the_brokerage_once_when_the_submitting_worker_is_killed(morning: Morning) -> None:
    # The same process with a short step timeout, so the sweeper re-sends a lost step in seconds.
    document = json.loads((PMSettings().definitions_dir / "rebalance-ca.json").read_text())
    document["nodes"]["submit"]["timeout_seconds"] = 2
    version = morning.engine.publish(load_definition(json.dumps(document)))
    run = "killed"
    start_daily_rebalance(morning.engine, morning.svc.book, morning.run_date, run=run, wait_for_open=False,
                          regions=["CA"], limit=40, version=version, review_until=review_until(), block_orders=False)
    morning.wait_run(run, settled=True)
    accounts = pick(morning, run, 3, submitted_by(morning))  # accounts no other test sent orders for
    ids = [instance_id_for(run, a) for a in accounts]
    approve(morning, run, accounts)
    morning.wait_until(lambda: len(morning.received(set(accounts))) >= 2, 60, "the first orders to arrive")
    pm_fleet = morning.fleets[1]
    for proc in pm_fleet.procs:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole threads worker dies mid-submission
        proc.wait()
    in_flight = len(morning.received(set(accounts)))
    assert in_flight < len(_expected_orders(morning, run, accounts))  # it really died mid-way
    replacement = Fleet([PM], beat=False, env=morning.env, loglevel="INFO").__enter__()
    morning.fleets[1] = replacement
    morning.wait_until(lambda: all(morning.engine.get(i).status.is_terminal for i in ids), 60, "the submissions")
    expected = _expected_orders(morning, run, accounts)
    accepted = morning.accepted(set(accounts))
    assert {(r.account_id, r.symbol, r.side.value, r.quantity) for r in accepted} == expected
    assert len(accepted) == len(expected)
    assert len(morning.received(set(accounts))) > len(expected)  # orders sent before the kill were sent again
    retried = [a for iid in ids for a in morning.engine.activities(iid)
               if a["outcome"] == "retry" and str(a.get("error")).startswith(("timeout", "worker lost"))]
    # the sweeper re-sent the lost step -- at its timeout, or when the dead worker's liveness mark
    # lapsed, whichever it saw first (same instance, node and seq: same keys)
    assert retried
    assert all(morning.engine.get(i).status is InstanceStatus.SUCCEEDED for i in ids)
    assert {p.status for p in morning.svc.proposals.get_many(run, accounts)} == {ProposalStatus.SUBMITTED}


def test_the_beat_task_starts_the_morning_run_of_an_exchange_in_a_worker(morning: Morning) -> None:
    """What beat sends on a trading day: the worker starts the run of the exchange's region."""
    from portfolio_manager.daily import DAILY_TASK, daily_run_label

    enqueuer_of(morning.engine).app.send_task(DAILY_TASK, args=["XNYS", morning.run_date.isoformat()],
                                          queue="portfolio_manager")
    run = daily_run_label(morning.run_date)
    us = [a.id for a in morning.svc.book.list_accounts() if a.region.value == "US"]
    morning.wait_until(lambda: sum(store_of(morning.engine).run_counts(run).values()) == len(us), 120,
                       "the worker to start the run")
    morning.wait_run(run, settled=True)
    assert {i.workflow for i in morning.engine.list(run)} == {"rebalance-us"}
    assert {i.data["account_id"] for i in morning.engine.list(run)} == set(us)
