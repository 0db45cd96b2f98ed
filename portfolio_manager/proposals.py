"""Proposals: what each account's workflow proposes, and the review that decides its fate.

A workflow records its plan as a :class:`Proposal` (``record_proposal`` action). Two kinds:

- **Reviewed in its workflow** (``rebalance-ca``/``rebalance-us``: ``in_workflow``): the
  instance awaits the portfolio managers' ``approve``/``reject`` signal at its ``review``
  node, then submits the orders itself. The decision is taken there, and only there: the
  engine checks the sender's role, the cut-off and the quorum (two different people over
  the definition's ``four_eyes_over``). This store never decides such a proposal: its status
  is written by the workflow's own steps once the engine applied the decision
  (``record_decision``, ``expire_proposal``, the block and submit steps), and
  :mod:`portfolio_manager.review` adds what only the instance knows (the approvals so far,
  and ``cancelled`` when an operator cancelled the instance before its orders were taken)::

      proposed ──(quorum of approvals)──> approved ──(block / submit step)──> submitting ──> submitted
          ├──(reject)──> rejected
          ├──(cut-off passed, no decision)──> expired
          └──(instance cancelled before its orders were taken: shown, not stored)──> cancelled

- **Submitted separately** (``invest-deposit``, rebalance versions before the review): the
  workflow ends at the proposal; portfolio managers approve or reject it (reversible until it
  is submitted) and ``submit_approved`` starts one ``submit-orders`` instance per proposal::

      proposed ──approve──> approved ──submit──> submitting ──(workflow)──> submitted
          │  ^                 │
          │  └────approve──────┤ (a rejected one can still be approved, and vice versa)
          └──reject──> rejected <┘

Every status change is one compare-and-set (a small Lua script), so two reviewers, or a
review racing a submission, can never both win: once ``submitting``, a proposal can no
longer be rejected, and a re-recorded plan (a retried workflow) never overwrites a decision.

Keys, under the store's prefix ``P`` (default ``pm:prop:``; the engine's keys are never touched)::

    P runs                    zset   run label, scored by first proposal time
    P <run>:accounts          set    account ids with a proposal in the run
    P <run>:<account>         hash   body (Proposal JSON), status, decided_by, decided_at, note,
                                     submission (instance id), receipts (JSON), submitted_at

A proposal is kept ``retention_seconds`` (the engine's retention) after its plan was recorded,
and a run's account set as long as its last proposal; the runs index loses the runs whose
account set expired each time a new run records its first proposal (:meth:`ProposalStore.trim_runs`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.api import Engine, StartItem
from engine.keyspace import KeySpace, read_lua, text
from portfolio_manager.errors import NoSuchProposal

#: Seconds a proposal is kept after its plan was recorded, unless told otherwise (the engine's default).
DEFAULT_RETENTION_SECONDS = 14 * 86400


class ProposalStatus(StrEnum):
    """Where a proposal is in its review."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    EXPIRED = "expired"
    #: Never stored: shown when the proposal's instance was cancelled before its orders were taken.
    CANCELLED = "cancelled"


#: From which statuses each decision may be taken (taking it again is a harmless no-op).
ALLOWED_FROM: dict[ProposalStatus, tuple[ProposalStatus, ...]] = {
    ProposalStatus.APPROVED: (ProposalStatus.PROPOSED, ProposalStatus.REJECTED, ProposalStatus.APPROVED),
    ProposalStatus.REJECTED: (ProposalStatus.PROPOSED, ProposalStatus.APPROVED, ProposalStatus.REJECTED),
    ProposalStatus.SUBMITTING: (ProposalStatus.APPROVED, ProposalStatus.SUBMITTING),
    ProposalStatus.SUBMITTED: (ProposalStatus.SUBMITTING, ProposalStatus.SUBMITTED),
    ProposalStatus.EXPIRED: (ProposalStatus.PROPOSED, ProposalStatus.APPROVED, ProposalStatus.REJECTED,
                             ProposalStatus.EXPIRED),
}

#: From which statuses a workflow records the decision its instance took (again: a harmless no-op).
RECORDED_FROM: dict[ProposalStatus, tuple[ProposalStatus, ...]] = {
    ProposalStatus.APPROVED: (ProposalStatus.PROPOSED, ProposalStatus.APPROVED),
    ProposalStatus.REJECTED: (ProposalStatus.PROPOSED, ProposalStatus.REJECTED),
}



