"""The console's settings, read once from the environment.

| variable | default | meaning |
|---|---|---|
| ``TRADEFLOW_CONSOLE_SECRET`` | random per process (warning) | signs the session cookies; set it in production |
| ``TRADEFLOW_METRICS_TOKEN`` | — | when set, ``/metrics`` also answers ``Authorization: Bearer <it>`` |
| ``TRADEFLOW_CONSOLE_SECURE_COOKIES`` | ``0`` | ``1``: cookies only over HTTPS (behind a TLS proxy) |
| ``TRADEFLOW_CONSOLE_SESSION_HOURS`` | ``12`` | a session's lifetime |
| ``TRADEFLOW_CONSOLE_TIMEZONE`` | ``UTC`` | the zone times are shown in |
| ``TRADEFLOW_CONSOLE_SAMPLE_SECONDS`` | ``5`` | how often the burn-down samples live runs |
| ``TRADEFLOW_DEMO_PASSWORD`` | generated | the password of the demo's console user ``demo`` |
| ``TRADEFLOW_CONSOLE_LOGIN_FREE`` | ``3`` | login attempts per user name before the throttle's delay starts |
| ``TRADEFLOW_CONSOLE_LOGIN_DELAY`` | ``2`` | the first delay (s); it doubles with each further attempt, to 900 s |
| ``TRADEFLOW_CONSOLE_ARGON2_TIME_COST`` | ``3`` | Argon2id passes per password hash and per sign-in |
| ``TRADEFLOW_CONSOLE_ARGON2_MEMORY_KIB`` | ``65536`` | Argon2id memory per hash (KiB) |
| ``TRADEFLOW_CONSOLE_ARGON2_PARALLELISM`` | ``4`` | Argon2id lanes per hash |

The three Argon2id costs default to argon2-cffi's own (RFC 9106's second recommended profile);
lower them only for test consoles whose logins are many and whose passwords guard nothing (a
console started with a cost below the default logs a warning). A stored hash made at other costs
still verifies, and is re-hashed at the configured costs on its next sign-in.

Every variable of the console is read here, once (:meth:`ConsoleSettings.from_env`); the
engine's (Redis, key prefix...) by :class:`engine.config.Settings`.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from argon2 import DEFAULT_MEMORY_COST, DEFAULT_PARALLELISM, DEFAULT_TIME_COST, PasswordHasher

from console.errors import ConsoleError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console behaves; see the module docstring for the variables."""

    secret: str | None = None
    metrics_token: str | None = None
    secure_cookies: bool = False
    session_hours: float = 12.0
    timezone: str = "UTC"
    sample_seconds: float = 5.0
    #: The demo user's password (``TRADEFLOW_DEMO_PASSWORD``); None: the demo generates one.
    demo_password: str | None = None
    #: Login attempts allowed per user name before the delay starts (a success starts again).
    login_free_failures: int = 3
    #: Login attempts allowed per client address before the delay starts (an office behind one address).
    login_address_free: int = 30
    #: First delay after the free failures; doubles with each further failure, up to the maximum.
    login_base_delay: float = 2.0
    login_max_delay: float = 900.0
    #: Argon2id costs of password hashes (default: argon2-cffi's, the production cost).
    argon2_time_cost: int = DEFAULT_TIME_COST
    argon2_memory_kib: int = DEFAULT_MEMORY_COST
    argon2_parallelism: int = DEFAULT_PARALLELISM

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsoleSettings:
        """Read the ``TRADEFLOW_CONSOLE_*`` variables; ConsoleError names a bad one."""
        env = os.environ if env is None else env
        zone = env.get("TRADEFLOW_CONSOLE_TIMEZONE", "UTC")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConsoleError(f"TRADEFLOW_CONSOLE_TIMEZONE={zone!r}: use an IANA zone, e.g. America/Toronto") from None
        try:
            return cls(
                secret=env.get("TRADEFLOW_CONSOLE_SECRET") or None,
                metrics_token=env.get("TRADEFLOW_METRICS_TOKEN") or None,
                secure_cookies=env.get("TRADEFLOW_CONSOLE_SECURE_COOKIES", "0").lower() in {"1", "true", "yes"},
                session_hours=float(env.get("TRADEFLOW_CONSOLE_SESSION_HOURS", "12")),
                timezone=zone,
                sample_seconds=float(env.get("TRADEFLOW_CONSOLE_SAMPLE_SECONDS", "5")),
                demo_password=env.get("TRADEFLOW_DEMO_PASSWORD") or None,
                login_free_failures=int(env.get("TRADEFLOW_CONSOLE_LOGIN_FREE", "3")),
                login_base_delay=float(env.get("TRADEFLOW_CONSOLE_LOGIN_DELAY", "2")),
                argon2_time_cost=int(env.get("TRADEFLOW_CONSOLE_ARGON2_TIME_COST", DEFAULT_TIME_COST)),
                argon2_memory_kib=int(env.get("TRADEFLOW_CONSOLE_ARGON2_MEMORY_KIB", DEFAULT_MEMORY_COST)),
                argon2_parallelism=int(env.get("TRADEFLOW_CONSOLE_ARGON2_PARALLELISM", DEFAULT_PARALLELISM)),
            )
        except ValueError as exc:
            raise ConsoleError(f"bad TRADEFLOW_CONSOLE_* setting: {exc}") from None

    def password_hasher(self) -> PasswordHasher:
        """The Argon2id hasher of the configured costs (ConsoleError for costs Argon2 refuses); a
        warning when any cost is below the default, which only a test console should run with."""
        time_cost, memory_kib, lanes = self.argon2_time_cost, self.argon2_memory_kib, self.argon2_parallelism
        if time_cost < 1 or lanes < 1 or memory_kib < 8 * lanes:
            raise ConsoleError(f"bad TRADEFLOW_CONSOLE_ARGON2_* setting: time cost {time_cost} (1 or more), "
                               f"parallelism {lanes} (1 or more), memory {memory_kib} KiB (8 x parallelism or more)")
        if time_cost < DEFAULT_TIME_COST or memory_kib < DEFAULT_MEMORY_COST or lanes < DEFAULT_PARALLELISM:
            log.warning("console passwords are hashed below the default Argon2id cost (time %d, memory %d KiB, "
                        "parallelism %d): fit for a test console only", time_cost, memory_kib, lanes)
        return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=lanes)

    def session_secret(self) -> str:
        """The cookie-signing secret; without one, a random one for this process and a loud warning."""
        if self.secret:
            if len(self.secret) < 32:
                raise ConsoleError("TRADEFLOW_CONSOLE_SECRET is too short: use 32 characters or more "
                                   "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
            return self.secret
        log.warning("TRADEFLOW_CONSOLE_SECRET is not set: using a random secret for this process. Sessions end "
                    "when it restarts and are not shared between console processes; set it in production.")
        return secrets.token_urlsafe(32)
