"""Signing in and out: the login form, the login throttle, the server-side session, the audit of both."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from console.errors import TooManyAttempts
from console.web import context, csrf_token, render, user_of

router = APIRouter()
log = logging.getLogger(__name__)


def _audit(request: Request, kind: str, by: Any, address: str) -> None:
    """Record a login, failed login or logout in the engine's audit (never fails the request)."""
    try:
        context(request).engine.record_audit(kind, by, detail={"address": address})
    except Exception as exc:  # the audit must not lock people out
        log.warning("audit of %s by %s not recorded: %s", kind, by, exc)


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no scheme, no host) may be the page after login."""
    parsed = urlparse(target or "")
    if (not target or parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//")
            or "\\" in target):
        return "/runs"
    return target


@router.get("/login")
def login_page(request: Request, next: str = "/runs") -> Response:
    """The login form (fields ``username``, ``password``)."""
    csrf_token(request)
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
def login(request: Request, username: str = Form(""), password: str = Form(""),
          next: str = Form("/runs")) -> Response:
    """Count the attempt (the throttle), then check the password; on success a fresh server-side
    session with a new CSRF token. Too soon after too many attempts: 429 with ``Retry-After``."""
    ctx = context(request)
    address = request.client.host if request.client else "?"
    try:
        ctx.throttle.attempt(username, address)
    except TooManyAttempts as exc:
        answer = render(request, "login.html", status_code=429, next=_safe_next(next), error=str(exc))
        answer.headers["Retry-After"] = str(exc.seconds)
        return answer
    user = ctx.users.verify(username, password)
    if user is None:
        _audit(request, "login_failed", username[:64] or "?", address)
        return render(request, "login.html", status_code=401, next=_safe_next(next),
                      error="wrong user name or password")
    ctx.throttle.succeeded(username, address)
    request.session.clear()
    request.session.update(user=user.name, sid=ctx.sessions.start(user.name), at=time.time())
    csrf_token(request)
    _audit(request, "login", user.principal, address)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request) -> Response:
    """End this session, on the server too: a saved copy of the cookie no longer signs in."""
    user = user_of(request)
    if user is not None:
        context(request).sessions.end(user.name, request.session.get("sid"))
        _audit(request, "logout", user.principal, request.client.host if request.client else "?")
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
