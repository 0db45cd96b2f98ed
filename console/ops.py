"""The operators' pages: runs, a run, an instance, definitions; and their actions (forms)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from console import views
from console.burndown import burndown_svg
from console.errors import Forbidden
from console.graph import definition_svg
from console.paging import DEFAULT_PAGE, page_size
from console.users import Permission, User
from console.web import back, context, flash, reason_by, render, require
from engine.api import SignalResult
from engine.definitions.nodes import AwaitNode
from engine.errors import DefinitionError, InvalidState, NotFound, SignalRefused, TradeflowError
from engine.instance import InstanceStatus

router = APIRouter()

BULK_VERBS = {"pause": "running, waiting and awaiting", "resume": "paused", "retry": "failed", "cancel": "live"}


@router.get("/runs")
def runs_page(request: Request, offset: int = 0) -> Response:
    """Recent runs, a page at a time: progress by status, state, rate, deadline, projection, burn-down."""
    ctx = context(request)
    offset = max(offset, 0)
    rows = views.summaries(ctx.engine, ctx.burndown, limit=views.RUNS_PAGE + 1, offset=offset)
    more, rows = len(rows) > views.RUNS_PAGE, rows[:views.RUNS_PAGE]
    charts = {row.run: burndown_svg(row.burndown, ctx.zone, width=360, height=120) for row in rows}
    states = {row.run: views.run_state(row.progress) for row in rows}
    return render(request, "runs.html", rows=rows, charts=charts, states=states, statuses=views.STATUS_ORDER,
                  steps_rate=ctx.burndown.steps_per_second(), title="Runs", offset=offset,
                  page=views.RUNS_PAGE, more=more, poll=f"/api/runs?offset={offset}")


@router.get("/runs/{run}")
def run_page(request: Request, run: str, status: str = "", q: str = "", limit: int = DEFAULT_PAGE,
             after: str = "") -> Response:
    """One run: state, counts by status and node, failures by reason with bulk retry, search, and a page
    of its instances (by id; ``after`` is the last id of the previous page)."""
    ctx = context(request)
    progress = ctx.engine.progress(run)
    chart = ctx.burndown.burndown(progress)
    statuses = [status] if status in views.STATUS_ORDER else None
    page = views.search(ctx.engine, run, q, statuses, page_size(limit), after or None)
    failed = ctx.engine.list(run, ["failed"], limit=views.SCAN_LIMIT) if progress.counts.get("failed") else []
    deadline_local = (datetime.fromtimestamp(progress.deadline, ctx.zone).strftime("%Y-%m-%dT%H:%M")
                      if progress.deadline else "")
    return render(request, "run.html", title=f"Run {run}", run=run, progress=progress, chart=chart,
                  chart_svg=burndown_svg(chart, ctx.zone), nodes=views.live_nodes(ctx.engine, run),
                  groups=views.failure_groups(failed), page=page, after=after, state=views.run_state(progress),
                  status=status, q=q, statuses=views.STATUS_ORDER, bulk=BULK_VERBS,
                  deadline_local=deadline_local, poll=f"/api/runs/{quote(run)}",
                  limited=ctx.engine.run_limited(run))


@router.post("/runs/{run}/bulk")
def run_bulk(request: Request, run: str, verb: str = Form(...), reason: str = Form("")) -> Response:
    """Pause, resume, retry or cancel every instance of the run in the matching statuses."""
    user = require(request, Permission.OPERATE)
    if verb not in BULK_VERBS:
        flash(request, f"unknown action {verb!r}", "error")
        return back(request, f"/runs/{run}")
    result = context(request).engine.bulk(verb, run, reason=reason_by(user, reason), by=user.principal)
    flash(request, f"{verb}: {result.done} done, {result.skipped} skipped (changed meanwhile)")
    return back(request, f"/runs/{run}")


@router.post("/runs/{run}/retry-group")
def run_retry_group(request: Request, run: str, group: str = Form(...), reason: str = Form("")) -> Response:
    """Retry the failed instances of one failure group."""
    user = require(request, Permission.OPERATE)
    ctx = context(request)
    groups = dict(views.failure_groups(ctx.engine.list(run, ["failed"], limit=views.SCAN_LIMIT)))
    done, skipped = 0, 0
    for instance in groups.get(group, []):
        try:
            ctx.engine.retry(instance.id, reason=reason_by(user, reason or f"bulk retry of {group}"), by=user.principal)
            done += 1
        except (InvalidState, NotFound):
            skipped += 1
    flash(request, f"retried {done}" + (f", {skipped} skipped (changed meanwhile)" if skipped else ""))
    return back(request, f"/runs/{run}")


@router.post("/runs/{run}/deadline")
def run_deadline(request: Request, run: str, deadline: str = Form("")) -> Response:
    """Set or clear the run's deadline (a local date-time in the console's zone)."""
    require(request, Permission.OPERATE)
    ctx = context(request)
    ctx.engine.progress(run)  # 404 for an unknown run
    if not deadline.strip():
        ctx.engine.set_run_deadline(run, None)
        flash(request, "deadline cleared")
    else:
        try:
            at = datetime.fromisoformat(deadline.strip())
        except ValueError:
            flash(request, f"{deadline!r} is not a date and time", "error")
            return back(request, f"/runs/{run}")
        at = at if at.tzinfo else at.replace(tzinfo=ctx.zone)
        ctx.engine.set_run_deadline(run, at.timestamp())
        flash(request, f"deadline set to {at.strftime('%Y-%m-%d %H:%M %Z')}")
    return back(request, f"/runs/{run}")


@router.get("/instances/{instance_id}")
def instance_page(request: Request, instance_id: str) -> Response:
    """One instance: graph with its path, history, and the actions its status allows."""
    ctx = context(request)
    instance = ctx.engine.get(instance_id)
    activities = ctx.engine.activities(instance_id)
    definition = ctx.engine.definition(instance.workflow, instance.version)
    failed = instance.node if instance.status is InstanceStatus.FAILED else None
    graph = definition_svg(definition, views.path_of(activities), instance.node, failed)
    node = definition.nodes.get(instance.node)
    awaited = ([(name, node.spec(name)) for name in node.signals]
               if instance.status is InstanceStatus.AWAITING and isinstance(node, AwaitNode) else [])
    return render(request, "instance.html", title=f"Instance {instance.id}", instance=instance,
                  activities=activities, graph=graph, context_json=views.editable_context(instance),
                  awaited=awaited, definition=definition)


@router.post("/instances/{instance_id}/{verb}")
def instance_action(request: Request, instance_id: str, verb: str, reason: str = Form(""),
                    context_json: str = Form(""), signal: str = Form(""), payload: str = Form("")) -> Response:
    """pause, resume, cancel, retry (with an edited context) or signal one instance.

    Operators pause, resume, cancel and retry. A signal may come from an operator or a portfolio
    manager: it goes through the engine's guarded ``signal`` as the signed-in user's principal,
    so the await node's roles, required data and quorum decide; a refusal is shown, not raised.
    """
    user = _signaller(request) if verb == "signal" else require(request, Permission.OPERATE)
    engine = context(request).engine
    here = f"/instances/{instance_id}"
    message = f"{verb}: done"
    try:
        if verb in {"pause", "resume", "cancel"}:
            getattr(engine, verb)(instance_id, reason=reason_by(user, reason), by=user.principal)
        elif verb == "retry":
            edited = _edited_context(engine.get(instance_id).context, context_json)
            engine.retry(instance_id, context=edited or None, reason=reason_by(user, reason), by=user.principal)
        elif verb == "signal":
            data = json.loads(payload) if payload.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("the signal's data must be a JSON object, e.g. {\"note\": \"ok\"}")
            message = _signal_message(engine.signal(instance_id, signal.strip(), data, by=user.principal))
        else:
            flash(request, f"unknown action {verb!r}", "error")
            return RedirectResponse(here, status_code=303)
    except (TradeflowError, ValueError) as exc:
        flash(request, str(exc) if isinstance(exc, SignalRefused) else f"{verb} refused: {exc}", "error")
        return RedirectResponse(here, status_code=303)
    flash(request, message)
    return RedirectResponse(here, status_code=303)


def _signaller(request: Request) -> User:
    """The user, when their role may send signals at all (operate or review); the node's roles decide the rest."""
    user = require(request, Permission.VIEW)
    if not (user.may(Permission.OPERATE) or user.may(Permission.REVIEW)):
        raise Forbidden(f"{user.name} is {user.role.value}: sending a signal needs the operate or review "
                        "permission (ask an admin for a role that has it)")
    return user


