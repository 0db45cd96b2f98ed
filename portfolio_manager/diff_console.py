"""The console's page of a ``pm diff``: two runs of the morning compared account by account.

``/pm/diff?a=RUN_A&b=RUN_B`` shows what :func:`portfolio_manager.diff.diff_runs` says (the
``tradeflow pm diff`` of the command line): the summary, the totals, and the accounts that
changed, biggest change first, sortable by any column (``sort``, ``desc``); ``show=all`` lists
the equal ones too. Without runs, a form to pick them (shadow runs marked). Any signed-in user
(viewer and up) may read it; ``/api/pm/diff?a=&b=`` gives the JSON document.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from portfolio_manager.diff import AccountDiff, diff_runs

#: At most this many accounts are listed on the page (the JSON has them all).
SHOWN = 500


def _value(item: AccountDiff, name: str) -> Any:
    plan = item.b or item.a
    return getattr(plan, name) if plan is not None else None


#: Column -> how to sort by it (None values last).
SORTS: dict[str, Any] = {
    "size": lambda i: i.size,
    "account": lambda i: i.account_id,
    "change": lambda i: i.change,
    "outcome": lambda i: (i.a.outcome if i.a else "", i.b.outcome if i.b else ""),
    "orders": lambda i: len(i.added) + len(i.removed) + len(i.changed),
    "traded": lambda i: abs((i.b.traded_value if i.b else 0) - (i.a.traded_value if i.a else 0)),
    "drift": lambda i: _value(i, "drift_after"),
    "cash": lambda i: _value(i, "cash_after"),
}


def sort_accounts(items: list[AccountDiff], sort: str, desc: bool) -> list[AccountDiff]:
    """``items`` ordered by column ``sort`` (unknown: by size), accounts without a value last."""
    key = SORTS.get(sort, SORTS["size"])
    present = [i for i in items if key(i) is not None]
    absent = [i for i in items if key(i) is None]
    return sorted(present, key=key, reverse=desc) + absent


def build_diff_router() -> APIRouter:
    """The page and its JSON twin (imports the console lazily: the portfolio manager runs without it)."""
    from console.web import context, render

    router = APIRouter()

    @router.get("/pm/diff")
    def pm_diff(request: Request, a: str = "", b: str = "", sort: str = "size", desc: int = 1,
                show: str = "changed") -> Response:
        """Two runs compared; a form to pick them when they are not given."""
        engine = context(request).engine
        runs = [(run, engine.progress(run).shadow) for run in engine.runs(limit=50)]
        if not a or not b:
            return render(request, "pm_diff.html", title="Run diff", runs=runs, a=a, b=b, diff=None)
        diff = diff_runs(engine, a, b)
        listed = [i for i in diff.accounts if show == "all" or i.change != "equal"]
        listed = sort_accounts(listed, sort, bool(desc))
        return render(request, "pm_diff.html", title=f"{a} → {b}", runs=runs, a=a, b=b, diff=diff,
                      summary=diff.summary(), totals=diff.totals(), accounts=listed[:SHOWN], hidden=len(listed) - SHOWN,
                      sort=sort, desc=bool(desc), show=show)

    @router.get("/api/pm/diff")
    def api_pm_diff(request: Request, a: str, b: str) -> dict[str, Any]:
        """The diff as ``tradeflow pm diff A B --json`` prints it."""
        return diff_runs(context(request).engine, a, b).to_dict()

    return router


__all__ = ["SORTS", "build_diff_router", "sort_accounts"]
