"""The admin pages: users (add, change role or password, remove) and API tokens (create, revoke),
and the same under ``/api/admin/``. Admin role only; every form carries the CSRF token; every change
goes through :class:`console.user_admin.UserAdmin`, which records it in the audit log with the admin
as the principal. A new token's secret is shown once, in the answer to its creation, and never
stored in the session or the log.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from console.errors import UserError
from console.user_admin import UserAdmin
from console.users import MIN_PASSWORD, Permission, Role
from console.web import context, flash, render, require

router = APIRouter()

PAGE = 100
MAX_PAGE = 1000


def admin_of(request: Request) -> UserAdmin:
    """User administration as the signed-in admin (403 for any other role)."""
    user = require(request, Permission.ADMIN)
    ctx = context(request)
    return UserAdmin(ctx.users, ctx.engine.record_audit, user.principal)


def _page(items: list[Any], offset: int, limit: int) -> tuple[list[Any], int | None]:
    offset, limit = max(offset, 0), max(1, min(limit, MAX_PAGE))
    return items[offset:offset + limit], offset + limit if offset + limit < len(items) else None


def _token_counts(request: Request) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, record in context(request).users.tokens():
        counts[record["user"]] = counts.get(record["user"], 0) + 1
    return counts


@router.get("/admin/users")
def users_page(request: Request, offset: int = 0, limit: int = PAGE) -> Response:
    """Every user with their role and creation time; forms to add, change and remove."""
    admin = admin_of(request)
    users, more = _page(admin.users.list(), offset, limit)
    return render(request, "users.html", title="Users", users=users, roles=[r.value for r in Role],
                  tokens=_token_counts(request), min_password=MIN_PASSWORD, offset=max(offset, 0), more=more)


def _done(request: Request, action: Any, message: str, target: str = "/admin/users") -> Response:
    try:
        action()
    except UserError as exc:
        flash(request, f"not done: {exc}", "error")
    else:
        flash(request, message)
    return RedirectResponse(target, status_code=303)


@router.post("/admin/users")
def add_user(request: Request, name: str = Form(""), role: str = Form(""), password: str = Form("")) -> Response:
    """Add a user."""
    admin = admin_of(request)
    name = name.strip()
    return _done(request, lambda: admin.add(name, role, password), f"user {name} added as {role}: they can sign in now")


@router.post("/admin/users/{name}/role")
def change_role(request: Request, name: str, role: str = Form("")) -> Response:
    """Give a user another role."""
    admin = admin_of(request)
    return _done(request, lambda: admin.set_role(name, role), f"{name} is now {role}")


@router.post("/admin/users/{name}/password")
def change_password(request: Request, name: str, password: str = Form("")) -> Response:
    """Give a user a new password."""
    admin = admin_of(request)
    return _done(request, lambda: admin.set_password(name, password), f"password of {name} changed")


@router.post("/admin/users/{name}/remove")
def remove_user(request: Request, name: str) -> Response:
    """Remove a user and their tokens."""
    admin = admin_of(request)
    return _done(request, lambda: admin.remove(name), f"user {name} removed, with their API tokens")


@router.get("/admin/tokens")
def tokens_page(request: Request, offset: int = 0, limit: int = PAGE) -> Response:
    """Every API token (id, user, label, created; never the secret); forms to create and revoke."""
    admin = admin_of(request)
    tokens, more = _page(admin.users.tokens(), offset, limit)
    return render(request, "tokens.html", title="API tokens", tokens=tokens,
                  users=[u.name for u, _ in admin.users.list()], created=None, offset=max(offset, 0), more=more)


@router.post("/admin/tokens")
def create_token(request: Request, user: str = Form(""), label: str = Form("")) -> Response:
    """Create a token; the answer shows its secret, once."""
    admin = admin_of(request)
    try:
        secret, token_id = admin.create_token(user, label.strip())
    except UserError as exc:
        flash(request, f"not done: {exc}", "error")
        return RedirectResponse("/admin/tokens", status_code=303)
    tokens, more = _page(admin.users.tokens(), 0, PAGE)
    return render(request, "tokens.html", title="API tokens", tokens=tokens,
                  users=[u.name for u, _ in admin.users.list()], offset=0, more=more,
                  created={"id": token_id, "user": user, "secret": secret})


@router.post("/admin/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: str) -> Response:
    """Revoke a token."""
    admin = admin_of(request)
    return _done(request, lambda: admin.revoke_token(token_id), f"token {token_id} revoked", "/admin/tokens")


# -- the JSON API ---------------------------------------------------------------------------------


class NewUser(BaseModel):
    """A user to add."""

    name: str
    role: str
    password: str


class RoleChange(BaseModel):
    """A user's new role."""

    role: str


class PasswordChange(BaseModel):
    """A user's new password."""

    password: str


class NewToken(BaseModel):
    """A token to create."""

    user: str
    label: str = ""


@router.get("/api/admin/users")
def api_users(request: Request, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
    """Users by name (``offset``/``limit`` paging; ``next`` is the next offset)."""
    admin = admin_of(request)
    users, more = _page(admin.users.list(), offset, limit)
    return {"users": [{"name": u.name, "role": u.role.value, "created_at": at} for u, at in users], "next": more}


@router.post("/api/admin/users", status_code=201)
def api_add_user(request: Request, body: NewUser) -> dict[str, Any]:
    """Add a user (400 when the name is taken, the role unknown or the password short)."""
    user = admin_of(request).add(body.name.strip(), body.role, body.password)
    return {"name": user.name, "role": user.role.value}


@router.post("/api/admin/users/{name}/role")
def api_change_role(request: Request, name: str, body: RoleChange) -> dict[str, Any]:
    """Give a user another role."""
    user = admin_of(request).set_role(name, body.role)
    return {"name": user.name, "role": user.role.value}


@router.post("/api/admin/users/{name}/password")
def api_change_password(request: Request, name: str, body: PasswordChange) -> dict[str, Any]:
    """Give a user a new password."""
    admin_of(request).set_password(name, body.password)
    return {"name": name, "password": "changed"}


@router.delete("/api/admin/users/{name}")
def api_remove_user(request: Request, name: str) -> dict[str, Any]:
    """Remove a user and their tokens."""
    admin_of(request).remove(name)
    return {"name": name, "removed": True}


@router.get("/api/admin/tokens")
def api_tokens(request: Request, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
    """Tokens, oldest first, without their secrets (``offset``/``limit`` paging)."""
    admin = admin_of(request)
    tokens, more = _page(admin.users.tokens(), offset, limit)
    return {"tokens": [{"id": tid, **record} for tid, record in tokens], "next": more}


@router.post("/api/admin/tokens", status_code=201)
def api_create_token(request: Request, body: NewToken) -> dict[str, Any]:
    """Create a token: the answer carries its secret, the only time it is shown."""
    secret, token_id = admin_of(request).create_token(body.user, body.label.strip())
    return {"id": token_id, "user": body.user, "label": body.label.strip(), "token": secret}


@router.delete("/api/admin/tokens/{token_id}")
def api_revoke_token(request: Request, token_id: str) -> dict[str, Any]:
    """Revoke a token."""
    admin_of(request).revoke_token(token_id)
    return {"id": token_id, "revoked": True}