def _signal_message(result: SignalResult) -> str:
    """What a sent signal did, in words."""
    if result.duplicate:
        return f"signal {result.signal}: already applied before (nothing done again)"
    if result.counted and result.quorum:
        return (f"signal {result.signal}: counted, {result.quorum[0]} of {result.quorum[1]} distinct senders; "
                "waiting for the others")
    return f"signal {result.signal}: applied" + (f", now {result.status.value} at {result.node}"
                                                 if result.status and result.node else "")


def _edited_context(current: dict[str, Any], text: str) -> dict[str, Any]:
    """The context entries the operator changed (ValueError when the JSON is not an object)."""
    if not text.strip():
        return {}
    edited = json.loads(text)
    if not isinstance(edited, dict):
        raise ValueError("the context must be a JSON object: node name -> data")
    return {node: data for node, data in edited.items() if current.get(node) != data}


@router.get("/definitions")
def definitions_page(request: Request) -> Response:
    """Every definition with its versions and aliases."""
    return render(request, "definitions.html", title="Definitions", catalog=context(request).engine.catalog())


@router.get("/definitions/validate")
def validate_page(request: Request) -> Response:
    """Paste a definition, check it, publish it."""
    return render(request, "validate.html", title="Validate a definition", text="", problems=None, valid=None)


