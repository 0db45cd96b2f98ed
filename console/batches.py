"""The batches of gather nodes (block orders): a paged list, one batch in full, "close now".

Anyone signed in sees them; closing an open batch needs the operate permission (operators and
admins), the session's CSRF token and a confirmation. A plugin shows what the batch means to it
(the platform: the block orders and their fills) through its ``batch_detail`` hook: a function
of the :class:`engine.api.BatchView` returning :class:`BatchSection` tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from console.users import Permission
from console.web import context, flash, render, require
from engine.api import Batch, BatchView, Engine
from engine.errors import InvalidInput

router = APIRouter()

STATUSES = ("open", "closed", "applied")
#: Rows per page of the batch list and of a batch's members, unless asked otherwise.
PAGE = 100
MAX_PAGE = 1000
#: How many batches (newest first) a filtered list looks through at most.
SCAN_LIMIT = 5000


@dataclass(frozen=True)
class BatchSection:
    """A table a plugin adds to a batch's page (and its JSON): a title, columns, rows, a note."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""
    #: Columns shown right-aligned (numbers).
    numeric: frozenset[str] = field(default_factory=frozenset)
    #: Columns shown with two decimals (amounts of money).
    money: frozenset[str] = field(default_factory=frozenset)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view: rows as objects keyed by column."""
        return {"title": self.title, "note": self.note,
                "rows": [dict(zip(self.columns, row, strict=True)) for row in self.rows]}


BatchDetail = Callable[[BatchView], list[BatchSection]]


@dataclass(frozen=True)
class BatchList:
    """One page of the batch list: the batches, where it starts, and whether more follow."""

    batches: list[Batch]
    offset: int
    limit: int
    more: bool


def page_args(offset: int, limit: int) -> tuple[int, int]:
    """``offset`` and ``limit`` within bounds (InvalidInput names them when out of range)."""
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"offset must be 0 or more and limit 1 to {MAX_PAGE} (got offset={offset}, limit={limit})")
    return offset, limit


def list_batches(engine: Engine, status: str = "", q: str = "", offset: int = 0, limit: int = PAGE) -> BatchList:
    """The batches, newest first, with ``status`` (open, closed, applied) and ``q`` (in the id, group
    or workflow) when given; ``limit`` of them from ``offset``."""
    if status and status not in STATUSES:
        raise InvalidInput(f"status {status!r}: use one of {', '.join(STATUSES)}")
    offset, limit = page_args(offset, limit)
    needle = q.strip().lower()
    filtered = bool(status or needle)
    found = engine.batches(SCAN_LIMIT if filtered else offset + limit + 1)
    if filtered:
        found = [b for b in found if (not status or b.status == status)
                 and (not needle or any(needle in text.lower() for text in (b.id, b.group, b.workflow, b.node)))]
    return BatchList(found[offset:offset + limit], offset, limit, len(found) > offset + limit)


@dataclass(frozen=True)
class Member:
    """One member of a batch as its page shows it: the instance, what it brought, what it got."""

    instance: str
    contribution: Any
    answer: str
    failed: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view."""
        return {"instance": self.instance, "input": self.contribution, "answer": self.answer, "failed": self.failed}


def members_of(view: BatchView) -> list[Member]:
    """The batch's members in order of arrival, each with its answer (transition or error) once applied."""
    answers = (view.batch.answer or {}).get("members") or {}
    out = []
    for iid, contribution in view.contributions:
        mine = answers.get(iid) or {}
        error = mine.get("error")
        out.append(Member(iid, contribution, str(error or mine.get("transition") or ""), bool(error)))
    return out


