"""The portfolio managers' review inside the rebalance, on real Redis with real worker fleets.

Uses the fleets of ``test_morning`` (its ``morning`` fixture: one set per module). Each test
starts its own small run with a review deadline far away (``review_until``), except the race,
whose deadline is a few seconds away on purpose.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from engine.definitions.validation import load_definition
from engine.errors import SignalRefused
from engine.model import InstanceStatus
from engine.principal import Principal
from portfolio_manager import review
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import instance_id_for, start_daily_rebalance
from portfolio_manager.proposals import ProposalStatus
from tests.integration.test_morning import Morning, morning_fleets, review_until

pytestmark = pytest.mark.integration

ANN = Principal("ann", frozenset({"pm"}))
OLGA = Principal("olga", frozenset({"operator", "viewer"}))


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
    return [p.account_id for p in review.pending(m.svc.proposals, run)]


def wait_terminal(m: Morning, run: str, accounts: list[str]) -> None:
    ids = [instance_id_for(run, a) for a in accounts]
    m.wait_until(lambda: all(i.status.is_terminal for i in m.engine.store.load_many(ids)), 60, f"{run} to end")


def orders_of(m: Morning, run: str, accounts: list[str]) -> Counter:
    return Counter((p.account_id, o.symbol, o.side, o.quantity)
                   for p in m.svc.proposals.get_many(run, accounts) for o in p.orders)


def accepted_in(m: Morning, run: str, accounts: list[str]) -> list:
    """The brokerage's accepted orders sent by the instances of ``accounts`` in ``run`` (keys name them)."""
    ids = tuple(f"{instance_id_for(run, a)}:" for a in accounts)
    return [r for r in m.accepted(set(accounts)) if r.idempotency_key.startswith(ids)]


def at_brokerage(m: Morning, run: str, accounts: list[str]) -> Counter:
    return Counter((r.account_id, r.symbol, r.side.value, r.quantity) for r in accepted_in(m, run, accounts))


def test_one_approval_submits_once_and_a_rejection_ends_the_instance(morning: Morning) -> None:
    m, run = morning, "review-one"
    waiting = [a for a in planned(m, run, 30)
               if m.svc.proposals.get(run, a).approvals_required == 1]
    approved, rejected, left = waiting[:2], waiting[2], waiting[3:]
    assert review.approve(m.engine, m.svc.proposals, run, approved, by="ann").changed == approved
    assert review.reject(m.engine, m.svc.proposals, run, [rejected], by="ann", reason="client").changed == [rejected]
    wait_terminal(m, run, [*approved, rejected])
    assert at_brokerage(m, run, approved) == orders_of(m, run, approved)  # every order once
    for account in approved:
        instance = m.engine.get(instance_id_for(run, account))
        assert instance.result["outcome"] in ("filled", "partly_rejected") and instance.result["approved_by"] == "ann"
        history = [r["outcome"] for r in m.engine.activities(instance.id)]
        assert history.count("signalled") == 1 and history[-1] == "applied"  # fetched .. reviewed .. submitted
    ended = m.engine.get(instance_id_for(run, rejected))
    assert ended.status is InstanceStatus.SUCCEEDED and ended.result["outcome"] == "rejected"
    assert ended.result["rejected_by"] == "ann" and ended.result["reason"] == "client"
    assert accepted_in(m, run, [rejected]) == []
    assert m.svc.proposals.get(run, rejected).status is ProposalStatus.REJECTED
    assert {m.engine.get(instance_id_for(run, a)).status for a in left} == {InstanceStatus.AWAITING}


