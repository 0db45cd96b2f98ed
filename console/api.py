"""The JSON API behind the operators' pages (``/api/...``), same roles; bearer tokens for scripts.

Every list is paged (:mod:`console.paging`): ``{"items": [...], "next": cursor, "limit": n}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from console import views
from console.paging import DEFAULT_PAGE, Page, by_offset, json_answer, page_size
from console.users import Permission
from console.web import context, reason_by, require
from engine.instance import Instance

router = APIRouter(prefix="/api")


def _progress(ctx: Any, run: str) -> dict[str, Any]:
    progress = ctx.engine.progress(run)
    chart = ctx.burndown.burndown(progress)
    state = views.run_state(progress)
    return {"run": run, "total": progress.total, "finished": progress.finished, "awaiting": progress.awaiting,
            "gathering": progress.counts.get("gathering", 0), "phase": progress.phase, "state": state.key,
            "state_label": state.label, "state_note": state.note, "counts": progress.counts,
            "created_at": progress.created_at, "deadline": progress.deadline,
            "rate": None if chart.rate is None or not chart.remaining else round(chart.rate, 3),
            "projected_finish": None if chart.projected is None else round(chart.projected),
            "late": chart.late,
            "waiting_for_limits": ctx.engine.run_limited(run)}


@router.get("/runs")
def api_runs(request: Request, limit: int = views.RUNS_PAGE, offset: int = 0) -> Response:
    """Recent runs with their progress and projection, newest first, a page at a time (``offset``)."""
    ctx = context(request)
    limit = page_size(limit)
    runs = ctx.engine.runs(limit=limit + 1, offset=max(offset, 0))
    more = len(runs) > limit
    page = Page([_progress(ctx, run) for run in runs[:limit]], str(max(offset, 0) + limit) if more else None, limit)
    return json_answer(request, page.to_dict())


@router.get("/runs/{run}")
def api_run(request: Request, run: str) -> Response:
    """One run's progress and state (with an ETag: poll it with ``If-None-Match``)."""
    return json_answer(request, _progress(context(request), run))


@router.get("/runs/{run}/instances")
def api_run_instances(request: Request, run: str, status: str = "", q: str = "", limit: int = DEFAULT_PAGE,
                      after: str = "", context_: bool = Query(False, alias="context")) -> dict[str, Any]:
    """A page of a run's instances by id (filter by status, search by id or data value); ``after``
    is the ``next`` of the previous page. Each instance without its context unless ``context=true``."""
    if status and status not in views.STATUS_ORDER:
        from engine.errors import InvalidInput

        raise InvalidInput(f"unknown status {status!r}: use one of {', '.join(views.STATUS_ORDER)}")
    page = views.search(context(request).engine, run, q, [status] if status else None, page_size(limit),
                        after or None)
    return page.to_dict([_instance(i, context_) for i in page.items])


def _instance(instance: Instance, with_context: bool) -> dict[str, Any]:
    out = instance.to_dict()
    if not with_context:
        out.pop("context", None)
    return out


@router.get("/instances/{instance_id}")
def api_instance(request: Request, instance_id: str) -> dict[str, Any]:
    """One instance."""
    return context(request).engine.get(instance_id).to_dict()


@router.get("/instances/{instance_id}/activities")
def api_activities(request: Request, instance_id: str, limit: int = DEFAULT_PAGE, offset: int = 0
                   ) -> dict[str, Any]:
    """A page of an instance's history, oldest first."""
    return by_offset(context(request).engine.activities(instance_id), offset, page_size(limit)).to_dict()


class Action(BaseModel):
    """An operator action's body."""

    reason: str = ""
    context: dict[str, Any] | None = None


@router.post("/instances/{instance_id}/{verb}")
def api_instance_action(request: Request, instance_id: str, verb: str, body: Action) -> dict[str, Any]:
    """pause, resume, cancel or retry (with ``context`` entries replaced) one instance."""
    user = require(request, Permission.OPERATE)
    engine = context(request).engine
    if verb == "retry":
        instance = engine.retry(instance_id, context=body.context, reason=reason_by(user, body.reason),
                                by=user.principal)
    elif verb in {"pause", "resume", "cancel"}:
        instance = getattr(engine, verb)(instance_id, reason=reason_by(user, body.reason), by=user.principal)
    else:
        from engine.errors import InvalidInput

        raise InvalidInput(f"unknown action {verb!r}: use pause, resume, cancel or retry")
    return instance.to_dict()


@router.post("/runs/{run}/{verb}")
def api_run_action(request: Request, run: str, verb: str, body: Action) -> dict[str, Any]:
    """pause, resume, retry or cancel a whole run (its instances in the matching statuses)."""
    user = require(request, Permission.OPERATE)
    if verb not in {"pause", "resume", "retry", "cancel"}:
        from engine.errors import InvalidInput

        raise InvalidInput(f"unknown action {verb!r}: use pause, resume, retry or cancel")
    result = context(request).engine.bulk(verb, run, reason=reason_by(user, body.reason), by=user.principal)
    return {"verb": result.verb, "done": result.done, "skipped": result.skipped}
