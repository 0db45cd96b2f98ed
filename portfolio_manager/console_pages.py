"""The portfolio managers' pages of the web console (the ``console`` hook of its plugin).

Proposals of a run with filters, one proposal in full, approve / reject (one or many), the
four-eyes state, the review's cut-off, submit, and the brokerage's receipts; plus the same
under ``/api/pm/``. Decisions and submissions go through :mod:`portfolio_manager.review` — the
functions behind ``tradeflow pm approve/reject/submit`` — so the console follows when they change:

- a proposal **reviewed in its workflow** (the rebalances): approve / reject send the signal to
  the account's instance (the proposal store guards against a decision after the cut-off and
  against one person approving a four-eyes proposal twice); the workflow submits once it has
  the approvals it needs. There is no submit button for it;
- a proposal **submitted separately** (invest-deposit, older rebalance versions): approve /
  reject, then *Submit*, which starts its ``submit-orders`` instance.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel

from engine.principal import Principal
from portfolio_manager import review as reviews
from portfolio_manager.diff_console import build_diff_router
from portfolio_manager.proposals import Decisions, Proposal, ProposalStatus, SubmitStarted
from portfolio_manager.services import services

TEMPLATES = Path(__file__).parent / "templates"
#: Statuses in which a proposal reviewed in its workflow can still be decided.
OPEN = (ProposalStatus.PROPOSED,)


def review(engine: Any, run: str, account_ids: list[str] | None, to: ProposalStatus, by: Principal,
           note: str) -> Decisions:
    """Approve or reject as ``by`` (the signed-in user's principal), as ``tradeflow pm approve/reject``
    does (the one place the console decides): through :mod:`portfolio_manager.review`, which
    signals the instances of proposals reviewed in their workflow; the engine checks the roles
    and counts the quorum."""
    store = services().proposals
    if to is ProposalStatus.APPROVED:
        return reviews.approve(engine, store, run, account_ids, by=by, note=note)
    return reviews.reject(engine, store, run, account_ids, by=by, reason=note)


def submit(engine: Any, run: str, account_ids: list[str] | None, by: Principal) -> SubmitStarted:
    """Submit the approved proposals that are submitted separately, as ``tradeflow pm submit`` does."""
    return reviews.submit(engine, services().proposals, run, account_ids, by=by)


def approvals_of(proposal: Proposal) -> list[dict[str, Any]]:
    """Approvals made so far, oldest first, each {by, at, note}: the proposal's ``approvals``, else
    (a separately submitted proposal) the single decision recorded on an approved one."""
    if proposal.approvals:
        return [dict(a) for a in proposal.approvals]
    if proposal.status in (ProposalStatus.APPROVED, ProposalStatus.SUBMITTING, ProposalStatus.SUBMITTED):
        return [{"by": proposal.decided_by, "at": proposal.decided_at, "note": proposal.note}]
    return []


@dataclass(frozen=True)
class ReviewState:
    """What a portfolio manager needs to know about one proposal's review, in words."""

    #: "in its workflow" or "separately" (who submits after approval).
    submitted_by_workflow: bool
    approvals: list[dict[str, Any]]
    needed: int
    cutoff: float | None
    #: The one line that says where the proposal stands and what happens next.
    summary: str
    #: Approve / reject buttons are offered.
    decidable: bool
    #: A submit button is offered (approved, submitted separately).
    submittable: bool

    @property
    def waiting_for_second(self) -> bool:
        """Four-eyes: approved by one person so far, a second (different) person still needed."""
        return self.decidable and 0 < len(self.approvals) < self.needed


def review_state(p: Proposal, now: float) -> ReviewState:
    """The review state of ``p`` at ``now`` (epoch seconds), with a sentence for the page."""
    approvals = approvals_of(p)
    needed = max(p.approvals_required, 1)
    names = ", ".join(str(a.get("by") or "?") for a in approvals)
    status = p.status
    late = p.in_workflow and p.cutoff is not None and now > p.cutoff
    if status is ProposalStatus.EXPIRED or (late and status in OPEN):
        summary = ("expired: nobody decided before the cut-off, so nothing was sent; the account is proposed "
                   "again next run")
    elif status is ProposalStatus.PROPOSED and approvals:
        summary = (f"{len(approvals)} of {needed} approvals (first: {approvals[0].get('by') or '?'}); "
                   f"waiting for a second approver, who must be someone other than {names}")
    elif status is ProposalStatus.PROPOSED:
        summary = ("awaiting review: " + ("two approvals by different people are needed (four-eyes)" if needed > 1
                                          else "one approval submits it") if p.in_workflow
                   else "awaiting review: approve, then submit")
    elif status is ProposalStatus.APPROVED:
        summary = (f"approved by {names}: its workflow is sending the orders to the brokerage" if p.in_workflow
                   else f"approved by {names}: press Submit to send the orders to the brokerage")
    elif status is ProposalStatus.SUBMITTING:
        summary = "being sent to the brokerage"
    elif status is ProposalStatus.SUBMITTED:
        summary = f"sent to the brokerage (approved by {names}); the receipts are below"
    else:  # rejected
        summary = f"rejected by {p.decided_by or '?'}" + (f": {p.note}" if p.note else "")
    open_in_workflow = p.in_workflow and status in OPEN and not late
    decidable = open_in_workflow or (not p.in_workflow and status in (
        ProposalStatus.PROPOSED, ProposalStatus.APPROVED, ProposalStatus.REJECTED))
    submittable = not p.in_workflow and status is ProposalStatus.APPROVED
    return ReviewState(p.in_workflow, approvals, needed, p.cutoff, summary, decidable, submittable)


def submitter(p: Proposal) -> str:
    """Who sent a proposal's orders: the person who pressed Submit, or its workflow and who approved."""
    if p.submitted_by:
        return p.submitted_by
    if p.in_workflow:
        return "its workflow, approved by " + ", ".join(str(a.get("by") or "?") for a in approvals_of(p))
    return ""


def decision_message(to: ProposalStatus, result: Decisions) -> tuple[str, str]:
    """The flash after a decision (text, level): what was recorded, four-eyes left waiting, what was
    done before already, refusals with the engine's reason."""
    parts = []
    if to is ProposalStatus.APPROVED:
        waiting = [a for a in result.changed if a in result.waiting]
        if len(result.changed) > len(waiting) or not (waiting or result.skipped or result.already):
            parts.append(f"approved: {len(result.changed) - len(waiting)}")
        if waiting:
            parts.append(f"1 approval recorded for {', '.join(waiting[:5])}: waiting for a second approver "
                         "(four-eyes)")
    elif result.changed or not (result.skipped or result.already):
        parts.append(f"rejected: {len(result.changed)}")
    if result.already:
        parts.append(f"already done ({len(result.already)}): " + "; ".join(list(result.already.values())[:5]))
    if result.skipped:
        parts.append(f"not recorded ({len(result.skipped)}): " + "; ".join(
            r if r.startswith(a) else f"{a}: {r}" for a, r in list(result.skipped.items())[:5]))
    level = "error" if result.skipped and not result.changed else "warn" if result.skipped else "ok"
    return "; ".join(parts), level


class Decision(BaseModel):
    """An API decision: the accounts to approve, reject (with a note) or submit."""

    accounts: list[str] = []
    note: str = ""


@dataclass(frozen=True)
class Filters:
    """The proposal list's filters."""

    status: str = ""
    region: str = ""
    account_type: str = ""
    tlh: str = ""  # "yes": with tax-loss harvests, "no": without
    min_value: float | None = None
    max_value: float | None = None

    def keep(self, p: Proposal) -> bool:
        """True when ``p`` passes every filter."""
        value = p.buy_value + p.sell_value
        return ((not self.status or p.status.value == self.status) and (not self.region or p.region == self.region)
                and (not self.account_type or p.account_type == self.account_type)
                and (not self.tlh or (p.tlh_harvests > 0) == (self.tlh == "yes"))
                and (self.min_value is None or value >= self.min_value)
                and (self.max_value is None or value <= self.max_value))


def _number(text: str) -> float | None:
    try:
        return float(text) if text.strip() else None
    except ValueError:
        return None


def build_router() -> APIRouter:
    """The pages and API (imports the console lazily: the portfolio manager runs without it)."""
    from console.paging import DEFAULT_PAGE, Page, by_offset, page_size
    from console.users import Permission
    from console.web import back, context, flash, render, require

    router = APIRouter()

    @router.get("/pm/runs")
    def pm_runs(request: Request) -> Response:
        """Runs with proposals, by review status."""
        store = services().proposals
        rows = []
        for run in store.runs(limit=30):
            counts = Counter(p.status.value for p in reviews.proposals(context(request).engine, store, run))
            rows.append((run, sum(counts.values()), counts))
        return render(request, "pm_runs.html", title="Proposals", rows=rows, statuses=[s.value for s in ProposalStatus])

    @router.get("/pm/runs/{run}")
    def pm_run(request: Request, run: str, status: str = "", region: str = "", account_type: str = "",
               tlh: str = "", min_value: str = "", max_value: str = "", offset: int = 0,
               limit: int = DEFAULT_PAGE) -> Response:
        """A run's proposals, filtered, a page at a time; bulk approve / reject; submit the approved ones."""
        filters = Filters(status, region, account_type, tlh, _number(min_value), _number(max_value))
        everything = reviews.proposals(context(request).engine, services().proposals, run)
        page = by_offset([p for p in everything if filters.keep(p)], offset, page_size(limit))
        shown = page.items
        counts = Counter(p.status.value for p in everything)
        now = context(request).engine.clock()
        states = {p.account_id: review_state(p, now) for p in shown}
        separately = sum(1 for p in everything if not p.in_workflow and p.status is ProposalStatus.APPROVED)
        in_workflow = sum(1 for p in everything if p.in_workflow)
        cutoffs = sorted({p.cutoff for p in everything if p.cutoff is not None})
        return render(request, "pm_run.html", title=f"Proposals of {run}", run=run, proposals=shown, counts=counts,
                      total=len(everything), filters=filters, statuses=[s.value for s in ProposalStatus],
                      regions=sorted({p.region for p in everything}),
                      types=sorted({p.account_type for p in everything}), states=states,
                      submittable=separately, in_workflow=in_workflow, cutoffs=cutoffs,
                      submission_run=f"submit-{run}", page=page, offset=max(offset, 0),
                      query=urlencode({k: v for k, v in (("status", status), ("region", region),
                                                         ("account_type", account_type), ("tlh", tlh),
                                                         ("min_value", min_value), ("max_value", max_value)) if v}))

    @router.get("/pm/runs/{run}/receipts")
    def pm_receipts(request: Request, run: str, offset: int = 0) -> Response:
        """The receipts of the run's submitted proposals, a page of proposals at a time."""
        submitted = services().proposals.list(run, [ProposalStatus.SUBMITTED, ProposalStatus.SUBMITTING])
        page = by_offset(submitted, offset, DEFAULT_PAGE)
        return render(request, "pm_receipts.html", title=f"Receipts of {run}", run=run, proposals=page.items,
                      submitter=submitter, page=page, offset=max(offset, 0))

    @router.get("/pm/runs/{run}/{account_id}")
    def pm_proposal(request: Request, run: str, account_id: str) -> Response:
        """One proposal in full, with its review."""
        proposal = reviews.proposal(context(request).engine, services().proposals, run, account_id)
        return render(request, "pm_proposal.html", title=f"{account_id} in {run}", p=proposal,
                      state=review_state(proposal, context(request).engine.clock()))

    def _decide(request: Request, run: str, accounts: list[str], to: ProposalStatus, note: str) -> Decisions:
        user = require(request, Permission.REVIEW)
        return review(context(request).engine, run, accounts, to, user.principal, note)

    @router.post("/pm/runs/{run}/decide")
    def pm_decide(request: Request, run: str, decision: str = Form(...), accounts: list[str] = Form(default=[]),
                  note: str = Form("")) -> Response:
        """Approve or reject the selected proposals."""
        to = ProposalStatus.APPROVED if decision == "approve" else ProposalStatus.REJECTED
        require(request, Permission.REVIEW)
        if not accounts:
            flash(request, "select proposals first", "warn")
            return back(request, f"/pm/runs/{run}")
        if to is ProposalStatus.REJECTED and not note.strip():
            flash(request, "a rejection needs a reason", "error")
            return back(request, f"/pm/runs/{run}")
        result = _decide(request, run, accounts, to, note)
        text, level = decision_message(to, result)
        flash(request, text, level)
        return back(request, f"/pm/runs/{run}")

    @router.post("/pm/runs/{run}/submit")
    def pm_submit(request: Request, run: str, accounts: list[str] = Form(default=[])) -> Response:
        """Send the approved proposals that are submitted separately (the selected ones, or all) to the
        brokerage; those reviewed in their workflow are submitted by it and skipped here, with the reason."""
        user = require(request, Permission.REVIEW)
        result = submit(context(request).engine, run, accounts or None, user.principal)
        flash(request, f"submitting {len(result.started)} proposals"
              + (f"; skipped {len(result.skipped)}: " + "; ".join(f"{a}: {r}" for a, r in
                                                               list(result.skipped.items())[:3])
                 if result.skipped else ""), "ok" if result.started else "warn")
        return back(request, f"/pm/runs/{run}")

    # -- JSON API ------------------------------------------------------------------------------

    @router.get("/api/pm/runs")
    def api_pm_runs(request: Request, limit: int = 30, offset: int = 0) -> dict[str, Any]:
        """Runs with proposals and their counts by review status, newest first, a page at a time."""
        store, engine = services().proposals, context(request).engine
        size = page_size(limit)
        runs = store.runs(limit=max(offset, 0) + size + 1)[max(offset, 0):]
        page = Page(runs[:size], str(max(offset, 0) + size) if len(runs) > size else None, size)
        return page.to_dict([{"run": run, "counts": Counter(
            p.status.value for p in reviews.proposals(engine, store, run))} for run in page.items])

    @router.get("/api/pm/runs/{run}/proposals")
    def api_pm_proposals(request: Request, run: str, status: str = "", limit: int = DEFAULT_PAGE,
                         offset: int = 0) -> dict[str, Any]:
        """A page of a run's proposals by account id (optionally one status)."""
        found = reviews.proposals(context(request).engine, services().proposals, run, [status] if status else None)
        page = by_offset(found, offset, page_size(limit))
        return page.to_dict([p.model_dump(mode="json") for p in page.items])

    @router.get("/api/pm/runs/{run}/{account_id}")
    def api_pm_proposal(request: Request, run: str, account_id: str) -> dict[str, Any]:
        """One proposal, with its approvals."""
        proposal = reviews.proposal(context(request).engine, services().proposals, run, account_id)
        state = review_state(proposal, context(request).engine.clock())
        return {**proposal.model_dump(mode="json"), "approvals": state.approvals,
                "review": {"summary": state.summary, "approvals_required": state.needed,
                           "waiting_for_second": state.waiting_for_second, "decidable": state.decidable,
                           "submittable": state.submittable}}

    @router.post("/api/pm/runs/{run}/{verb}")
    def api_pm_action(request: Request, run: str, verb: str, body: Decision) -> dict[str, Any]:
        """approve, reject (needs a note) or submit the named accounts."""
        user = require(request, Permission.REVIEW)
        if verb == "submit":
            result = submit(context(request).engine, run, body.accounts or None, user.principal)
            return {"started": result.started, "skipped": result.skipped}
        if verb not in {"approve", "reject"} or (verb == "reject" and not body.note.strip()):
            from console.errors import ConsoleError

            raise ConsoleError("use approve, reject (with a note) or submit")
        to = ProposalStatus.APPROVED if verb == "approve" else ProposalStatus.REJECTED
        decided = review(context(request).engine, run, body.accounts, to, user.principal, body.note)
        return {"status": to.value, "changed": decided.changed, "waiting": decided.waiting,
                "already": decided.already, "skipped": decided.skipped}

    router.include_router(build_diff_router())  # /pm/diff: two runs compared (a shadow beside production)
    return router


def plugin(queues: list[str] | None = None) -> Any:
    """The console plugin: the review pages, a navigation entry, the templates, the ``queues`` to watch
    (the plugin's ``console`` hook passes its fleets' queues)."""
    from console.app import ConsolePlugin
    from portfolio_manager.block_view import batch_sections

    nav = [("Proposals", "/pm/runs"), ("Run diff", "/pm/diff")]
    return ConsolePlugin("portfolio_manager", build_router(), nav=nav, templates=TEMPLATES,
                         queues=list(queues or []), batch_detail=batch_sections)
