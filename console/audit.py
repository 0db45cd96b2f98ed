"""The audit page: who decided, signalled, operated, logged in, and managed users, when; plus logins.

Operators and admins see it (``operate`` permission): it names people and what they did, which a
viewer has no need for and a portfolio manager sees per proposal on the proposal's own page.
Events come from :meth:`engine.api.Engine.audit`, newest first, one page at a time (the page's
``next`` cursor is the ``before`` of the following one). The sign-in routes (:mod:`console.auth`)
record logins, failed logins and logouts in the same log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response

from console.users import Permission
from console.web import context, render, require
from engine.api import Engine
from engine.audit import CLOSE_BATCH, CONTROL_KINDS, LIMIT_KINDS, SIGNAL, SIGNAL_DUPLICATE, SIGNAL_REFUSED
from engine.errors import InvalidInput

router = APIRouter()

PAGE = 100
MAX_PAGE = 1000
#: The kinds the console records itself (the engine records signals and operator actions).
LOGIN_KINDS = ("login", "login_failed", "logout")
#: Groups of kinds offered by the page's filter: (label, kinds); an empty tuple means every kind.
KIND_GROUPS: dict[str, tuple[str, ...]] = {
    "": (),
    "decisions and signals": (SIGNAL, SIGNAL_REFUSED, SIGNAL_DUPLICATE),
    "operator actions": (*CONTROL_KINDS, CLOSE_BATCH),
    "limit changes": LIMIT_KINDS,
    "logins": LOGIN_KINDS,
    "users and tokens": ("user_added", "user_replaced", "user_role_changed", "user_password_changed",
                         "user_removed", "token_created", "token_revoked"),
}


@dataclass(frozen=True)
class AuditQuery:
    """The audit page's filters, as given (text) and as the engine takes them."""

    person: str = ""
    run: str = ""
    kind: str = ""
    since: str = ""
    until: str = ""
    before: str = ""
    limit: int = PAGE

    def kinds(self) -> list[str] | None:
        """The kinds asked for: a group's, or one kind, or None (every kind)."""
        if self.kind in KIND_GROUPS:
            return list(KIND_GROUPS[self.kind]) or None
        return [k.strip() for k in self.kind.split(",") if k.strip()] or None

    def search(self, engine: Engine, zone: ZoneInfo) -> Any:
        """One page of the events that match (:class:`engine.audit.AuditPage`)."""
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE} (got {self.limit})")
        return engine.audit(person=self.person.strip() or None, run=self.run.strip() or None,
                            since=moment(self.since, zone), until=moment(self.until, zone), kinds=self.kinds(),
                            limit=self.limit, before=self.before or None)

    def link(self, before: str) -> str:
        """The query string of the same filters at cursor ``before``."""
        from urllib.parse import urlencode

        fields = {"person": self.person, "run": self.run, "kind": self.kind, "since": self.since,
                  "until": self.until, "limit": self.limit if self.limit != PAGE else "", "before": before}
        return "?" + urlencode({k: v for k, v in fields.items() if v != ""})


def moment(text: str, zone: ZoneInfo) -> float | None:
    """A date (``2026-12-05``) or date-time (``2026-12-05T09:30``, with or without offset) as epoch
    seconds, in ``zone`` when no offset is given; None when empty."""
    text = text.strip()
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date or date-time: use e.g. 2026-12-05 or 2026-12-05T09:30") from None
    return (at if at.tzinfo else at.replace(tzinfo=zone)).timestamp()


@router.get("/audit")
def audit_page(request: Request, person: str = "", run: str = "", kind: str = "", since: str = "", until: str = "",
               before: str = "", limit: int = PAGE) -> Response:
    """Every decision, signal, operator action, login and user change, newest first, filtered, 100 a page."""
    require(request, Permission.OPERATE)
    ctx = context(request)
    query = AuditQuery(person, run, kind, since, until, before, max(1, min(limit, MAX_PAGE)))
    page = query.search(ctx.engine, ctx.zone)
    return render(request, "audit.html", title="Audit", page=page, query=query, groups=KIND_GROUPS,
                  next_link=query.link(page.next) if page.next else None, first_link=query.link(""))


@router.get("/api/audit")
def api_audit(request: Request, person: str = "", run: str = "", kind: str = "", since: str = "", until: str = "",
              before: str = "", limit: int = PAGE) -> dict[str, Any]:
    """The audit log, newest first (filters as the page; ``kind`` a group or comma-separated kinds;
    ``since``/``until`` ISO dates or date-times); ``next`` is the ``before`` of the following page."""
    require(request, Permission.OPERATE)
    ctx = context(request)
    page = AuditQuery(person, run, kind, since, until, before, limit).search(ctx.engine, ctx.zone)
    return {"events": [e.to_dict() for e in page.events], "next": page.next}


