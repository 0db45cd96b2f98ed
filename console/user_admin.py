"""Managing console users and API tokens: the one implementation behind the admin pages
(:mod:`console.admin`) and ``tradeflow console users|token`` (:mod:`console.cli`).

Every change is recorded in the engine's audit log with who made it (kinds ``user_added``,
``user_role_changed``, ``user_password_changed``, ``user_removed``, ``token_created``,
``token_revoked``); a token's secret never goes there. The last admin can be neither removed
nor given another role, so that somebody can always manage the users.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from console.errors import UserError
from console.users import Role, User, UserStore, role_of

#: ``Engine.record_audit``: (kind, by, detail=...) -> None.
AuditRecorder = Callable[..., None]


class UserAdmin:
    """User and token changes made by ``by`` (a principal or a name), each recorded by ``audit``."""

    def __init__(self, users: UserStore, audit: AuditRecorder | None, by: Any) -> None:
        self.users = users
        self.audit = audit
        self.by = by

    def _record(self, kind: str, **detail: Any) -> None:
        if self.audit is not None:
            self.audit(kind, self.by, detail=detail)

    def _admins(self) -> list[str]:
        return [u.name for u, _ in self.users.list() if u.role is Role.ADMIN]

    def _keep_an_admin(self, name: str, what: str) -> None:
        if self._admins() == [name]:
            raise UserError(f"{name} is the only admin: make another user admin before you {what} {name}")

    def add(self, name: str, role: Role | str, password: str) -> User:
        """Add user ``name`` (UserError when the name is taken: change their role or password instead)."""
        if self.users.get(name) is not None:
            raise UserError(f"user {name!r} exists already: change their role or password instead")
        user = self.users.add(name, role, password)
        self._record("user_added", user=user.name, role=user.role.value)
        return user

    def replace(self, name: str, role: Role | str, password: str) -> User:
        """Add user ``name``, or replace their role and password (``tradeflow console users add``)."""
        existing = self.users.get(name)
        if existing is not None and existing.role is Role.ADMIN and role_of(role) is not Role.ADMIN:
            self._keep_an_admin(name, "demote")
        user = self.users.add(name, role, password)
        self._record("user_added" if existing is None else "user_replaced", user=user.name, role=user.role.value)
        return user

    def set_role(self, name: str, role: Role | str) -> User:
        """Give user ``name`` another role."""
        before = self.users.get(name)
        if before is None:
            raise UserError(f"no user {name!r}")
        if before.role is Role.ADMIN and role_of(role) is not Role.ADMIN:
            self._keep_an_admin(name, "demote")
        user = self.users.set_role(name, role)
        self._record("user_role_changed", user=name, role=user.role.value, was=before.role.value)
        return user

    def set_password(self, name: str, password: str) -> None:
        """Give user ``name`` a new password."""
        self.users.set_password(name, password)
        self._record("user_password_changed", user=name)

    def remove(self, name: str) -> None:
        """Remove user ``name`` and their tokens."""
        self._keep_an_admin(name, "remove")
        self.users.remove(name)
        self._record("user_removed", user=name)

    def create_token(self, user: str, label: str = "") -> tuple[str, str]:
        """A new token acting as ``user``: (the secret, shown once; its id)."""
        secret, token_id = self.users.create_token(user, label)
        self._record("token_created", user=user, token=token_id, label=label)
        return secret, token_id

    def revoke_token(self, token_id: str) -> None:
        """Revoke the token whose id is ``token_id``."""
        owner = next((r["user"] for tid, r in self.users.tokens() if tid.startswith(token_id)), None)
        self.users.revoke_token(token_id)
        self._record("token_revoked", user=owner, token=token_id)
