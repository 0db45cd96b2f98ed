"""Signing in and out: the login form, the failed-login slowdown, the session."""

from __future__ import annotations

import time
from urllib.parse import urlparse

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from console.errors import TooManyAttempts
from console.web import context, csrf_token, render

router = APIRouter()


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
    """Check the password (after the slowdown); on success a fresh session with a new CSRF token."""
    ctx = context(request)
    address = request.client.host if request.client else "?"
    try:
        ctx.throttle.check(username, address)
    except TooManyAttempts as exc:
        return render(request, "login.html", status_code=429, next=_safe_next(next), error=str(exc))
    user = ctx.users.verify(username, password)
    if user is None:
        ctx.throttle.failed(username, address)
        return render(request, "login.html", status_code=401, next=_safe_next(next),
                      error="wrong user name or password")
    ctx.throttle.succeeded(username, address)
    request.session.clear()
    request.session.update(user=user.name, at=time.time())
    csrf_token(request)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request) -> Response:
    """End the session."""
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
