"""Users with roles, and API tokens, in Redis; passwords hashed with Argon2id (argon2-cffi).

Roles and what they may do:

| role | view pages and API | operate instances and definitions | review and submit proposals | manage users |
|---|---|---|---|---|
| viewer | yes | | | |
| operator | yes | yes | | |
| pm | yes | | yes | |
| admin | yes | yes | yes | yes |

API tokens are 256-bit random strings shown once at creation; only their SHA-256 is stored
(a slow hash adds nothing to a random secret of that size, and would cost every API call).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from console.console_keys import ConsoleKeys
from console.errors import UserError
from console.sessions import SessionStore
from engine import Principal


class Role(StrEnum):
    """What a user is."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    PM = "pm"
    ADMIN = "admin"


class Permission(StrEnum):
    """What a request needs."""

    VIEW = "view"
    OPERATE = "operate"
    REVIEW = "review"
    ADMIN = "admin"


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.VIEW}),
    Role.OPERATOR: frozenset({Permission.VIEW, Permission.OPERATE}),
    Role.PM: frozenset({Permission.VIEW, Permission.REVIEW}),
    Role.ADMIN: frozenset(Permission),
}

MIN_PASSWORD = 10
TOKEN_PREFIX = "tfc_"  # noqa: S105  (marks a console token; not a secret)


#: The roles a user's role implies: what the engine's role checks (an await's ``roles``) see.
IMPLIED_ROLES: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.OPERATOR: frozenset({Role.OPERATOR, Role.VIEWER}),
    Role.PM: frozenset({Role.PM, Role.VIEWER}),
    Role.ADMIN: frozenset(Role),
}


@dataclass(frozen=True)
class User:
    """A console user."""

    name: str
    role: Role

    def may(self, permission: Permission | str) -> bool:
        """True when the user's role grants ``permission``."""
        return Permission(permission) in PERMISSIONS[self.role]

    @property
    def principal(self) -> Principal:
        """Who acts, as the engine sees it: the user's name, their role and what it implies."""
        return Principal(self.name, frozenset(r.value for r in IMPLIED_ROLES[self.role]))


def role_of(value: Role | str) -> Role:
    """``value`` as a role (UserError naming the roles when it is none)."""
    try:
        return Role(value)
    except ValueError:
        raise UserError(f"role {value!r}: use one of {', '.join(r.value for r in Role)}") from None


def check_password(password: str) -> None:
    """UserError when ``password`` is shorter than :data:`MIN_PASSWORD`."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: use {MIN_PASSWORD} characters or more")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    """Users and API tokens under the console's keys."""

    def __init__(self, client: Any, keys: ConsoleKeys, hasher: PasswordHasher | None = None) -> None:
        self.client = client
        self.keys = keys
        self.hasher = hasher or PasswordHasher()

    def add(self, name: str, role: Role | str, password: str) -> User:
        """Create or replace user ``name`` with ``role`` and ``password``; replacing ends their sessions
        (a changed password or role takes effect at once, not at the next login)."""
        if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
            raise UserError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '-' or '@'")
        role = role_of(role)
        check_password(password)
        record = {"role": role.value, "hash": self.hasher.hash(password), "created_at": time.time()}
        self.client.hset(self.keys.users, name, json.dumps(record))
        SessionStore(self.client, self.keys).end_all(name)
        return User(name, role)

    def remove(self, name: str) -> None:
        """Delete user ``name``, every session and every token of theirs (all refused from the next request)."""
        if not self.client.hdel(self.keys.users, name):
            raise UserError(f"no user {name!r} (`tradeflow console users list` lists them)")
        SessionStore(self.client, self.keys).end_all(name)
        for digest, record in self._tokens():
            if record["user"] == name:
                self.client.hdel(self.keys.tokens, digest)

    def set_role(self, name: str, role: Role | str) -> User:
        """Give user ``name`` another role (their password, creation time and sessions stay: the role is read
        on every request)."""
        record = self._record(name)
        record["role"] = role_of(role).value
        self.client.hset(self.keys.users, name, json.dumps(record))
        return User(name, Role(record["role"]))

    def set_password(self, name: str, password: str) -> None:
        """Give user ``name`` a new password (their role and creation time stay); every session of theirs ends."""
        check_password(password)
        record = self._record(name)
        record["hash"] = self.hasher.hash(password)
        self.client.hset(self.keys.users, name, json.dumps(record))
        SessionStore(self.client, self.keys).end_all(name)

    def _record(self, name: str) -> dict[str, Any]:
        raw = self.client.hget(self.keys.users, name)
        if not raw:
            raise UserError(f"no user {name!r} (`tradeflow console users list` lists them)")
        return json.loads(raw)

    def get(self, name: str) -> User | None:
        """The user, or None."""
        raw = self.client.hget(self.keys.users, name)
        return User(name, Role(json.loads(raw)["role"])) if raw else None

    def list(self) -> list[tuple[User, float]]:
        """Every user with the time it was created, by name."""
        out = []
        for name, raw in self.client.hgetall(self.keys.users).items():
            record = json.loads(raw)
            out.append((User(_text(name), Role(record["role"])), float(record.get("created_at", 0))))
        return sorted(out, key=lambda item: item[0].name)

    def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs; None otherwise (same work for an unknown name)."""
        raw = self.client.hget(self.keys.users, name)
        record = json.loads(raw) if raw else None
        stored = record["hash"] if record else self._dummy_hash()
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if record is None:
            return None
        if self.hasher.check_needs_rehash(stored):
            record["hash"] = self.hasher.hash(password)
            self.client.hset(self.keys.users, name, json.dumps(record))
        return User(name, Role(record["role"]))

    _dummy: str | None = None

    def _dummy_hash(self) -> str:
        if UserStore._dummy is None:
            UserStore._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return UserStore._dummy

    # -- API tokens ------------------------------------------------------------------------------

    def create_token(self, user: str, label: str = "") -> tuple[str, str]:
        """A new API token acting as ``user``: (token, its id). The token is shown only now."""
        if self.get(user) is None:
            raise UserError(f"no user {user!r}: add the user first, a token acts with the user's role")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(token)
        record = {"user": user, "label": label, "created_at": time.time()}
        self.client.hset(self.keys.tokens, digest, json.dumps(record))
        return token, digest[:12]

    def token_user(self, token: str) -> User | None:
        """The user a token acts as, or None (unknown token, or its user was removed)."""
        raw = self.client.hget(self.keys.tokens, _digest(token))
        return self.get(json.loads(raw)["user"]) if raw else None

    def _tokens(self) -> list[tuple[str, dict[str, Any]]]:
        return [(_text(d), json.loads(r)) for d, r in self.client.hgetall(self.keys.tokens).items()]

    def tokens(self) -> list[tuple[str, dict[str, Any]]]:
        """Every token as (id, {user, label, created_at})."""
        return sorted(((d[:12], r) for d, r in self._tokens()), key=lambda t: t[1]["created_at"])

    def revoke_token(self, token_id: str) -> None:
        """Delete the token whose id (the first 12 hex digits of its hash) is ``token_id``."""
        found = [d for d, _ in self._tokens() if d.startswith(token_id)] if len(token_id) >= 6 else []
        if len(found) != 1:
            raise UserError(f"no single token with id {token_id!r} (`tradeflow console token list` lists them)")
        self.client.hdel(self.keys.tokens, found[0])
