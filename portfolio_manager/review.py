"""The portfolio managers' review of proposals reviewed inside their workflow.

``rebalance-ca``/``rebalance-us`` record their proposal, then await ``approve`` or ``reject``
at their ``review`` node until the cut-off (the exchange's close minus ``review_cutoff``).
A decision here is taken in two atomic steps, each safe to repeat:

1. the proposal store records it (:meth:`ProposalStore.approve_final` / ``reject_final``): the
   guard against two people deciding the same proposal differently, against a decision after
   the cut-off, and against one person approving a four-eyes proposal twice;
2. the account's instance is signalled (``Engine.signal``, as a principal of role ``pm`` named
   after the author, keyed by the decision and its author, so a resend is a no-op). The engine
   counts distinct approvers at the ``review`` node (its quorum) and the workflow submits once
   there are enough; a rejection ends it.

Python API (the CLI and the console call these): :func:`approve`, :func:`reject`,
:func:`submit` (the separately submitted proposals of ``submit-orders``), :func:`pending`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from engine.errors import NotFound, SignalRefused
from engine.principal import Principal
from portfolio_manager.errors import ReviewRefused
from portfolio_manager.proposals import (
    Decisions,
    Proposal,
    ProposalStatus,
    ProposalStore,
    SubmitStarted,
    submit_approved,
)

if TYPE_CHECKING:
    from engine.api import Engine

APPROVE = "approve"
REJECT = "reject"
#: The role a portfolio manager's principal holds (the review node's signals require it).
PM_ROLE = "pm"


def _principal(who: str) -> Principal:
    """The principal a decision by ``who`` is signalled as."""
    return Principal(who, frozenset({PM_ROLE}))


def approve(engine: Engine, store: ProposalStore, run: str, account_ids: Iterable[str] | None = None, *,
            by: str = "", note: str = "") -> Decisions:
    """Approve the proposals of ``account_ids`` of ``run`` (every proposal of the run when None).

    A proposal reviewed in its workflow is submitted by its instance once it has the approvals
    it needs (two different people over ``four_eyes_over``); a separately submitted one waits
    for :func:`submit`. Refusals (past the cut-off, same person twice...) are in ``skipped``.
    """
    return _decide(engine, store, run, account_ids, ProposalStatus.APPROVED, by, note)


def reject(engine: Engine, store: ProposalStore, run: str, account_ids: Iterable[str] | None = None, *,
           by: str = "", reason: str = "") -> Decisions:
    """Reject the proposals of ``account_ids`` of ``run``; one reviewed in its workflow ends there."""
    return _decide(engine, store, run, account_ids, ProposalStatus.REJECTED, by, reason)


def _decide(engine: Engine, store: ProposalStore, run: str, account_ids: Iterable[str] | None,
            to: ProposalStatus, by: str, note: str) -> Decisions:
    """Decide in their workflow the proposals reviewed there, the others in the store alone."""
    ids = store.account_ids(run) if account_ids is None else list(dict.fromkeys(account_ids))
    in_workflow = [p for p in store.get_many(run, ids) if p.in_workflow]
    taken = {p.account_id for p in in_workflow}
    result = store.decide(run, [a for a in ids if a not in taken], to, by=by, note=note)
    decide_in_workflow(engine, store, in_workflow, to, by=by, note=note, into=result)
    return result


def submit(engine: Engine, store: ProposalStore, run: str, account_ids: Iterable[str] | None = None, *,
           version: int | str = "production", by: str = "") -> SubmitStarted:
    """Submit the approved proposals that are submitted separately (``submit-orders``); ``by`` is recorded."""
    return submit_approved(engine, store, run, account_ids, version=version, by=by)


def pending(store: ProposalStore, run: str) -> list[Proposal]:
    """The proposals of ``run`` still awaiting a decision in their workflow, by account id."""
    return [p for p in store.list(run, [ProposalStatus.PROPOSED]) if p.in_workflow]


def cutoff_text(proposal: Proposal) -> str:
    """The proposal's cut-off as an ISO UTC time ("no cut-off" when it has none)."""
    if proposal.cutoff is None:
        return "no cut-off"
    return datetime.fromtimestamp(proposal.cutoff, UTC).isoformat(timespec="minutes")


