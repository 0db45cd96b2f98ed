"""The Limits page: every shared rate and concurrency limit as ``tradeflow limits`` lists it, and,
for admins, forms to override one at run time or clear the override; the same under ``/api/``.

Reading needs the view permission; a change needs admin. A change goes through the engine's
one door (:meth:`engine.api.Engine.set_limit` / :meth:`engine.api.Engine.clear_limit`, as the
command line), which records it in the audit log with the admin as the principal. Forms carry
the CSRF token (the guard checks every POST).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from console.users import Permission
from console.web import context, flash, render, require
from engine.api import LimitState
from engine.errors import InvalidInput

router = APIRouter()

#: Limits shown on the page at most (a concurrency pool per household can make many): the search narrows them.
SHOWN = 200


def _number(text: str, kind: type[int] | type[float], what: str) -> Any:
    """A form field as a number (None when empty); InvalidInput names the field."""
    text = text.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise InvalidInput(f"{what} must be a {'whole ' if kind is int else ''}number, got {text!r}") from None


def _setting(state: LimitState) -> str:
    """How a limit is set, in words: ``200/s, burst 400`` or ``at most 2 at once``."""
    if state.kind == "rate":
        return f"{state.per_second:g}/s, burst {state.burst}"
    if state.kind == "concurrency":
        return f"at most {state.max} at once"
    return "—"


@router.get("/limits")
def limits_page(request: Request, name: str = "", q: str = "") -> Response:
    """Every limit (most recently used first; ``q`` filters by name): its setting, calls or slots
    free now, parked instances, holders, times parked."""
    user = require(request, Permission.VIEW)
    states = context(request).engine.limits()
    chosen = next((s for s in states if s.name == name), None)
    matching = [s for s in states if q.strip().lower() in s.name.lower()]
    return render(request, "limits.html", title="Limits", limits=matching[:SHOWN], more=len(matching) > SHOWN,
                  total=len(states), setting=_setting, admin=user.may(Permission.ADMIN), chosen=chosen, name=name,
                  q=q.strip())


def _change(request: Request, name: str, action: Any, message: str) -> Response:
    try:
        action()
    except InvalidInput as exc:
        flash(request, f"not done: {exc}", "error")
        return RedirectResponse(f"/limits?name={quote(name, safe='')}#change" if name else "/limits#change",
                                status_code=303)
    flash(request, message)
    return RedirectResponse("/limits", status_code=303)


@router.post("/limits/set")
def set_limit(request: Request, name: str = Form(""), what: str = Form("rate"), per_second: str = Form(""),
              burst: str = Form(""), maximum: str = Form("")) -> Response:
    """Override a limit for every worker at once: a rate (per second, burst) or a pool's size."""
    user = require(request, Permission.ADMIN)
    engine, name = context(request).engine, name.strip()

    def apply() -> LimitState:
        if not name:
            raise InvalidInput("name the limit to change (the table lists them)")
        if what == "max":
            most = _number(maximum, int, "at most")
            if most is None:
                raise InvalidInput("give how many at most at once")
            return engine.set_limit(name, maximum=most, by=user.principal)
        rate = _number(per_second, float, "per second")
        if rate is None:
            raise InvalidInput("give the calls a second (and, if you like, the burst)")
        return engine.set_limit(name, per_second=rate, burst=_number(burst, int, "burst"), by=user.principal)

    return _change(request, name, apply, f"{name} set for every worker; it stays until you clear it")


@router.post("/limits/clear")
def clear_limit(request: Request, name: str = Form("")) -> Response:
    """Drop a limit's override: the definitions' settings apply again."""
    user = require(request, Permission.ADMIN)
    engine, name = context(request).engine, name.strip()
    return _change(request, name, lambda: engine.clear_limit(name, by=user.principal),
                   f"{name}: override cleared, the definitions' settings apply again")


# -- the JSON API ---------------------------------------------------------------------------------


class LimitChange(BaseModel):
    """An override: ``per_second`` (and ``burst``) for a rate, or ``max`` for a concurrency pool."""

    per_second: float | None = None
    burst: int | None = None
    max: int | None = None


@router.get("/api/limits")
def api_limits(request: Request) -> dict[str, Any]:
    """Every limit as ``tradeflow limits --json`` gives it."""
    require(request, Permission.VIEW)
    return {"limits": [s.to_dict() for s in context(request).engine.limits()]}


@router.put("/api/admin/limits/{name:path}")
def api_set_limit(request: Request, name: str, body: LimitChange) -> dict[str, Any]:
    """Override limit ``name`` (409 with the reason when the values are not allowed)."""
    user = require(request, Permission.ADMIN)
    state = context(request).engine.set_limit(name, per_second=body.per_second, burst=body.burst,
                                              maximum=body.max, by=user.principal)
    return state.to_dict()


@router.delete("/api/admin/limits/{name:path}")
def api_clear_limit(request: Request, name: str) -> dict[str, Any]:
    """Drop the override of limit ``name``."""
    user = require(request, Permission.ADMIN)
    context(request).engine.clear_limit(name, by=user.principal)
    return {"name": name, "override": False}
