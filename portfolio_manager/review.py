"""The portfolio managers' review: one door for a decision, and what a proposal shows.

``rebalance-ca``/``rebalance-us`` record their proposal, then await ``approve`` or ``reject``
at their ``review`` node until the cut-off (the exchange's close minus ``review_cutoff``).
The decision is taken there and nowhere else: :func:`approve` and :func:`reject` (behind
``tradeflow pm approve/reject`` and the console) send the engine's guarded signal with the
caller's :class:`~engine.Principal`, and the engine checks the role (``pm``), the required
reason of a rejection, the cut-off and the quorum (two different people over
``four_eyes_over``), from its own records. Once the engine applied a decision, the workflow's
own step (``record_decision``) writes it on the proposal; the block and submit steps send
the orders of an approved proposal only.

So a generic signal from the console's instance page goes through the same checks, and the
proposal, the instance and the brokerage cannot disagree. What only the instance knows is
added when a proposal is read here (:func:`proposal`, :func:`proposals`, :func:`pending`):
the approvals counted so far, and ``cancelled`` when an operator cancelled the instance
before its orders were taken.

Proposals submitted separately (``invest-deposit``: their workflow ended at the proposal)
are decided in the proposal store, by a principal with the ``pm`` role.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.errors import NotFound, SignalRefused
from engine.instance import InstanceStatus
from portfolio_manager.proposals import (
    Decisions,
    Proposal,
    ProposalStatus,
    ProposalStore,
    SubmitStarted,
    submit_approved,
)

if TYPE_CHECKING:
    from engine import Principal
    from engine.api import Engine
    from engine.instance import Instance

APPROVE = "approve"
REJECT = "reject"
#: The role that decides proposals (the rebalances' review node asks for it too).
PM_ROLE = "pm"
#: The await node of the rebalances where the decision is taken.
REVIEW_NODE = "review"
#: Statuses whose orders were taken for submission: a cancellation after that changes nothing sent.
_TAKEN = (ProposalStatus.SUBMITTING, ProposalStatus.SUBMITTED)


def approve(engine: Engine, store: ProposalStore, run: str, account_ids: Iterable[str] | None = None, *,
            by: Principal, note: str = "") -> Decisions:
    """Approve, as ``by``, the proposals of ``account_ids`` of ``run`` (every proposal of the run when None).

    A proposal reviewed in its workflow is submitted by its instance once the engine counted
    its quorum (``waiting`` lists those that still need another person); a separately
    submitted one waits for :func:`submit`. Refusals, with the engine's reason, are in
    ``skipped``; an approval applied before is in ``already`` (nothing done again).
    """
    return _decide(engine, store, run, account_ids, ProposalStatus.APPROVED, by, note)


def reject(engine: Engine, store: ProposalStore, run: str, account_ids: Iterable[str] | None = None, *,
           by: Principal, reason: str = "") -> Decisions:
    """Reject, as ``by``, the proposals of ``account_ids`` of ``run``; one reviewed in its workflow ends there."""
    return _decide(engine, store, run, account_ids, ProposalStatus.REJECTED, by, reason)


def _decide(engine: Engine, store: ProposalStore, run: str, account_ids: Iterable[str] | None,
            to: ProposalStatus, by: Principal, note: str) -> Decisions:
    ids = store.account_ids(run) if account_ids is None else list(dict.fromkeys(account_ids))
    found = store.get_many(run, ids)
    result = Decisions(to)
    known = {p.account_id for p in found}
    result.skipped.update({a: f"no proposal for {a} in run {run} (`tradeflow pm proposals {run}` lists them)"
                           for a in ids if a not in known})
    separate = [p.account_id for p in found if not p.in_workflow]
    if separate:
        if by.has(PM_ROLE):
            decided = store.decide(run, separate, to, by=by.name, note=note)
            result.changed += decided.changed
            result.skipped.update(decided.skipped)
        else:
            result.skipped.update(dict.fromkeys(separate, _no_role(by, to)))
    for p in found:
        if p.in_workflow:
            _signal(engine, p, to, by, note, result)
    return result


def _no_role(by: Principal, to: ProposalStatus) -> str:
    verb = "approve" if to is ProposalStatus.APPROVED else "reject"
    return f"{by.name} may not {verb}: the role {PM_ROLE!r} decides proposals ({by} acts here)"


def _signal(engine: Engine, proposal: Proposal, to: ProposalStatus, by: Principal, note: str,
            into: Decisions) -> None:
    """Send the decision to the proposal's instance; file the answer under changed, already or skipped."""
    name, data = (APPROVE, {"note": note}) if to is ProposalStatus.APPROVED else (REJECT, {"reason": note})
    account = proposal.account_id
    try:
        sent = engine.signal(proposal.instance_id, name, {k: v for k, v in data.items() if v}, by=by)
    except NotFound as exc:
        into.skipped[account] = f"{account}: {exc}"
        return
    except SignalRefused as exc:
        done = applied_decision(engine, proposal.instance_id)
        if done is not None and done.signal == name:
            into.already[account] = f"{account}: {done.describe()} already; nothing to do"
        else:
            into.skipped[account] = f"{account}: {exc}"
        return
    if sent.duplicate:
        into.already[account] = f"{account}: {name} was applied before; nothing to do"
        return
    into.changed.append(account)
    if sent.counted:  # a four-eyes approval counted: another person's is still needed
        into.waiting.append(account)