def _late(proposal: Proposal) -> ReviewRefused:
    return ReviewRefused(
        f"the review of {proposal.account_id} in run {proposal.run} closed at its cut-off {cutoff_text(proposal)} "
        "(the exchange's close minus the review cut-off): the proposal expired and is never submitted; "
        "its account is proposed again in the next run")


def decide_in_workflow(engine: Engine, store: ProposalStore, proposals: list[Proposal], to: ProposalStatus, *,
                       by: str, note: str, into: Decisions) -> None:
    """Decide proposals reviewed in their workflow: record each decision, then signal its instance."""
    now = engine.clock()
    for proposal in proposals:
        try:
            if to is ProposalStatus.APPROVED:
                _approve_one(engine, store, proposal, by, note, now)
            else:
                _reject_one(engine, store, proposal, by, note, now)
        except ReviewRefused as exc:
            into.skipped[proposal.account_id] = str(exc)
        else:
            into.changed.append(proposal.account_id)


def _approve_one(engine: Engine, store: ProposalStore, proposal: Proposal, by: str, note: str, now: float) -> None:
    if proposal.approvals_required > 1 and not by:
        raise ReviewRefused(f"{proposal.account_id}: orders of {proposal.order_value:,.2f} need two approvals by "
                            "different people: say who approves (--by NAME)")
    who = by or "anonymous"
    verdict = store.approve_final(proposal, who, now, note)
    if not verdict.recorded:
        if verdict.reason == "late" or verdict.status == ProposalStatus.EXPIRED.value:
            raise _late(proposal)
        if verdict.reason != "same":
            raise ReviewRefused(f"{proposal.account_id}: {verdict.status or 'missing'}: can no longer be approved")
    current = store.get(proposal.run, proposal.account_id)
    try:
        sent = engine.signal(proposal.instance_id, APPROVE, {"note": note or None}, by=_principal(who),
                             key=f"{APPROVE}:{who}")
    except (SignalRefused, NotFound) as exc:
        if _timed_out(engine, proposal):
            raise _late(proposal) from exc
        raise ReviewRefused(f"{proposal.account_id}: approval recorded, but its instance did not take it: {exc}; "
                            "run the same approval again once the instance awaits review") from exc
    if not verdict.recorded and sent.duplicate:  # this person's approval had reached the instance before
        if current.status is ProposalStatus.PROPOSED:
            raise ReviewRefused(
                f"{proposal.account_id}: {who} approved it already; orders of {proposal.order_value:,.2f} need a "
                f"second approval by someone else (four-eyes) before they are submitted")
        raise ReviewRefused(f"{proposal.account_id}: {current.status.value} already (approved by {who})")


def _reject_one(engine: Engine, store: ProposalStore, proposal: Proposal, by: str, note: str, now: float) -> None:
    who = by or "anonymous"
    verdict = store.reject_final(proposal, who, now, note)
    if not verdict.recorded:
        if verdict.reason == "late" or verdict.status == ProposalStatus.EXPIRED.value:
            raise _late(proposal)
        if verdict.status != ProposalStatus.REJECTED.value:
            raise ReviewRefused(f"{proposal.account_id}: {verdict.status or 'missing'}: can no longer be rejected")
    try:
        sent = engine.signal(proposal.instance_id, REJECT, {"reason": note or None}, by=_principal(who),
                             key=REJECT)
    except (SignalRefused, NotFound) as exc:
        if _timed_out(engine, proposal):
            raise _late(proposal) from exc
        raise ReviewRefused(f"{proposal.account_id}: rejection recorded, but its instance did not take it: "
                            f"{exc}") from exc
    if not verdict.recorded and sent.duplicate:
        raise ReviewRefused(f"{proposal.account_id}: rejected already")


def _timed_out(engine: Engine, proposal: Proposal) -> bool:
    """True when the proposal's instance left its review through the timeout."""
    try:
        history = engine.activities(proposal.instance_id)
    except NotFound:
        return False
    return any(record.get("outcome") == "timed_out" for record in history)


__all__ = ["APPROVE", "REJECT", "approve", "reject", "submit", "pending", "cutoff_text", "decide_in_workflow"]