class ProposedOrder(BaseModel):
    """One order of a proposal, as the order calculation planned it."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0, description="Position in the plan; part of the order's idempotency key.")
    side: str
    symbol: str
    quantity: float
    reason: str
    est_value: float
    lots: list[dict[str, Any]] | None = None

    @property
    def est_price(self) -> float | None:
        """Estimated price per share (est_value / quantity)."""
        return round(self.est_value / self.quantity, 6) if self.quantity else None

    @property
    def realized_gain(self) -> float:
        """Gain (negative: loss) realized by a sell in a taxable account; 0 otherwise."""
        return round(sum(float(lot.get("realized_gain", 0.0)) for lot in self.lots or ()), 2)


class Proposal(BaseModel):
    """One account's proposal in one run: the plan, where it came from, and its review."""

    model_config = ConfigDict(frozen=True)

    run: str
    account_id: str
    region: str
    account_type: str
    as_of: date
    workflow: str
    version: int
    instance_id: str
    mode: str
    orders: list[ProposedOrder]
    diagnostics: list[str] = Field(default_factory=list)
    restrictions: list[dict[str, Any]] = Field(default_factory=list)
    cash_after: float = 0.0
    recorded_at: float = 0.0
    status: ProposalStatus = ProposalStatus.PROPOSED
    decided_by: str | None = None
    decided_at: float | None = None
    note: str | None = None
    submission: str | None = None
    receipts: list[dict[str, Any]] = Field(default_factory=list)
    submitted_at: float | None = None
    #: Reviewed inside its workflow (await node): approve/reject signal the instance, which submits.
    in_workflow: bool = False
    #: Approvals needed before submission: 2 (four-eyes) when the order value is over the threshold.
    approvals_required: int = 1
    #: Epoch second after which the proposal can no longer be decided (it expires).
    cutoff: float | None = None
    #: Who asked for the submission (``submit_approved(by=...)``; none when the workflow submits).
    submitted_by: str | None = None
    #: Every approval so far, oldest first: ``{"by": who, "at": epoch seconds, "note": ...}``.
    approvals: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def order_value(self) -> float:
        """Estimated value of every order, buys and sells (what four-eyes compares to its threshold)."""
        return round(sum(o.est_value for o in self.orders), 2)

    @property
    def realized_gain(self) -> float:
        """Total gain (negative: loss) the sells would realize."""
        return round(sum(o.realized_gain for o in self.orders), 2)

    @property
    def tlh_harvests(self) -> int:
        """Tax-loss harvests: TLH sells."""
        return sum(1 for o in self.orders if o.reason == "TLH" and o.side == "SELL")

    @property
    def buy_value(self) -> float:
        """Estimated value of the buys."""
        return round(sum(o.est_value for o in self.orders if o.side == "BUY"), 2)

    @property
    def sell_value(self) -> float:
        """Estimated value of the sells."""
        return round(sum(o.est_value for o in self.orders if o.side == "SELL"), 2)

    def reasons(self) -> dict[str, int]:
        """How many orders each reason (TLH, REBALANCE, CASH_INVEST) gave."""
        out: dict[str, int] = {}
        for order in self.orders:
            out[order.reason] = out.get(order.reason, 0) + 1
        return out


_REVIEW_FIELDS = ("status", "decided_by", "decided_at", "note", "submission", "receipts", "submitted_at",
                  "approvals", "submitted_by")
#: Hash field prefix of one approval: ``approval:<who>`` = JSON {"at": ..., "note": ...}.
APPROVAL_FIELD = "approval:"


def proposal_from_plan(
    *,
    run: str,
    account: dict[str, Any],
    as_of: str | date,
    workflow: str,
    version: int,
    instance_id: str,
    plan: dict[str, Any],
    now: float | None = None,
    cutoff: float | None = None,
    four_eyes_over: float | None = None,
) -> Proposal:
    """Build the proposal of a plan (the order calculation's JSON) for one account.

    With a ``cutoff`` the proposal is reviewed in its workflow; ``four_eyes_over`` (in the
    account's currency) makes a proposal whose order value exceeds it need two approvals.
    """
    orders = [
        ProposedOrder(index=i, **{k: o.get(k) for k in ("side", "symbol", "quantity", "reason", "est_value", "lots")})
        for i, o in enumerate(plan.get("orders") or [])
    ]
    return Proposal(
        run=run,
        account_id=str(account["id"]),
        region=str(account["region"]),
        account_type=str(account["type"]),
        as_of=as_of if isinstance(as_of, date) else date.fromisoformat(as_of),
        workflow=workflow,
        version=int(version),
        instance_id=instance_id,
        mode=str(plan.get("mode", "NONE")),
        orders=orders,
        diagnostics=list(plan.get("diagnostics") or []),
        restrictions=list(plan.get("restrictions") or []),
        cash_after=float(plan.get("cash_after") or 0.0),
        recorded_at=time.time() if now is None else now,
        in_workflow=cutoff is not None,
        cutoff=cutoff,
        approvals_required=2 if four_eyes_over is not None
        and sum(float(o.get("est_value") or 0) for o in plan.get("orders") or []) > four_eyes_over else 1,
    )