def test_bulk_approval_over_a_run(morning: Morning) -> None:
    m, run = morning, "review-bulk"
    waiting = planned(m, run, 30)
    single = [a for a in waiting if m.svc.proposals.get(run, a).approvals_required == 1]
    result = review.approve(m.engine, m.svc.proposals, run, None, by="ann")  # pm approve RUN --all
    assert sorted(result.changed) == sorted(waiting)
    wait_terminal(m, run, single)
    assert at_brokerage(m, run, single) == orders_of(m, run, single)
    four_eyes = [a for a in waiting if a not in single]
    for account in four_eyes:  # one approval recorded, still awaiting the second person
        assert [a["by"] for a in m.svc.proposals.get(run, account).approvals] == ["ann"]
        assert m.engine.get(instance_id_for(run, account)).status is InstanceStatus.AWAITING
    again = review.approve(m.engine, m.svc.proposals, run, None, by="ann")
    assert again.changed == []
    assert at_brokerage(m, run, waiting) == orders_of(m, run, single)  # nothing sent twice, nothing unapproved


def test_four_eyes_one_approval_does_not_submit_the_same_person_twice_is_refused(morning: Morning) -> None:
    m, run = morning, "review-four-eyes"
    account = planned(m, run, 12, version=four_eyes_version(m))[0]  # every proposal needs two people
    iid = instance_id_for(run, account)
    assert review.approve(m.engine, m.svc.proposals, run, [account], by="ann").changed == [account]
    m.wait_until(lambda: m.engine.get(iid).status is InstanceStatus.AWAITING
                 and m.engine.get(iid).context["review"]["by"] == "ann", 30, "the first approval")
    assert accepted_in(m, run, [account]) == []  # one approval does not submit
    twice = review.approve(m.engine, m.svc.proposals, run, [account], by="ann")
    assert twice.changed == [] and "second approval by someone else" in twice.skipped[account]
    assert review.approve(m.engine, m.svc.proposals, run, [account], by="bob").changed == [account]
    wait_terminal(m, run, [account])
    assert at_brokerage(m, run, [account]) == orders_of(m, run, [account])
    assert [a["by"] for a in m.svc.proposals.get(run, account).approvals] == ["ann", "bob"]


def four_eyes_version(m: Morning) -> int:
    """A version of the rebalance definitions whose every proposal needs two people."""
    versions = set()
    for name in ("rebalance-ca", "rebalance-us"):
        document = json.loads((PMSettings().definitions_dir / f"{name}.json").read_text())
        document["parameters"]["four_eyes_over"] = 0
        versions.add(m.engine.publish(load_definition(json.dumps(document))))
    (version,) = versions
    return version


def test_an_operators_signal_to_the_pm_only_review_is_refused_and_recorded(morning: Morning) -> None:
    m, run = morning, "review-operator"
    account = planned(m, run, 12)[0]
    iid = instance_id_for(run, account)
    seq = m.engine.get(iid).seq
    for name, data in (("reject", {"by": "paula", "reason": "client on hold"}), ("approve", {"approvals": [1, 2]})):
        with pytest.raises(SignalRefused, match="needs the role pm") as info:
            m.engine.signal(iid, name, data, by=OLGA)
        assert info.value.code == "role"
    instance = m.engine.get(iid)
    assert instance.status is InstanceStatus.AWAITING and instance.seq == seq and "review" not in instance.context
    refused = [r for r in m.engine.activities(iid) if r["outcome"] == "refused"]
    assert [(r["signal"], r["by"], r["roles"]) for r in refused] == [("reject", "olga", ["operator", "viewer"]),
                                                                     ("approve", "olga", ["operator", "viewer"])]
    events = m.engine.audit(run=run, person="olga").events
    assert [(e.kind, e.detail["signal"], e.instance) for e in events] == [("signal_refused", "approve", iid),
                                                                          ("signal_refused", "reject", iid)]
    assert m.svc.proposals.get(run, account).status is ProposalStatus.PROPOSED
    assert review.approve(m.engine, m.svc.proposals, run, [account], by="ann").changed == [account]  # a pm may
    wait_terminal(m, run, [account])
    assert m.engine.get(iid).result["approved_by"] == "ann"
    assert at_brokerage(m, run, [account]) == orders_of(m, run, [account])


