"""What every console page and plugin shares: the context, the signed-in user, role checks,
CSRF, rendering and redirects. Plugins (``tradeflow.console``) build their routers on these."""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from console.burndown import BurndownStore
from console.config import ConsoleSettings
from console.errors import BadCsrf, Forbidden, NeedLogin
from console.sessions import SessionStore
from console.throttle import LoginThrottle
from console.users import Permission, User, UserStore
from engine.api import Engine

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/healthz", "/login"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass
class ConsoleContext:
    """Everything a request handler needs, built once at start."""

    engine: Engine
    users: UserStore
    throttle: LoginThrottle
    burndown: BurndownStore
    settings: ConsoleSettings
    queues: list[str]
    templates: Jinja2Templates | None = None
    #: (label, path) of the navigation bar; plugins add theirs.
    nav: list[tuple[str, str]] = field(default_factory=list)
    #: The roles a pasted definition may name (``TRADEFLOW_ROLES`` read at the edge, and the plugins');
    #: None: the plugins' only.
    roles: frozenset[str] | None = None

    @property
    def sessions(self) -> SessionStore:
        """The users' live sessions (on the users' Redis, lasting the configured hours)."""
        return SessionStore(self.users.client, self.users.keys, self.settings.session_hours)

    @property
    def zone(self) -> ZoneInfo:
        """The zone times are shown in."""
        return ZoneInfo(self.settings.timezone)


def context(request: Request) -> ConsoleContext:
    """The console's context of this request's app."""
    return request.app.state.console


def user_of(request: Request) -> User | None:
    """The signed-in user (session or API token), or None on the public pages."""
    return getattr(request.state, "user", None)


def require(request: Request, permission: Permission | str) -> User:
    """The user, if their role grants ``permission``; Forbidden (403) otherwise."""
    user = user_of(request)
    if user is None:
        raise NeedLogin("sign in first")
    if not user.may(permission):
        raise Forbidden(f"{user.name} is {user.role.value}: this needs the {Permission(permission).value} permission "
                        "(ask an admin for a role that has it)")
    return user


def reason_by(user: User, reason: str = "") -> str:
    """The reason recorded in an instance's history: ``by <user>: <reason>``."""
    return f"by {user.name}" + (f": {reason.strip()}" if reason.strip() else "")


def csrf_token(request: Request) -> str:
    """This session's CSRF token (created on first use)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def check_csrf(request: Request) -> None:
    """Raise BadCsrf unless the request carries the session's token (header or form field)."""
    expected = request.session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and "form" in request.headers.get("content-type", ""):
        sent = (await request.form()).get(CSRF_FIELD)
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise BadCsrf("missing or wrong CSRF token: reload the page and try again")


async def guard(request: Request) -> None:
    """Every request: who is it (session or bearer token), may it come in, and CSRF on changes."""
    ctx = context(request)
    request.state.user = None
    path = request.url.path
    if path in PUBLIC_PATHS:
        if request.method not in SAFE_METHODS:
            await check_csrf(request)
        return
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
        if path == "/metrics" and ctx.settings.metrics_token and hmac.compare_digest(
                token.encode(), ctx.settings.metrics_token.encode()):
            return
        user = ctx.users.token_user(token)
        if user is None:
            raise NeedLogin("unknown or revoked token")
        request.state.user = user  # a token is not a cookie: no CSRF to fear
        return
    name = request.session.get("user")
    user = ctx.users.get(name) if name else None
    if user is None or not ctx.sessions.alive(user.name, request.session.get("sid")):
        request.session.pop("user", None)
        request.session.pop("sid", None)
        raise NeedLogin("sign in first (the session ended: logged out, password changed, or expired)")
    request.state.user = user
    if request.method not in SAFE_METHODS:
        await check_csrf(request)


def render(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """Render ``template`` with the page basics (user, CSRF token, nonce, navigation, flash)."""
    ctx = context(request)
    assert ctx.templates is not None
    flashes = request.session.pop("flash", []) if "session" in request.scope else []
    values.update(request=request, user=user_of(request), csrf=csrf_token(request), nonce=request.state.nonce,
                  nav=ctx.nav, flashes=flashes, zone=ctx.settings.timezone)
    return ctx.templates.TemplateResponse(request, template, values, status_code=status_code)


def flash(request: Request, message: str, kind: str = "ok") -> None:
    """Show ``message`` on the next page (kind: ok, warn, error)."""
    request.session.setdefault("flash", []).append([kind, message])


def back(request: Request, default: str) -> RedirectResponse:
    """303 to the page the form came from (same site only), else ``default``."""
    target = request.headers.get("referer", "")
    origin = f"{request.url.scheme}://{request.url.netloc}"
    path = target[len(origin):] if target.startswith(origin + "/") else default
    return RedirectResponse(path, status_code=303)


def install_filters(templates: Jinja2Templates, zone: ZoneInfo) -> None:
    """Jinja filters: ts (time in the console's zone), clock (short), ago, secs, money, pretty (JSON)."""
    env = templates.env

    def ts(value: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        return datetime.fromtimestamp(float(value), zone).strftime(fmt) if value else "—"

    def clock(value: float | None) -> str:
        """HH:MM today, else with the date."""
        if not value:
            return "—"
        moment = datetime.fromtimestamp(float(value), zone)
        return moment.strftime("%H:%M" if moment.date() == datetime.now(zone).date() else "%b %d %H:%M")

    def ago(value: float | None) -> str:
        if not value:
            return "—"
        seconds = max(time.time() - float(value), 0)
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size:
                return f"{seconds / size:.0f} {unit} ago"
        return f"{seconds:.0f} s ago"

    def secs(value: float | None) -> str:
        if value is None:
            return "—"
        value = float(value)
        if value < 1:
            return f"{value * 1000:.0f} ms"
        if value < 120:
            return f"{value:.1f} s"
        return f"{value / 60:.0f} min"

    def money(value: float | None) -> str:
        return "—" if value is None else f"{float(value):,.2f}"

    def pretty(value: Any) -> str:
        return json.dumps(value, indent=2, sort_keys=True, default=str)

    env.filters.update(ts=ts, clock=clock, ago=ago, secs=secs, money=money, pretty=pretty)