@dataclass
class Decisions:
    """What a bulk review did: accounts changed, and those skipped with the reason."""

    status: ProposalStatus
    changed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    #: Nothing to do: the same decision was applied before (account -> what was done).
    already: dict[str, str] = field(default_factory=dict)
    #: Of ``changed``: approvals counted that still wait for another person (four-eyes).
    waiting: list[str] = field(default_factory=list)


class ProposalStore:
    """Proposals in Redis under their own prefix (see the module docstring for the keys)."""

    def __init__(self, client: Any, prefix: str = "pm:prop:", replicate: Callable[[Any], int] | None = None,
                 retention_seconds: int = DEFAULT_RETENTION_SECONDS) -> None:
        self.client = client
        self.prefix = prefix
        #: Seconds a proposal is kept after its plan was recorded.
        self.retention_seconds = int(retention_seconds)
        #: Called once a submission is recorded (``WAIT`` for replicas: engine.connections.ReplicaWait).
        self.replicate = replicate
        self.space = KeySpace(prefix)
        self._record = client.register_script(read_lua(__file__, "record_proposal.lua"))
        self._transition = client.register_script(read_lua(__file__, "transition_proposal.lua"))

    def __repr__(self) -> str:
        return f"ProposalStore(prefix={self.prefix!r})"

    # -- keys --------------------------------------------------------------------------------

    @property
    def runs_key(self) -> str:
        """Sorted set of run labels."""
        return self.space.key("runs")

    def accounts_key(self, run: str) -> str:
        """Set of the account ids with a proposal in ``run``."""
        return self.space.key(run, "accounts")

    def key(self, run: str, account_id: str) -> str:
        """Hash of one proposal."""
        return self.space.key(run, account_id)

    # -- writing -----------------------------------------------------------------------------

    def record(self, proposal: Proposal) -> tuple[bool, ProposalStatus]:
        """Store a new plan; (False, status) when the proposal was already decided (kept as it is)."""
        body = proposal.model_dump_json(exclude=set(_REVIEW_FIELDS))
        reply = self._record(
            keys=[self.key(proposal.run, proposal.account_id), self.accounts_key(proposal.run), self.runs_key],
            args=[body, proposal.account_id, proposal.run, repr(proposal.recorded_at), self.retention_seconds],
        )
        if len(reply) > 2 and int(reply[2]):  # the run's first proposal: the index loses the expired runs
            self.trim_runs()
        return bool(reply[0]), ProposalStatus(text(reply[1]))

    def trim_runs(self, limit: int = 1000) -> int:
        """Drop from the runs index the runs whose proposals all expired (of its ``limit`` oldest); how many."""
        runs = [text(r) for r in self.client.zrange(self.runs_key, 0, limit - 1)]
        if not runs:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for run in runs:
            pipe.exists(self.accounts_key(run))
        gone = [run for run, found in zip(runs, pipe.execute(), strict=True) if not found]
        if gone:
            self.client.zrem(self.runs_key, *gone)
        return len(gone)

    def transition(self, run: str, account_id: str, to: ProposalStatus,
                   allowed: Sequence[ProposalStatus] | None = None, **fields: Any) -> tuple[bool, str]:
        """Move one proposal to ``to`` if it is in ``allowed`` (default ``ALLOWED_FROM[to]``);
        (applied, status now or '' if missing)."""
        args = [to.value, ",".join(s.value for s in (ALLOWED_FROM[to] if allowed is None else allowed))]
        for name, value in fields.items():
            args += [name, "" if value is None else (value if isinstance(value, str) else json.dumps(value))]
        done, status = self._transition(keys=[self.key(run, account_id)], args=args)
        return bool(done), text(status)

    def transition_many(self, changes: Sequence[tuple[str, str, ProposalStatus, dict[str, Any]]],
                        chunk: int = 500) -> list[tuple[bool, str]]:
        """:meth:`transition` of many proposals ((run, account, to, fields) each), pipelined; same answers."""
        out: list[tuple[bool, str]] = []
        for start in range(0, len(changes), chunk):
            pipe = self.client.pipeline(transaction=False)
            for run, account_id, to, fields in changes[start:start + chunk]:
                args = [to.value, ",".join(s.value for s in ALLOWED_FROM[to])]
                for name, value in fields.items():
                    args += [name, "" if value is None else (value if isinstance(value, str) else json.dumps(value))]
                self._transition(keys=[self.key(run, account_id)], args=args, client=pipe)
            out.extend((bool(done), text(status)) for done, status in pipe.execute())
        return out

    def record_decision(self, run: str, account_id: str, to: ProposalStatus, approvals: Sequence[dict[str, Any]],
                        note: str = "", at: float | None = None) -> tuple[bool, str]:
        """Write the decision the proposal's instance took (only its workflow's own step calls this).

        ``approvals`` are the engine's record of who sent the decision, oldest first (``by``,
        ``at``, ``note``); the last one is ``decided_by``. (applied, status now or '' if missing).
        """
        if to not in RECORDED_FROM:
            raise ValueError(f"a workflow records approved or rejected, not {to.value}")
        last = approvals[-1] if approvals else {}
        fields: dict[str, Any] = {"decided_by": last.get("by"), "decided_at": repr(at if at is not None else
                                                                                    last.get("at") or time.time()),
                                  "note": note or None}
        if to is ProposalStatus.APPROVED:
            fields.update({f"{APPROVAL_FIELD}{a['by']}": {"at": a.get("at"), "note": a.get("note") or None}
                           for a in approvals})
        return self.transition(run, account_id, to, RECORDED_FROM[to], **fields)

    def decide(
        self, run: str, account_ids: Iterable[str] | None, to: ProposalStatus, *, by: str = "", note: str = "",
    ) -> Decisions:
        """Approve or reject the separately submitted proposals of ``account_ids`` (all of the run when None).

        Proposals reviewed in their workflow are skipped with the reason: they are decided by
        :func:`portfolio_manager.review.approve` / ``reject``, which also signal their instance.
        """
        if to not in (ProposalStatus.APPROVED, ProposalStatus.REJECTED):
            raise ValueError(f"a review approves or rejects, not {to.value}")
        ids = self.account_ids(run) if account_ids is None else list(dict.fromkeys(account_ids))
        in_workflow = {p.account_id for p in self.get_many(run, ids) if p.in_workflow}
        result = Decisions(to)
        if in_workflow:
            result.skipped.update(dict.fromkeys(in_workflow, (
                "reviewed in its workflow: decide it with portfolio_manager.review.approve/reject "
                "(tradeflow pm approve/reject), which signal its instance")))
            ids = [a for a in ids if a not in in_workflow]
        now = repr(time.time())
        for account_id in ids:
            applied, status = self.transition(
                run, account_id, to, decided_by=by or None, decided_at=now, note=note or None
            )
            if applied:
                result.changed.append(account_id)
            elif not status:
                result.skipped[account_id] = f"no proposal for {account_id} in run {run}"
            else:
                result.skipped[account_id] = f"{status}: can no longer be {to.value}"
        return result

    def mark_submitted(self, run: str, account_id: str, receipts: Sequence[dict[str, Any]], submission: str) -> None:
        """Record the brokerage's receipts of a submission (submitting -> submitted)."""
        applied, status = self.transition(
            run,
            account_id,
            ProposalStatus.SUBMITTED,
            receipts=list(receipts),
            submission=submission,
            submitted_at=repr(time.time()),
        )
        if not applied:
            raise NoSuchProposal(f"proposal {run}/{account_id} is {status or 'missing'}, not being submitted")
        if self.replicate is not None:
            self.replicate(self.client)

    # -- reading -----------------------------------------------------------------------------

    def runs(self, limit: int = 20) -> list[str]:
        """Run labels with proposals, newest first."""
        return [text(r) for r in self.client.zrevrange(self.runs_key, 0, limit - 1)]

    def account_ids(self, run: str) -> list[str]:
        """Accounts with a proposal in ``run``, sorted."""
        return sorted(text(a) for a in self.client.smembers(self.accounts_key(run)))

    def get(self, run: str, account_id: str) -> Proposal:
        """One proposal; NoSuchProposal says how to find the right one."""
        found = self.get_many(run, [account_id])
        if not found:
            raise NoSuchProposal(
                f"no proposal for account {account_id} in run {run} (`tradeflow pm proposals {run}` lists them)"
            )
        return found[0]

    def get_many(self, run: str, account_ids: Sequence[str]) -> list[Proposal]:
        """The proposals of ``account_ids`` that exist, in that order (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for account_id in account_ids:
            pipe.hgetall(self.key(run, account_id))
        out = []
        for raw in pipe.execute():
            if raw:
                out.append(self._parse({text(k): text(v) for k, v in raw.items()}))
        return out

    def list(self, run: str, statuses: Iterable[ProposalStatus | str] | None = None) -> list[Proposal]:
        """Every proposal of ``run`` (optionally only in ``statuses``), by account id."""
        wanted = {ProposalStatus(s) for s in statuses} if statuses else None
        out: list[Proposal] = []
        ids = self.account_ids(run)
        for start in range(0, len(ids), 500):
            out.extend(p for p in self.get_many(run, ids[start : start + 500]) if wanted is None or p.status in wanted)
        return out

    @staticmethod
    def _parse(raw: dict[str, str]) -> Proposal:
        body = json.loads(raw["body"])
        body["status"] = raw.get("status", ProposalStatus.PROPOSED.value)
        approvals = [{"by": name[len(APPROVAL_FIELD):], **json.loads(value)}
                     for name, value in raw.items() if name.startswith(APPROVAL_FIELD)]
        body["approvals"] = sorted(approvals, key=lambda a: (a.get("at") or 0, a["by"]))
        for name in ("decided_by", "note", "submission", "submitted_by"):
            if raw.get(name):
                body[name] = raw[name]
        for name in ("decided_at", "submitted_at"):
            if raw.get(name):
                body[name] = float(raw[name])
        if raw.get("receipts"):
            body["receipts"] = json.loads(raw["receipts"])
        return Proposal.model_validate(body)


# --------------------------------------------------------------------------- submission

SUBMIT_WORKFLOW = "submit-orders"


def submission_run(run: str) -> str:
    """The run that groups the submissions of ``run``'s proposals."""
    return f"submit-{run}"


