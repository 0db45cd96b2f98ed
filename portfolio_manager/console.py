"""The portfolio managers' pages of the web console (entry point ``tradeflow.console``).

Proposals of a run with filters, one proposal in full, approve / reject (one or many), the
four-eyes state, submit, and the brokerage's receipts; plus the same under ``/api/pm/``.
Decisions and submissions go through this package's Python API — the functions behind
``tradeflow pm approve/reject/submit`` — so the console follows when they change.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel

from portfolio_manager.proposals import Decisions, Proposal, ProposalStatus, submit_approved

TEMPLATES = Path(__file__).parent / "templates"


def _services() -> Any:
    from portfolio_manager.actions import services

    return services()


def review(run: str, account_ids: list[str] | None, to: ProposalStatus, by: str, note: str) -> Decisions:
    """Approve or reject, as ``tradeflow pm approve/reject`` does (the one place the console decides)."""
    return _services().proposals.decide(run, account_ids, to, by=by, note=note)


def approvals_of(proposal: Proposal) -> list[dict[str, Any]]:
    """Approvals made so far, each {by, at, note}: the record's ``approvals`` when it has them
    (four-eyes), else the single decision recorded on an approved proposal."""
    recorded = getattr(proposal, "approvals", None)
    if recorded:
        return [dict(a) if isinstance(a, dict) else {"by": str(a)} for a in recorded]
    if proposal.status in (ProposalStatus.APPROVED, ProposalStatus.SUBMITTING, ProposalStatus.SUBMITTED):
        return [{"by": proposal.decided_by, "at": proposal.decided_at, "note": proposal.note}]
    return []


def approvals_needed(proposal: Proposal) -> int | None:
    """How many approvals the proposal needs (four-eyes), when the record says; None otherwise."""
    needed = getattr(proposal, "approvals_required", None)
    return int(needed) if needed else None


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
    from console.users import Permission
    from console.web import back, context, flash, render, require

    router = APIRouter()

    @router.get("/pm/runs")
    def pm_runs(request: Request) -> Response:
        """Runs with proposals, by review status."""
        store = _services().proposals
        rows = []
        for run in store.runs(limit=30):
            counts = Counter(p.status.value for p in store.list(run))
            rows.append((run, sum(counts.values()), counts))
        return render(request, "pm_runs.html", title="Proposals", rows=rows, statuses=[s.value for s in ProposalStatus])

    @router.get("/pm/runs/{run}")
    def pm_run(request: Request, run: str, status: str = "", region: str = "", account_type: str = "",
               tlh: str = "", min_value: str = "", max_value: str = "") -> Response:
        """A run's proposals, filtered; bulk approve / reject; submit the approved ones."""
        filters = Filters(status, region, account_type, tlh, _number(min_value), _number(max_value))
        everything = _services().proposals.list(run)
        shown = [p for p in everything if filters.keep(p)]
        counts = Counter(p.status.value for p in everything)
        return render(request, "pm_run.html", title=f"Proposals of {run}", run=run, proposals=shown, counts=counts,
                      total=len(everything), filters=filters, statuses=[s.value for s in ProposalStatus],
                      regions=sorted({p.region for p in everything}),
                      types=sorted({p.account_type for p in everything}), approvals_of=approvals_of,
                      submission_run=f"submit-{run}")

    @router.get("/pm/runs/{run}/receipts")
    def pm_receipts(request: Request, run: str) -> Response:
        """Every receipt of the run's submitted proposals."""
        submitted = _services().proposals.list(run, [ProposalStatus.SUBMITTED, ProposalStatus.SUBMITTING])
        return render(request, "pm_receipts.html", title=f"Receipts of {run}", run=run, proposals=submitted)

    @router.get("/pm/runs/{run}/{account_id}")
    def pm_proposal(request: Request, run: str, account_id: str) -> Response:
        """One proposal in full, with its review."""
        proposal = _services().proposals.get(run, account_id)
        return render(request, "pm_proposal.html", title=f"{account_id} in {run}", p=proposal,
                      approvals=approvals_of(proposal), needed=approvals_needed(proposal))

    def _decide(request: Request, run: str, accounts: list[str], to: ProposalStatus, note: str) -> Decisions:
        user = require(request, Permission.REVIEW)
        return review(run, accounts, to, user.name, note)

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
        flash(request, f"{to.value}: {len(result.changed)}"
              + (f"; skipped {len(result.skipped)}: " + "; ".join(f"{a}: {r}" for a, r in
                                                               list(result.skipped.items())[:5]) if result.skipped
                 else ""), "ok" if result.changed else "warn")
        return back(request, f"/pm/runs/{run}")

    @router.post("/pm/runs/{run}/submit")
    def pm_submit(request: Request, run: str, accounts: list[str] = Form(default=[])) -> Response:
        """Send the approved proposals (the selected ones, or all approved) to the brokerage."""
        user = require(request, Permission.REVIEW)
        svc_engine = context(request).engine
        result = submit_approved(svc_engine, _services().proposals, run, accounts or None, by=user.name)
        flash(request, f"submitting {len(result.started)} proposals"
              + (f", skipped {len(result.skipped)}" if result.skipped else ""), "ok" if result.started else "warn")
        return back(request, f"/pm/runs/{run}")

    # -- JSON API ------------------------------------------------------------------------------

    @router.get("/api/pm/runs")
    def api_pm_runs(request: Request) -> list[dict[str, Any]]:
        """Runs with proposals and their counts by review status."""
        store = _services().proposals
        return [{"run": run, "counts": Counter(p.status.value for p in store.list(run))} for run in store.runs()]

    @router.get("/api/pm/runs/{run}/proposals")
    def api_pm_proposals(request: Request, run: str, status: str = "") -> list[dict[str, Any]]:
        """A run's proposals (optionally one status)."""
        return [p.model_dump(mode="json") for p in _services().proposals.list(run, [status] if status else None)]

    @router.get("/api/pm/runs/{run}/{account_id}")
    def api_pm_proposal(request: Request, run: str, account_id: str) -> dict[str, Any]:
        """One proposal, with its approvals."""
        proposal = _services().proposals.get(run, account_id)
        return {**proposal.model_dump(mode="json"), "approvals": approvals_of(proposal)}

    @router.post("/api/pm/runs/{run}/{verb}")
    def api_pm_action(request: Request, run: str, verb: str, body: Decision) -> dict[str, Any]:
        """approve, reject (needs a note) or submit the named accounts."""
        user = require(request, Permission.REVIEW)
        if verb == "submit":
            result = submit_approved(context(request).engine, _services().proposals, run, body.accounts or None,
                                     by=user.name)
            return {"started": result.started, "skipped": result.skipped}
        if verb not in {"approve", "reject"} or (verb == "reject" and not body.note.strip()):
            from console.errors import ConsoleError

            raise ConsoleError("use approve, reject (with a note) or submit")
        to = ProposalStatus.APPROVED if verb == "approve" else ProposalStatus.REJECTED
        decided = review(run, body.accounts, to, user.name, body.note)
        return {"status": to.value, "changed": decided.changed, "skipped": decided.skipped}

    return router


def plugin() -> Any:
    """The console plugin: the review pages, a navigation entry, the templates, the queues to watch."""
    from console.app import ConsolePlugin
    from portfolio_manager.plugin import ORDER_CALC_FLEET, PM_FLEET

    return ConsolePlugin("portfolio_manager", build_router(), nav=[("Proposals", "/pm/runs")], templates=TEMPLATES,
                         queues=[PM_FLEET[0], ORDER_CALC_FLEET[0]])
