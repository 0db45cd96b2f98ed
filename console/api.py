"""The JSON API behind the operators' pages (``/api/...``), same roles; bearer tokens for scripts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from console import views
from console.users import Permission
from console.web import context, reason_by, require

router = APIRouter(prefix="/api")


def _progress(ctx: Any, run: str) -> dict[str, Any]:
    progress = ctx.engine.progress(run)
    chart = ctx.burndown.burndown(progress)
    return {"run": run, "total": progress.total, "finished": progress.finished, "awaiting": progress.awaiting,
            "phase": progress.phase, "counts": progress.counts,
            "created_at": progress.created_at, "deadline": progress.deadline, "rate": chart.rate,
            "projected_finish": chart.projected, "late": chart.late,
            "waiting_for_limits": ctx.engine.run_limited(run)}


@router.get("/runs")
def api_runs(request: Request, limit: int = 20) -> list[dict[str, Any]]:
    """Recent runs with their progress and projection."""
    ctx = context(request)
    return [_progress(ctx, run) for run in ctx.engine.runs(limit=min(limit, 200))]


@router.get("/runs/{run}")
def api_run(request: Request, run: str) -> dict[str, Any]:
    """One run's progress."""
    return _progress(context(request), run)


@router.get("/runs/{run}/instances")
def api_run_instances(request: Request, run: str, status: str = "", q: str = "", limit: int = 200
                      ) -> list[dict[str, Any]]:
    """A run's instances (filter by status, search by id or data value)."""
    found = views.search(context(request).engine, run, q, [status] if status else None, min(limit, 5000))
    return [i.to_dict() for i in found]


@router.get("/instances/{instance_id}")
def api_instance(request: Request, instance_id: str) -> dict[str, Any]:
    """One instance."""
    return context(request).engine.get(instance_id).to_dict()


@router.get("/instances/{instance_id}/activities")
def api_activities(request: Request, instance_id: str) -> list[dict[str, Any]]:
    """An instance's history."""
    return context(request).engine.activities(instance_id)


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
        instance = engine.retry(instance_id, context=body.context, reason=reason_by(user, body.reason))
    elif verb in {"pause", "resume", "cancel"}:
        instance = getattr(engine, verb)(instance_id, reason=reason_by(user, body.reason))
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
    result = context(request).engine.bulk(verb, run, reason=reason_by(user, body.reason))
    return {"verb": result.verb, "done": result.done, "skipped": result.skipped}