def test_four_eyes_moves_on_only_after_two_different_pm_principals(morning: Morning) -> None:
    m, run = morning, "review-quorum"
    account = planned(m, run, 12, version=four_eyes_version(m))[0]
    iid = instance_id_for(run, account)
    assert review.approve(m.engine, m.svc.proposals, run, [account], by="ann").changed == [account]
    instance = m.engine.get(iid)
    assert instance.status is InstanceStatus.AWAITING and instance.context["review"]["quorum"] == {
        "signal": "approve", "count": 2, "principals": ["ann"]}
    forged = {"approvals": [1, 2], "by": "bob", "quorum": {"count": 1, "principals": ["ann", "bob"]}}
    with pytest.raises(SignalRefused, match="ann sent it already"):  # one person cannot make the quorum alone
        m.engine.signal(iid, "approve", forged, by=ANN)
    with pytest.raises(SignalRefused, match="needs the role pm"):
        m.engine.signal(iid, "approve", forged, by=OLGA)
    assert m.engine.get(iid).status is InstanceStatus.AWAITING
    threading.Event().wait(1.0)  # nothing may be on its way to the brokerage meanwhile
    assert accepted_in(m, run, [account]) == []
    assert review.approve(m.engine, m.svc.proposals, run, [account], by="bob").changed == [account]
    wait_terminal(m, run, [account])
    assert at_brokerage(m, run, [account]) == orders_of(m, run, [account])
    history = [(r["outcome"], r.get("by"), r.get("quorum")) for r in m.engine.activities(iid)
               if r["outcome"] in ("counted", "signalled", "refused")]
    assert history == [("counted", "ann", "1 of 2"), ("refused", "ann", None), ("refused", "olga", None),
                       ("signalled", "bob", "2 of 2")]
    assert m.engine.get(iid).result["approved_by"] == "bob"


def test_a_signal_sent_twice_with_the_same_key_applies_once(morning: Morning) -> None:
    m, run = morning, "review-same-key"
    account = next(a for a in planned(m, run, 12) if m.svc.proposals.get(run, a).approvals_required == 1)
    iid = instance_id_for(run, account)
    assert m.svc.proposals.approve_final(m.svc.proposals.get(run, account), "ann", m.engine.clock()).recorded
    results, errors = [], []
    barrier = threading.Barrier(4)

    def send() -> None:
        barrier.wait()
        try:
            results.append(m.engine.signal(iid, "approve", {"note": "ok"}, by=ANN, key="approve:ann"))
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


def test_a_signal_and_the_timeout_raced_exactly_one_wins(morning: Morning) -> None:
    m, run = morning, "review-race"
    until = datetime.now(UTC) + timedelta(seconds=45)  # enough to plan the run; then the race
    waiting = [a for a in planned(m, run, 24, until=until) if m.svc.proposals.get(run, a).approvals_required == 1]
    assert waiting and datetime.now(UTC) < until, "the run took longer to plan than its review deadline"
    pause = max((until - datetime.now(UTC)).total_seconds() - 0.5, 0)
    threading.Event().wait(pause)
    refused = {}
    for account in waiting:  # approvals spread across the deadline
        result = review.approve(m.engine, m.svc.proposals, run, [account], by="ann")
        refused.update(result.skipped)
    wait_terminal(m, run, waiting)
    for account in waiting:
        instance = m.engine.get(instance_id_for(run, account))
        history = [r["outcome"] for r in m.engine.activities(instance.id)]
        signalled, timed_out = history.count("signalled"), history.count("timed_out")
        assert signalled + timed_out == 1, (account, history)  # exactly one wins
        proposal = m.svc.proposals.get(run, account)
        if timed_out:
            assert instance.result["outcome"] == "expired" and proposal.status is ProposalStatus.EXPIRED
            assert accepted_in(m, run, [account]) == []  # an expired proposal is never submitted
            assert "cut-off" in refused.get(account, "cut-off")
        else:
            assert instance.result["outcome"] in ("filled", "partly_rejected")
            assert at_brokerage(m, run, [account]) == orders_of(m, run, [account])
