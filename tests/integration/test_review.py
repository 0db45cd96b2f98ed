"""The portfolio managers' review inside the rebalance, on real Redis with real worker fleets.

Uses the fleets of ``test_morning`` (its ``morning`` fixture: one set per module). Each test
starts its own small run with a review deadline far away (``review_until``), except the race,
whose deadline is a few seconds away on purpose (the shortest window the run is planned
within). After every sequence the proposal as shown, the instance and the simulated brokerage
agree: one door for a decision (the engine's guarded signal, with the sender's principal, roles
and quorum).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from engine import Principal
from engine.definitions.validation import load_definition
from engine.errors import SignalRefused
from engine.instance import InstanceStatus
from engine.testing import store_of
from portfolio_manager import review
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import instance_id_for, start_daily_rebalance
from portfolio_manager.proposals import ProposalStatus
from tests.integration.test_morning import Morning, morning_fleets, review_until

pytestmark = pytest.mark.integration
ANN, BOB = Principal("ann", frozenset({"pm"})), Principal("bob", frozenset({"pm"}))
OLGA = Principal("olga", frozenset({"operator"}))


@pytest.fixture(scope="module")
def morning(redis_url: str) -> Iterator[Morning]:
    """Fleets and a book of this module's own (as ``test_morning``'s)."""
    with morning_fleets(redis_url) as found:
        yield found


def planned(m: Morning, run: str, limit: int, version: int | str = "production",
            until: datetime | None = None) -> list[str]:
    """Start ``run`` over ``limit`` accounts and wait until it is planned; the accounts awaiting review."""
    # block_orders=False: each approval submits its account's orders at once (blocks: test_blocks.py)
    start_daily_rebalance(m.engine, m.svc.book, m.run_date, run=run, wait_for_open=False, limit=limit,
                          version=version, review_until=until or review_until(), block_orders=False)
    m.wait_run(run, timeout=90, settled=True)
    return [p.account_id for p in review.pending(m.engine, m.svc.proposals, run)]


def wait_terminal(m: Morning, run: str, accounts: list[str]) -> None:
    ids = [instance_id_for(run, a) for a in accounts]
    m.wait_until(lambda: all(i.status.is_terminal for i in store_of(m.engine).load_many(ids)), 60, f"{run} to end")


def orders_of(m: Morning, run: str, accounts: list[str]) -> Counter:
    return Counter((p.account_id, o.symbol, o.side, o.quantity)
                   for p in m.svc.proposals.get_many(run, accounts) for o in p.orders)


def accepted_in(m: Morning, run: str, accounts: list[str]) -> list:
    """The brokerage's accepted orders sent by the instances of ``accounts`` in ``run`` (keys name them)."""
    ids = tuple(f"{instance_id_for(run, a)}:" for a in accounts)
    return [r for r in m.accepted(set(accounts)) if r.idempotency_key.startswith(ids)]


def at_brokerage(m: Morning, run: str, accounts: list[str]) -> Counter:
    return Counter((r.account_id, r.symbol, r.side.value, r.quantity) for r in accepted_in(m, run, accounts))


def shown(m: Morning, run: str, account: str) -> ProposalStatus:
    """The proposal's status as the CLI and the console show it."""
    return review.proposal(m.engine, m.svc.proposals, run, account).status


def four_eyes_version(m: Morning) -> int:
    """rebalance-ca/us with four_eyes_over 0 (every proposal needs two people); their version."""
    versions = set()
    for name in ("rebalance-ca", "rebalance-us"):
        document = json.loads((PMSettings().definitions_dir / f"{name}.json").read_text())
        document["parameters"]["four_eyes_over"] = 0
        versions.add(m.engine.publish(load_definition(json.dumps(document))))
    (version,) = versions
    return version


