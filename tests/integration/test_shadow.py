"""Shadows of the morning on real Redis with real worker fleets, and the diff against production.

One set of fleets for the module (as test_morning.py: ``engine`` threads and ``order_calc``
prefork with beat, ``portfolio_manager`` threads) on a seeded book. Pins: a shadow of a version
with a tighter drift band gives a ``pm diff`` whose per-account changes are what the order
calculation gives for each version called directly; a shadow never creates a review item, a
batch member or a brokerage order -- its definition edited to skip the stop is refused by the
validator, and, published anyway, its orders are refused by the brokerage adapter at run time;
a production run started beside a shadow keeps its own progress, total and deadline.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import portfolio_manager.actions as pm_actions
from engine.definitions.nodes import Definition
from engine.definitions.validation import load_definition
from engine.errors import ActionFailed, DefinitionError
from engine.instance import InstanceStatus
from engine.ops.fleet import Fleet, FleetSpec
from engine.testing import delete_prefix
from order_calc.actions import plan_orders
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import start_daily_rebalance
from portfolio_manager.diff import Plan, compare_plans, diff_runs
from portfolio_manager.services import services_in_use
from portfolio_manager.shadow import proposals_for, start_shadow
from tests.integration.conftest import PMBook, seed_pm_book, stop_fleets

pytestmark = pytest.mark.integration

ACCOUNTS = 100
TIGHT_BAND = 0.01  # production's is 0.05: more accounts rebalance


def review_until() -> datetime:
    return datetime.now(UTC) + timedelta(hours=24)


@pytest.fixture(scope="module")
def book(redis_url: str) -> Iterator[PMBook]:
    found = seed_pm_book(redis_url, "shadow", ACCOUNTS, 11, 0.03, 0.0)
    fleets = [Fleet([FleetSpec("engine", "threads", 4), FleetSpec("order_calc", "prefork", 2)], beat=True,
                    env=found.env, loglevel="INFO"),
              Fleet([FleetSpec("portfolio_manager", "threads", 8)], beat=False, env=found.env, loglevel="INFO")]
    try:
        for fleet in fleets:
            fleet.__enter__()
        for name in ("rebalance-ca", "rebalance-us"):
            document = json.loads((PMSettings().definitions_dir / f"{name}.json").read_text())
            document["parameters"]["plan"]["drift_band_abs"] = TIGHT_BAND
            found.engine.publish(load_definition(json.dumps(document)), alias="canary")
        yield found
    finally:
        stop_fleets(fleets)
        delete_prefix(found.client, found.prefix)
        found.client.close()


def settle(book: PMBook, run: str, timeout: float = 120.0) -> Any:
    progress = book.engine.wait_for_run(run, timeout=timeout, poll=0.1, settled=True)
    assert progress.settled, (run, progress.counts)
    return progress


@pytest.fixture(scope="module")
def runs(book: PMBook) -> tuple[str, str]:
    """A production morning (planned: every account awaits review or ended) and its canary shadow."""
    prod = start_daily_rebalance(book.engine, book.svc.book, book.run_date, run=f"prod-{uuid.uuid4().hex[:6]}",
                                 wait_for_open=False, review_until=review_until())
    shadow = start_shadow(book.engine, book.svc.book, book.run_date, version="canary", review_until=review_until())
    settle(book, prod.run)
    progress = settle(book, shadow.run)
    assert progress.done and progress.shadow  # every shadow ended at its stop (or failed)
    return prod.run, shadow.run


def direct_plan(book: PMBook, account_id: str, workflow: str, ref: str) -> Plan:
    """What the order calculation gives for ``account_id`` with version ``ref`` of ``workflow``, called directly."""
    params = book.engine.definition(workflow, ref).parameters
    with services_in_use(book.svc):
        try:
            holdings = pm_actions.fetch_holdings(pm_actions.FetchHoldingsInput(
                account_id=account_id, as_of=book.run_date, lookback_days=params["lookback_days"]))
            target = pm_actions.fetch_target(pm_actions.FetchTargetInput(
                holdings=holdings.data["holdings"], as_of=book.run_date, parameters=params["plan"]))
        except ActionFailed as exc:
            return Plan("failed", str(exc))
    return Plan.read("succeeded", None, None, dict(plan_orders(target.data["request"]).data))


def test_the_shadow_diff_matches_the_order_calculation_of_each_version(book: PMBook, runs: tuple[str, str]) -> None:
    prod, shadow = runs
    diff = diff_runs(book.engine, prod, shadow)
    summary = diff.summary()
    assert summary["accounts"] == len({i.data["account_id"] for i in book.engine.list(prod)})
    assert summary["only_a"] == summary["only_b"] == 0
    assert summary["changed"] > 0 and summary["equal"] > 0
    workflows = {i.data["account_id"]: i.workflow for i in book.engine.list(prod)}
    for item in diff.accounts:
        a = direct_plan(book, item.account_id, workflows[item.account_id], "production")
        b = direct_plan(book, item.account_id, workflows[item.account_id], "canary")
        assert item.a is not None and item.b is not None
        if a.outcome == "failed":
            assert item.a.outcome == item.b.outcome == "failed" and item.change == "equal"
            continue
        expected = compare_plans(item.account_id, a, b)
        assert (item.a.outcome, item.b.outcome) == (a.outcome, b.outcome), item.account_id
        assert item.change == expected.change, item.account_id
        for kind in ("added", "removed", "changed"):
            got = [(c.symbol, c.side, c.a, c.b) for c in getattr(item, kind)]
            assert got == [(c.symbol, c.side, c.a, c.b) for c in getattr(expected, kind)], (item.account_id, kind)
    document = diff.to_dict()
    sizes = [entry["size"] for entry in document["accounts"] if entry["change"] == "changed"]
    assert sizes == sorted(sizes, reverse=True)  # biggest change first
    assert document["totals"]["outcome_changes"].get("nothing_to_do -> proposed", 0) > 0  # a tighter band trades more
    print(f"\nshadow diff: {summary}; outcome changes {document['totals']['outcome_changes']}")


def test_a_shadow_of_the_same_version_is_all_equal(book: PMBook, runs: tuple[str, str]) -> None:
    prod, _ = runs
    same = start_shadow(book.engine, book.svc.book, book.run_date, version="production",
                        run=f"same-{uuid.uuid4().hex[:6]}", review_until=review_until())
    settle(book, same.run)
    summary = diff_runs(book.engine, prod, same.run).summary()
    assert summary["equal"] == summary["accounts"] > 0


def test_a_shadow_never_reaches_review_a_batch_or_the_brokerage(book: PMBook, runs: tuple[str, str]) -> None:
    _prod, shadow = runs
    instances = book.engine.list(shadow)
    assert instances and all(i.shadow for i in instances)
    stopped = [i for i in instances if i.status is InstanceStatus.SUCCEEDED and i.node == "review"]
    assert stopped and all(i.result == {"shadow": "stopped", "node": "review"} and i.batch is None for i in stopped)
    assert book.svc.proposals.list(shadow) == []  # nothing in the review queue
    mirrored = proposals_for(book.svc.proposals, True)
    recorded = mirrored.list(shadow)
    assert {p.account_id for p in recorded} == {i.data["account_id"] for i in stopped}
    assert book.client.ttl(mirrored.key(shadow, recorded[0].account_id)) > 0  # expires with its run
    assert all(shadow not in book.engine.batch(b.id).runs for b in book.engine.batches())
    assert book.svc.brokerage.received_count() == 0  # type: ignore[attr-defined]


def test_a_definition_edited_to_skip_the_stop_is_refused_then_its_orders_are_refused(book: PMBook) -> None:
    document = json.loads((PMSettings().definitions_dir / "rebalance-ca.json").read_text())
    skipping = copy.deepcopy(document)
    del skipping["nodes"]["review"]["shadow"]
    with pytest.raises(DefinitionError) as caught:
        load_definition(json.dumps(skipping))
    assert sorted(p.pointer for p in caught.value.problems) == [
        "/nodes/block/effect", "/nodes/review/effect", "/nodes/submit/effect"]
    # Published anyway, around the validator, and without the review: propose goes to submit.
    around = copy.deepcopy(skipping)
    around["nodes"]["propose"]["transitions"]["ok"] = "submit"
    around["description"] = "edited to skip the review and the shadow stop"
    version = book.engine.publish(Definition.model_validate(around))
    before = book.svc.brokerage.received_count()  # type: ignore[attr-defined]
    started = start_shadow(book.engine, book.svc.book, book.run_date, version=version, regions=["CA"],
                           run=f"around-{uuid.uuid4().hex[:6]}", review_until=review_until())
    settle(book, started.run)
    failed = [i for i in book.engine.list(started.run, ["failed"]) if i.node == "submit"]
    assert failed and all("a shadow never trades" in i.error["reason"] for i in failed)
    assert book.svc.brokerage.received_count() == before  # type: ignore[attr-defined]
    assert book.svc.brokerage.accepted_orders() == []  # type: ignore[attr-defined]


def test_a_production_run_beside_a_shadow_keeps_its_progress_and_deadline(book: PMBook) -> None:
    label = f"beside-{uuid.uuid4().hex[:6]}"
    deadline = datetime.now(UTC) + timedelta(hours=3)
    prod = start_daily_rebalance(book.engine, book.svc.book, book.run_date, run=label, wait_for_open=False,
                                 limit=70, review_until=review_until(), deadline=deadline)
    shadow = start_shadow(book.engine, book.svc.book, book.run_date, version="canary", run=f"{label}-shadow",
                          review_until=review_until())
    progress = settle(book, label)
    settle(book, shadow.run)
    assert progress.total == prod.total == 70 and sum(progress.counts.values()) == 70
    assert progress.deadline == pytest.approx(deadline.timestamp()) and not progress.shadow
    assert not any(i.shadow for i in book.engine.list(label))
    assert book.engine.progress(shadow.run).total == sum(shadow.started.values())
