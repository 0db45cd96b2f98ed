"""The console's exceptions (one root)."""

from __future__ import annotations


class ConsoleError(Exception):
    """Root of the console's errors."""


class UserError(ConsoleError):
    """A user or token operation that cannot be done (unknown user, bad role, weak password)."""


class NeedLogin(ConsoleError):
    """The request has no valid session or token."""


class Forbidden(ConsoleError):
    """The user's role may not do this (HTTP 403)."""


class BadCsrf(Forbidden):
    """A state-changing request without the session's CSRF token (HTTP 403)."""


class TooManyAttempts(ConsoleError):
    """Too many login attempts for this user name or from this address: wait ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many login attempts; try again in {int(retry_after) + 1} s")
        self.retry_after = retry_after

    @property
    def seconds(self) -> int:
        """Whole seconds to wait (the ``Retry-After`` header), never less than the real wait."""
        return int(self.retry_after) + 1