def test_one_approval_submits_once_and_a_rejection_ends_the_instance(morning: Morning) -> None:
    m, run = morning, "review-one"
    waiting = [a for a in planned(m, run, 30)
               if m.svc.proposals.get(run, a).approvals_required == 1]
    approved, rejected, left = waiting[:2], waiting[2], waiting[3:]
    assert review.approve(m.engine, m.svc.proposals, run, approved, by=ANN).changed == approved
    assert review.reject(m.engine, m.svc.proposals, run, [rejected], by=ANN, reason="client").changed == [rejected]
    wait_terminal(m, run, [*approved, rejected])
    assert at_brokerage(m, run, approved) == orders_of(m, run, approved)  # every order once
    for account in approved:
        instance = m.engine.get(instance_id_for(run, account))
        assert instance.result["outcome"] in ("filled", "partly_filled", "partly_rejected")
        assert instance.result["approved_by"] == "ann" and shown(m, run, account) is ProposalStatus.SUBMITTED
        history = [r["outcome"] for r in m.engine.activities(instance.id)]
        assert history.count("signalled") == 1 and history[-1] == "applied"  # fetched .. reviewed .. submitted
    ended = m.engine.get(instance_id_for(run, rejected))
    assert ended.status is InstanceStatus.SUCCEEDED and ended.result["outcome"] == "rejected"
    assert ended.result["rejected_by"] == "ann" and ended.result["reason"] == "client"
    assert accepted_in(m, run, [rejected]) == []
    assert shown(m, run, rejected) is ProposalStatus.REJECTED
    assert {m.engine.get(instance_id_for(run, a)).status for a in left} == {InstanceStatus.AWAITING}
    again = review.approve(m.engine, m.svc.proposals, run, approved, by=ANN)  # re-run: nothing done again
    assert again.changed == [] and again.skipped == {} and sorted(again.already) == sorted(approved)
    assert at_brokerage(m, run, approved) == orders_of(m, run, approved)


def test_an_operators_rejection_to_a_pm_only_review_is_refused(morning: Morning) -> None:
    m, run = morning, "review-operator"
    account = next(a for a in planned(m, run, 12) if m.svc.proposals.get(run, a).approvals_required == 1)
    iid = instance_id_for(run, account)
    with pytest.raises(SignalRefused, match="needs the role pm"):  # what the instance page's form sends
        m.engine.signal(iid, "reject", {"by": "paula", "reason": "client on hold"}, by=OLGA)
    refused = review.reject(m.engine, m.svc.proposals, run, [account], by=OLGA, reason="client on hold")
    assert refused.changed == [] and "needs the role pm" in refused.skipped[account]
    assert m.engine.get(iid).status is InstanceStatus.AWAITING and shown(m, run, account) is ProposalStatus.PROPOSED
    refused_records = [r for r in m.engine.activities(iid) if r["outcome"] == "refused"]
    assert [(r["signal"], r["by"], r["roles"]) for r in refused_records] == [("reject", "olga", ["operator"])] * 2
    events = m.engine.audit(run=run, person="olga").events
    assert [(e.kind, e.detail["signal"], e.instance) for e in events] == [("signal_refused", "reject", iid)] * 2
    assert review.approve(m.engine, m.svc.proposals, run, [account], by=ANN).changed == [account]  # paula's part
    wait_terminal(m, run, [account])
    assert shown(m, run, account) is ProposalStatus.SUBMITTED
    assert at_brokerage(m, run, [account]) == orders_of(m, run, [account])


def test_four_eyes_one_pm_twice_and_a_forged_approvals_list_change_nothing_two_pms_send_once(
        morning: Morning) -> None:
    m, run = morning, "review-four-eyes"
    accounts = planned(m, run, 12, version=four_eyes_version(m))
    account, forged = accounts[0], accounts[1]
    iid = instance_id_for(run, account)
    first = review.approve(m.engine, m.svc.proposals, run, [account], by=ANN)
    assert first.changed == [account] and first.waiting == [account]
    twice = review.approve(m.engine, m.svc.proposals, run, [account], by=ANN)
    assert twice.changed == [] and "ann sent it already" in twice.skipped[account]
    with pytest.raises(SignalRefused):
        m.engine.signal(iid, "approve", {"approvals": [1, 2]}, by=ANN)  # no second person in data
    with pytest.raises(SignalRefused):
        m.engine.signal(instance_id_for(run, forged), "approve", {"approvals": [1, 2]}, by=OLGA)
    counted = m.engine.signal(instance_id_for(run, forged), "approve", {"approvals": [1, 2], "by": "bob"}, by=ANN)
    assert counted.counted  # a pm's approval with a forged list counts once, as ann's
    threading.Event().wait(2)  # room for anything wrongly started to reach the brokerage
    for target in (account, forged):
        assert m.engine.get(instance_id_for(run, target)).status is InstanceStatus.AWAITING
        proposal = review.proposal(m.engine, m.svc.proposals, run, target)
        assert proposal.status is ProposalStatus.PROPOSED and [a["by"] for a in proposal.approvals] == ["ann"]
    assert accepted_in(m, run, [account, forged]) == []
    assert review.approve(m.engine, m.svc.proposals, run, [account], by=BOB).changed == [account]
    wait_terminal(m, run, [account])
    assert at_brokerage(m, run, [account]) == orders_of(m, run, [account])  # sent once
    proposal = review.proposal(m.engine, m.svc.proposals, run, account)
    assert proposal.status is ProposalStatus.SUBMITTED and [a["by"] for a in proposal.approvals] == ["ann", "bob"]
    assert m.engine.get(iid).result["approved_by"] == "ann, bob"


