"""One door for a decision, on the real definitions driven one message at a time (fakeredis, no Celery).

After each sequence, the proposal as shown (``portfolio_manager.review``), its instance and the
simulated brokerage agree: an operator's signal is refused, a cancelled block member shows
``cancelled`` and sends nothing, a short fill ends ``partly_filled``; and the CLI's exits.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

import portfolio_manager.cli as pm_cli
from engine.errors import SignalRefused
from engine.instance import InstanceStatus
from portfolio_manager import review
from portfolio_manager.daily import instance_id_for, start_daily_rebalance
from portfolio_manager.proposals import ProposalStatus
from tests.unit.portfolio_manager.test_pm_workflows import (
    ANN,
    BOB,
    CUTOFF,
    OPERATOR,
    PM,
    RUN_DATE,
    World,
    _four_eyes_for_all,
    world,  # noqa: F401  (the fixture)
)

RUN = "rebalance-2026-11-20"


def planned(w: World, **options: object) -> list[str]:
    """Start the day's run and drive it until every account awaits its review; those accounts."""
    start_daily_rebalance(w.engine, w.svc.book, RUN_DATE, **options)  # type: ignore[arg-type]
    w.driver.run_until_idle()
    return [p.account_id for p in review.pending(w.engine, w.svc.proposals, RUN)]


def sent(w: World) -> int:
    """Everything that reached the brokerage: orders and blocks."""
    return len(w.svc.brokerage.accepted_orders()) + len(w.svc.brokerage.accepted_blocks())  # type: ignore[attr-defined]


def test_an_operators_rejection_is_refused_and_changes_nothing(world: World) -> None:  # noqa: F811
    account = planned(world)[0]
    iid = instance_id_for(RUN, account)
    refused = review.reject(world.engine, world.svc.proposals, RUN, [account], by=OPERATOR, reason="on hold")
    assert refused.changed == [] and "needs the role pm" in refused.skipped[account]
    with pytest.raises(SignalRefused, match="needs the role pm"):  # the instance page's generic form: the same
        world.engine.signal(iid, "reject", {"by": "paula", "reason": "client on hold"}, by=OPERATOR)
    world.driver.run_until_idle()
    assert world.engine.get(iid).status is InstanceStatus.AWAITING
    assert review.proposal(world.engine, world.svc.proposals, RUN, account).status is ProposalStatus.PROPOSED
    assert [r["outcome"] for r in world.engine.activities(iid)][-2:] == ["refused", "refused"]
    assert review.approve(world.engine, world.svc.proposals, RUN, [account], by=PM).changed == [account]


def test_a_rejection_without_a_reason_is_refused(world: World) -> None:  # noqa: F811
    account = planned(world)[0]
    refused = review.reject(world.engine, world.svc.proposals, RUN, [account], by=PM, reason="")
    assert refused.changed == [] and "'reason'" in refused.skipped[account]


def test_a_cancelled_block_member_shows_cancelled_and_sends_nothing(world: World) -> None:  # noqa: F811
    accounts = planned(world, regions=["CA"])
    kept, cancelled = accounts[0], accounts[1]
    assert review.approve(world.engine, world.svc.proposals, RUN, [kept, cancelled], by=PM).changed
    world.driver.run_until_idle()
    iid = instance_id_for(RUN, cancelled)
    assert world.engine.get(iid).status is InstanceStatus.GATHERING
    assert world.svc.proposals.get(RUN, cancelled).status is ProposalStatus.APPROVED
    world.engine.cancel(iid, "client closed the account")
    shown = review.proposal(world.engine, world.svc.proposals, RUN, cancelled)
    assert shown.status is ProposalStatus.CANCELLED
    assert {p.account_id for p in review.proposals(world.engine, world.svc.proposals, RUN, ["cancelled"])} == {
        cancelled}
    world.clock.now = CUTOFF  # the block closes and trades
    world.driver.run_until_idle()
    assert world.svc.proposals.get(RUN, kept).status is ProposalStatus.SUBMITTED
    assert review.proposal(world.engine, world.svc.proposals, RUN, cancelled).status is ProposalStatus.CANCELLED
    traded = {o.symbol for o in world.svc.brokerage.accepted_blocks()}  # type: ignore[attr-defined]
    assert traded == {o.symbol for o in world.svc.proposals.get(RUN, kept).orders}  # nothing of the cancelled one
    again = review.approve(world.engine, world.svc.proposals, RUN, [cancelled], by=PM)
    assert again.changed == [] and again.already  # approved before it was cancelled: nothing to do