def contribution_text(value: Any) -> str:
    """A contribution in one short line (``key=value`` pairs of an object)."""
    if isinstance(value, dict):
        return " ".join(f"{k}={json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in value.items())
    return json.dumps(value, default=str)


def sections(request: Request, view: BatchView) -> list[BatchSection]:
    """What the installed plugins add to the batch's page (a plugin that fails adds a note saying so)."""
    out = []
    for plugin in getattr(request.app.state, "plugins", []):
        detail: BatchDetail | None = getattr(plugin, "batch_detail", None)
        if detail is None:
            continue
        try:
            out.extend(detail(view))
        except Exception as exc:  # one plugin must not take the batch page down
            out.append(BatchSection(f"{plugin.name}: not available", [], [], f"{type(exc).__name__}: {exc}"))
    return out


def history_rows(view: BatchView) -> list[dict[str, Any]]:
    """The batch's records (opened, closed, each attempt, applied) as the page shows them."""
    rows = []
    for act in view.activities:
        detail = act.get("error") or act.get("reason") or ""
        if act.get("transitions"):
            detail = ", ".join(f"{k}: {v}" for k, v in act["transitions"].items())
        if act.get("event") == "applied":
            detail = f"{act.get('moved', 0)} moved on, {act.get('failed', 0)} failed"
        rows.append({"event": act.get("event", ""), "at": act.get("at") or act.get("started_at"),
                     "attempt": act.get("attempt", ""), "detail": str(detail),
                     "by": act.get("worker") or act.get("by") or ""})
    return rows


def close(engine: Engine, batch_id: str, request: Request) -> tuple[bool, str]:
    """Close ``batch_id`` now as the signed-in operator: (closed, a sentence for the page)."""
    user = require(request, Permission.OPERATE)
    if engine.close_batch(batch_id, by=user.principal):
        return True, f"closed {batch_id}: its batch step is on its way (block orders go out now)"
    return False, f"{batch_id} was not open (it is {engine.batch(batch_id).batch.status}): nothing changed"


def _bounded(offset: int, limit: int) -> tuple[int, int]:
    return max(offset, 0), max(1, min(limit, MAX_PAGE))


@router.get("/batches")
def batches_page(request: Request, status: str = "", q: str = "", offset: int = 0, limit: int = PAGE) -> Response:
    """Every batch of gather nodes, newest first: filter by status and text, 100 a page."""
    status = status if status in STATUSES else ""
    found = list_batches(context(request).engine, status, q, *_bounded(offset, limit))
    return render(request, "batches.html", title="Batches", page=found, status=status, q=q, statuses=STATUSES)


@router.get("/batches/{batch_id:path}")
def batch_page(request: Request, batch_id: str, offset: int = 0, limit: int = PAGE) -> Response:
    """One batch: its state and times, the block orders (plugins), its members (paged), its history."""
    view = context(request).engine.batch(batch_id)
    offset, limit = _bounded(offset, limit)
    members = members_of(view)
    return render(request, "batch.html", title=f"Batch {batch_id}", view=view, b=view.batch,
                  members=members[offset:offset + limit], total=len(members), offset=offset, limit=limit,
                  failed=sum(m.failed for m in members), sections=sections(request, view),
                  history=history_rows(view), contribution_text=contribution_text)


@router.post("/batches/{batch_id:path}/close")
def batch_close(request: Request, batch_id: str) -> Response:
    """Close an open batch now (operators): its batch step runs at once with the members it has."""
    done, message = close(context(request).engine, batch_id, request)
    flash(request, message, "ok" if done else "warn")
    return RedirectResponse(f"/batches/{quote(batch_id, safe='')}", status_code=303)


# -- the JSON API ---------------------------------------------------------------------------------


@router.get("/api/batches")
def api_batches(request: Request, status: str = "", q: str = "", offset: int = 0, limit: int = PAGE
                ) -> dict[str, Any]:
    """The batches, newest first (``status``, ``q``; ``offset``/``limit`` paging; ``next`` is the next offset)."""
    found = list_batches(context(request).engine, status, q, offset, limit)
    return {"batches": [b.to_dict() for b in found.batches], "offset": found.offset, "limit": found.limit,
            "next": found.offset + found.limit if found.more else None}


@router.get("/api/batches/{batch_id:path}")
def api_batch(request: Request, batch_id: str, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
    """One batch: its record, runs, history, the plugins' sections, and one page of its members."""
    offset, limit = page_args(offset, limit)
    view = context(request).engine.batch(batch_id)
    members = members_of(view)
    return {"batch": view.batch.to_dict(), "runs": view.runs, "activities": view.activities,
            "sections": [s.to_dict() for s in sections(request, view)],
            "members": [m.to_dict() for m in members[offset:offset + limit]], "total": len(members),
            "offset": offset, "limit": limit, "next": offset + limit if offset + limit < len(members) else None}


@router.post("/api/batches/{batch_id:path}/close")
def api_batch_close(request: Request, batch_id: str) -> dict[str, Any]:
    """Close an open batch now (operators); ``closed`` false when it was not open."""
    engine = context(request).engine
    done, message = close(engine, batch_id, request)
    return {"closed": done, "message": message, "status": engine.batch(batch_id).batch.status}