@router.post("/definitions/validate")
def validate_definition(request: Request, text: str = Form(""), action: str = Form("validate"),
                        alias: str = Form("")) -> Response:
    """Validate the pasted definition; with action=publish (operators), publish it too."""
    from engine.definitions.validation import load_definition

    ctx = context(request)
    try:
        definition = load_definition(text, "pasted", roles=ctx.roles)
    except DefinitionError as exc:
        return render(request, "validate.html", title="Validate a definition", text=text,
                      problems=str(exc).splitlines(), valid=None)
    if action == "publish":
        require(request, Permission.OPERATE)
        version = ctx.engine.publish(definition, alias=alias.strip() or None)
        flash(request, f"published {definition.name} version {version}" + (f" as {alias}" if alias.strip() else ""))
        return RedirectResponse(f"/definitions/{definition.name}?version={version}", status_code=303)
    return render(request, "validate.html", title="Validate a definition", text=text, problems=[],
                  valid=definition)


@router.get("/definitions/{name}")
def definition_page(request: Request, name: str, version: str = "", compare: str = "") -> Response:
    """One definition version: graph, JSON, and the difference from another version."""
    engine = context(request).engine
    definition = engine.definition(name, version or None)
    catalog = {entry.name: entry for entry in engine.catalog()}
    if name not in catalog:
        raise NotFound(f"no definition {name!r}")
    versions, aliases = catalog[name].versions, catalog[name].aliases
    document = definition.model_dump(mode="json", exclude_none=True)
    diff = None
    if compare:
        other = engine.definition(name, compare)
        diff = views.definition_diff(other.model_dump(mode="json", exclude_none=True), document,
                                     f"v{other.version}", f"v{definition.version}")
    return render(request, "definition.html", title=f"{name} v{definition.version}", definition=definition,
                  document=document, versions=versions, aliases=aliases, diff=diff, compare=compare,
                  graph=definition_svg(definition))