def test_a_signal_sent_twice_with_the_same_key_applies_once(morning: Morning) -> None:
    m, run = morning, "review-same-key"
    account = next(a for a in planned(m, run, 12) if m.svc.proposals.get(run, a).approvals_required == 1)
    iid = instance_id_for(run, account)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def send() -> None:
        barrier.wait()
        try:
            results.append(m.engine.signal(iid, "approve", {"note": "once"}, by=ANN, key="approve:ann"))
        except SignalRefused as exc:  # pragma: no cover - would fail the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sum(r.applied for r in results) == 1 and sum(r.duplicate for r in results) == 3
    wait_terminal(m, run, [account])
    history = m.engine.activities(iid)
    assert [r["outcome"] for r in history].count("signalled") == 1
    assert sum(1 for r in history if r["outcome"] == "noop" and r.get("key") == "approve:ann") == 3
    assert at_brokerage(m, run, [account]) == orders_of(m, run, [account])


#: Review windows (seconds from the start) tried in turn for the race: the first the run is planned
#: within (with a second to spare) is raced; a busier machine only costs a longer window.
RACE_WINDOWS = (8, 16, 32, 64)


def test_a_signal_and_the_timeout_raced_exactly_one_wins(morning: Morning) -> None:
    m = morning
    for attempt, seconds in enumerate(RACE_WINDOWS):
        run = f"review-race-{attempt}"
        until = datetime.now(UTC) + timedelta(seconds=seconds)  # enough to plan the run; then the race
        waiting = [a for a in planned(m, run, 24, until=until)
                   if m.svc.proposals.get(run, a).approvals_required == 1]
        if waiting and (until - datetime.now(UTC)).total_seconds() > 1.0:
            break  # planned before the deadline: race this run (a run planned too late is left to expire)
    assert waiting and datetime.now(UTC) < until, "the run took longer to plan than its review deadline"
    pause = max((until - datetime.now(UTC)).total_seconds() - 0.5, 0)
    threading.Event().wait(pause)
    refused = {}
    for account in waiting:  # approvals spread across the deadline
        result = review.approve(m.engine, m.svc.proposals, run, [account], by=ANN)
        refused.update(result.skipped)
    wait_terminal(m, run, waiting)
    wins: Counter = Counter()
    for account in waiting:
        instance = m.engine.get(instance_id_for(run, account))
        history = [r["outcome"] for r in m.engine.activities(instance.id)]
        signalled, timed_out = history.count("signalled"), history.count("timed_out")
        wins["timeout" if timed_out else "signal"] += 1
        assert signalled + timed_out == 1, (account, history)  # exactly one wins
        if timed_out:
            assert instance.result["outcome"] == "expired" and shown(m, run, account) is ProposalStatus.EXPIRED
            assert accepted_in(m, run, [account]) == []  # an expired proposal is never submitted
            assert account in refused
        else:
            assert instance.result["outcome"] in ("filled", "partly_filled", "partly_rejected")
            assert at_brokerage(m, run, [account]) == orders_of(m, run, [account])
    print(f"\nrace ({run}, a {seconds} s window): {dict(wins)} of {len(waiting)}")