def test_a_short_fill_ends_partly_filled(world: World) -> None:  # noqa: F811
    accounts = planned(world, regions=["CA"])
    account = next(a for a in accounts if len(world.svc.proposals.get(RUN, a).orders) >= 2)
    proposal = world.svc.proposals.get(RUN, account)
    order = max(proposal.orders, key=lambda o: o.quantity)
    assert order.quantity >= 2
    world.svc.brokerage.set_liquidity(order.symbol, order.quantity // 2)  # type: ignore[attr-defined]
    assert review.approve(world.engine, world.svc.proposals, RUN, [account], by=PM).changed == [account]
    world.clock.now = CUTOFF
    world.driver.run_until_idle()
    result = world.engine.get(instance_id_for(RUN, account)).result
    assert result["outcome"] == "partly_filled" and result["partial"] >= 1 and result["rejected"] == 0
    receipts = world.svc.proposals.get(RUN, account).receipts
    short = next(r for r in receipts if r["index"] == order.index)
    assert short["status"] == "PARTIALLY_FILLED" and short["quantity"] == order.quantity // 2


def test_one_pm_cannot_make_four_eyes_alone(world: World) -> None:  # noqa: F811
    version = _four_eyes_for_all(world)
    account = planned(world, version=version)[0]
    assert review.approve(world.engine, world.svc.proposals, RUN, [account], by=ANN).waiting == [account]
    twice = review.approve(world.engine, world.svc.proposals, RUN, [account], by=ANN)
    assert twice.changed == [] and "ann sent it already" in twice.skipped[account]
    world.clock.now = CUTOFF + 1
    world.driver.run_until_idle()
    assert sent(world) == 0
    assert review.proposal(world.engine, world.svc.proposals, RUN, account).status is ProposalStatus.EXPIRED


def test_four_eyes_approvers_are_shown_in_the_order_they_approved(world: World) -> None:  # noqa: F811
    version = _four_eyes_for_all(world)
    account = planned(world, version=version)[0]
    for who in (BOB, ANN):  # bob first: not the names' alphabetical order
        review.approve(world.engine, world.svc.proposals, RUN, [account], by=who)
    world.driver.run_until_idle()
    proposal = review.proposal(world.engine, world.svc.proposals, RUN, account)
    assert [a["by"] for a in proposal.approvals] == ["bob", "ann"] and proposal.decided_by == "ann"


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CliRunner, World]]:  # noqa: F811
    monkeypatch.setattr(pm_cli, "_context", lambda: (world.engine, world.svc))
    monkeypatch.setenv("TRADEFLOW_PRINCIPAL", "ann")
    monkeypatch.setenv("TRADEFLOW_PRINCIPAL_ROLES", "pm")
    yield CliRunner(), world


def test_approving_again_is_a_no_op_that_exits_0_and_says_so(cli: tuple[CliRunner, World]) -> None:
    runner, w = cli
    account = planned(w)[0]
    first = runner.invoke(pm_cli.pm, ["approve", RUN, account])
    assert first.exit_code == 0 and "approved by ann: 1" in first.stdout
    w.driver.run_until_idle()
    again = runner.invoke(pm_cli.pm, ["approve", RUN, account])
    assert again.exit_code == 0 and "approved by ann: 0, already done 1" in again.stdout
    assert f"{account}: approved by ann already; nothing to do" in again.stderr


def test_a_refusal_exits_1_with_the_engines_reason(cli: tuple[CliRunner, World],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runner, w = cli
    account = planned(w, version=_four_eyes_for_all(w))[0]
    assert runner.invoke(pm_cli.pm, ["approve", RUN, account]).exit_code == 0
    twice = runner.invoke(pm_cli.pm, ["approve", RUN, account])
    assert twice.exit_code == 1 and "ann sent it already (1 of 2)" in twice.stderr
    monkeypatch.setenv("TRADEFLOW_PRINCIPAL", "olga")
    monkeypatch.setenv("TRADEFLOW_PRINCIPAL_ROLES", "operator")
    operator = runner.invoke(pm_cli.pm, ["reject", RUN, account, "--reason", "hold"])
    assert operator.exit_code == 1 and "needs the role pm" in operator.stderr
    posing = runner.invoke(pm_cli.pm, ["approve", RUN, account, "--by", "bob"])
    assert posing.exit_code == 2 and "acts as olga" in posing.output
    assert w.engine.get(instance_id_for(RUN, account)).status is InstanceStatus.AWAITING
    w.clock.now = CUTOFF + 1  # past the cut-off, before the timer moved the instance
    monkeypatch.setenv("TRADEFLOW_PRINCIPAL", "bob")
    monkeypatch.setenv("TRADEFLOW_PRINCIPAL_ROLES", "pm")
    late = runner.invoke(pm_cli.pm, ["approve", RUN, account])
    assert late.exit_code == 1 and "timed out" in late.stderr
    assert sent(w) == 0


def test_pm_run_review_until_sets_the_window(cli: tuple[CliRunner, World]) -> None:
    runner, w = cli
    until = "2026-11-20T23:00+00:00"
    started = runner.invoke(pm_cli.pm, ["run", "--date", "2026-11-20", "--no-watch", "--review-until", until])
    assert started.exit_code == 0 and "warning" not in started.stderr
    instance = w.engine.list(RUN)[0]
    assert instance.data["review_until"] == datetime.fromisoformat(until).isoformat()
    naive = runner.invoke(pm_cli.pm, ["run", "--no-watch", "--review-until", "2026-11-20T23:00"])
    assert naive.exit_code == 2 and "no UTC offset" in naive.output


def test_pm_run_after_the_cut_off_warns_on_stderr(cli: tuple[CliRunner, World]) -> None:
    runner, w = cli
    w.clock.now = datetime(2026, 11, 20, 20, 45, tzinfo=UTC).timestamp()  # the close minus 30 minutes passed
    late = runner.invoke(pm_cli.pm, ["run", "--date", "2026-11-20", "--no-watch"])
    assert late.exit_code == 0 and "run rebalance-2026-11-20: started" in late.stdout
    assert "closed at 2026-11-20T20:30+00:00" in late.stderr and "expire as soon as" in late.stderr
    assert "--review-until 2026-11-20T22:45+00:00" in late.stderr
    with_window = runner.invoke(pm_cli.pm, ["run", "--date", "2026-11-20", "--no-watch", "--run", "later",
                                            "--review-until", "2026-11-20T22:00+00:00"])
    assert with_window.exit_code == 0 and "warning" not in with_window.stderr