class Decision:
    """A decision the engine applied at a proposal's review: which signal, from whom, when."""

    def __init__(self, signal: str, approvals: list[dict[str, Any]], reason: str | None = None) -> None:
        self.signal = signal
        self.approvals = approvals
        self.reason = reason

    @property
    def names(self) -> list[str]:
        """Who sent it (a quorum: every counted principal, oldest first)."""
        return [str(a["by"]) for a in self.approvals]

    def describe(self) -> str:
        """``approved by ann and bob`` / ``rejected by ann``."""
        verb = "approved" if self.signal == APPROVE else "rejected"
        return f"{verb} by {' and '.join(self.names) or '?'}"


def applied_decision(engine: Engine, instance_id: str) -> Decision | None:
    """The decision the instance's review took (from the engine's history), None while undecided."""
    try:
        history = engine.activities(instance_id)
    except NotFound:
        return None
    counted: list[dict[str, Any]] = []
    for record in history:
        if record.get("node") != REVIEW_NODE or record.get("signal") is None:
            continue
        outcome = record.get("outcome")
        entry = {"by": record.get("by"), "at": record.get("ended_at") or record.get("started_at"),
                 "note": (record.get("received") or {}).get("note")}
        if outcome == "counted":
            counted.append(entry)
        elif outcome == "signalled":
            if record["signal"] == APPROVE:
                return Decision(APPROVE, [*counted, entry])
            return Decision(record["signal"], [entry], (record.get("received") or {}).get("reason"))
    return None


# --------------------------------------------------------------------------- reading


def _shown(proposal: Proposal, instance: Instance | None) -> Proposal:
    """``proposal`` as its instance shows it: approvals counted so far, and cancelled when it was."""
    if not proposal.in_workflow or instance is None or instance.id != proposal.instance_id:
        return proposal
    if instance.status is InstanceStatus.CANCELLED and proposal.status not in _TAKEN:
        return proposal.model_copy(update={"status": ProposalStatus.CANCELLED})
    quorum = instance.quorum or {}
    if (proposal.status is ProposalStatus.PROPOSED and instance.status is InstanceStatus.AWAITING
            and instance.node == REVIEW_NODE and quorum.get("signal") == APPROVE):
        approvals = [{"by": p.get("name"), "at": p.get("at"), "note": p.get("note")}
                     for p in quorum.get("principals") or []]
        return proposal.model_copy(update={"approvals": approvals})
    return proposal


def proposal(engine: Engine, store: ProposalStore, run: str, account_id: str) -> Proposal:
    """One proposal as it stands (NoSuchProposal says how to find the right one)."""
    found = store.get(run, account_id)
    try:
        instance = engine.get(found.instance_id) if found.in_workflow else None
    except NotFound:
        instance = None
    return _shown(found, instance)


def proposals(engine: Engine, store: ProposalStore, run: str,
              statuses: Iterable[ProposalStatus | str] | None = None) -> list[Proposal]:
    """Every proposal of ``run`` as it stands (only those in ``statuses`` when given), by account id.

    Reads the run's awaiting and cancelled instances once, not one instance per proposal.
    """
    wanted = {ProposalStatus(s) for s in statuses} if statuses else None
    instances = {i.id: i for i in engine.list(run, [InstanceStatus.AWAITING, InstanceStatus.CANCELLED])}
    shown = [_shown(p, instances.get(p.instance_id)) for p in store.list(run)]
    return [p for p in shown if wanted is None or p.status in wanted]


def pending(engine: Engine, store: ProposalStore, run: str) -> list[Proposal]:
    """The proposals of ``run`` still awaiting a decision in their workflow (approvals so far), by account id."""
    return [p for p in proposals(engine, store, run, [ProposalStatus.PROPOSED]) if p.in_workflow]


def submit(engine: Engine, store: ProposalStore, run: str, account_ids: Iterable[str] | None = None, *,
           version: int | str = "production", by: Principal) -> SubmitStarted:
    """Submit, as ``by`` (role ``pm``), the approved proposals that are submitted separately (``submit-orders``)."""
    if not by.has(PM_ROLE):
        ids = list(account_ids) if account_ids is not None else store.account_ids(run)
        refused = SubmitStarted(run, "")
        refused.skipped.update(dict.fromkeys(ids, f"{by.name} may not submit: the role {PM_ROLE!r} submits"))
        return refused
    return submit_approved(engine, store, run, account_ids, version=version, by=by.name)


def cutoff_text(proposal: Proposal) -> str:
    """The proposal's cut-off as an ISO UTC time ("no cut-off" when it has none)."""
    if proposal.cutoff is None:
        return "no cut-off"
    return datetime.fromtimestamp(proposal.cutoff, UTC).isoformat(timespec="minutes")


__all__ = ["APPROVE", "REJECT", "PM_ROLE", "REVIEW_NODE", "Decision", "applied_decision", "approve", "reject",
           "proposal", "proposals", "pending", "submit", "cutoff_text"]