def submission_id(run: str, account_id: str) -> str:
    """The ``submit-orders`` instance of one proposal: one per proposal, whoever submits it, however often."""
    return f"submit-{run}-{account_id}"


@dataclass
class SubmitStarted:
    """What :func:`submit_approved` did."""

    run: str
    submission_run: str
    started: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def submit_approved(engine: Engine, store: ProposalStore, run: str, account_ids: Iterable[str] | None = None, *,
                    version: int | str = "production", by: str = "") -> SubmitStarted:
    """Submit the approved proposals of ``run`` (only ``account_ids`` when given).

    Each proposal moves to ``submitting`` (so it can no longer be rejected) and gets one
    ``submit-orders`` instance with a deterministic id: submitting again, or after a crash
    between the two, never starts a second submission of the same proposal. ``by`` (who
    submits) is recorded with the proposal.
    """
    result = SubmitStarted(run, submission_run(run))
    wanted = None if account_ids is None else list(dict.fromkeys(account_ids))
    proposals = store.list(run) if wanted is None else store.get_many(run, wanted)
    if wanted is not None:
        found = {p.account_id for p in proposals}
        result.skipped.update({a: f"no proposal for {a} in run {run}" for a in wanted if a not in found})
    items = []
    for proposal in proposals:
        if proposal.in_workflow:  # its own instance submits it once approved
            if wanted is not None:
                result.skipped[proposal.account_id] = (f"{proposal.status.value}: submitted by its own workflow "
                                                       f"(instance {proposal.instance_id}) once approved")
            continue
        iid = submission_id(run, proposal.account_id)
        applied, status = store.transition(run, proposal.account_id, ProposalStatus.SUBMITTING, submission=iid,
                                           submitted_by=by or None)
        if not applied:
            if status == ProposalStatus.SUBMITTED.value:
                result.skipped[proposal.account_id] = "already submitted"
            elif wanted is not None:
                result.skipped[proposal.account_id] = f"{status or 'missing'}: approve it first"
            continue
        items.append(StartItem({"run": run, "account_id": proposal.account_id}, iid))
    if items:
        engine.start_many(SUBMIT_WORKFLOW, items, version=version, run=result.submission_run)
        result.started = [item.instance_id or "" for item in items]
    return result


__all__ = [
    "SUBMIT_WORKFLOW",
    "SubmitStarted",
    "submission_id",
    "submission_run",
    "submit_approved",
    "ALLOWED_FROM",
    "RECORDED_FROM",
    "Decisions",
    "NoSuchProposal",
    "Proposal",
    "ProposalStatus",
    "ProposalStore",
    "ProposedOrder",
    "proposal_from_plan",
]
