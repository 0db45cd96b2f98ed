"""Settings read from the environment at the edge, then passed in.

| variable | default | meaning |
|---|---|---|
| ``TRADEFLOW_REDIS_URL`` | ``redis://127.0.0.1:6379/0`` | state store (``rediss://``: TLS; ``sentinel://h1,h2/0``) |
| ``TRADEFLOW_REDIS_SENTINEL_MASTER`` | — | with a ``sentinel://`` URL: the name of the master the sentinels monitor |
| ``TRADEFLOW_REDIS_SENTINEL_PASSWORD`` | — | the sentinels' own password, if they require one |
| ``TRADEFLOW_REDIS_WAIT_REPLICAS`` | ``0`` | after a terminal transition, ``WAIT`` for this many replicas |
| ``TRADEFLOW_REDIS_WAIT_MS`` | ``100`` | longest such ``WAIT``, in milliseconds |
| ``TRADEFLOW_REDIS_CONNECT_ATTEMPTS`` | ``4`` | PINGs the CLI sends a configured Redis that does not answer |
| ``TRADEFLOW_REDIS_CONNECT_WAIT`` | ``0.25`` | seconds before the second PING; each further wait doubles |
| ``TRADEFLOW_BROKER_URL`` | the Redis URL | Celery broker |
| ``TRADEFLOW_EMBEDDED_REDIS`` | ``0`` | ``1``: always use the embedded redis-server |
| ``TRADEFLOW_HOME`` | ``~/.tradeflow`` | where the embedded Redis keeps its data and address |
| ``TRADEFLOW_KEY_PREFIX`` | ``wf`` | prefix of every engine key |
| ``TRADEFLOW_RETENTION_DAYS`` | ``14`` | TTL of finished instances and their activities |
| ``TRADEFLOW_TIMER_INTERVAL`` | ``1`` | seconds between timer ticks (waits, retry backoffs) |
| ``TRADEFLOW_SWEEP_INTERVAL`` | ``2`` | seconds between sweeps for steps that made no progress or lost their worker |
| ``TRADEFLOW_RECONCILE_SECONDS`` | ``60`` | how often, and after how long, queued steps are looked for in the broker |
| ``TRADEFLOW_INLINE_STEPS`` | ``16`` | same-service steps run right after a delivered one (``0``: a message each) |
| ``TRADEFLOW_DRAIN_STEPS`` | ``16`` | waiting steps a worker takes off its queue after a delivered one (``0``: none) |
| ``TRADEFLOW_DRAIN_BATCH`` | ``1`` | batches: started and confirmed together, ends held (``0``: singly) |
| ``TRADEFLOW_BROKER_RIDERS`` | ``1`` | solo workers: a step's start is its delivery's bookkeeping (``0``: off) |
| ``TRADEFLOW_STRAIGHT_STEPS`` | ``1`` | solo workers: a step runs straight from its message (``0``: Celery's request) |
| ``TRADEFLOW_EXPECT_EPOCH`` | — | nodes of ``tradeflow workers`` refuse another data set |
| ``TRADEFLOW_CLOCK_OFFSET_FILE`` | — | rehearsals and tests only: a file holding seconds added to the wall clock |
| ``TRADEFLOW_SERVICE_MODULES`` | the installed plugins' | modules whose actions workers serve (comma list) |
| ``TRADEFLOW_PREFETCH`` | ``1`` | messages a worker process reserves ahead |
| ``TRADEFLOW_VISIBILITY_TIMEOUT`` | ``7200`` | seconds before an unacknowledged message is redelivered |
| ``TRADEFLOW_UNACKED_RESTORE_SECONDS`` | — | how often workers give back messages unacked past it (kombu: 100 s) |
| ``TRADEFLOW_BROKER_PREFIX`` | — | key prefix of the broker's queues (one deployment or test apart on a shared Redis) |
| ``TRADEFLOW_EVENTS`` | ``0`` | ``1``: workers send task events from the start (Flower turns them on while it runs) |
| ``TRADEFLOW_ROLES`` | — | roles definitions may name, besides those the plugins declare (comma list) |
| ``TRADEFLOW_PRINCIPAL`` | the OS user | who the CLI acts as (signals, pause, resume, retry, cancel, batch close) |
| ``TRADEFLOW_PRINCIPAL_ROLES`` | — | the roles of that principal (comma list), e.g. ``operator`` or ``pm`` |

Every variable is read here, once (:meth:`Settings.from_env`); defaults are the field defaults.
A ``TRADEFLOW_REDIS_URL`` that is set is never replaced by another Redis (``redis_url_configured``;
see :func:`engine.ops.embedded.resolve_redis_url`).
Celery's configuration is assembled from these by :mod:`engine.celery_config`.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.errors import ConfigurationError
from engine.principal import Principal

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_HOME = "~/.tradeflow"


@dataclass(frozen=True)
class Settings:
    """Everything the engine needs to know about its environment."""

    redis_url: str = DEFAULT_REDIS_URL
    #: True when TRADEFLOW_REDIS_URL was set: that Redis is retried, never replaced by the embedded one.
    redis_url_configured: bool = False
    broker_url: str | None = None
    embedded: bool = False
    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME).expanduser())
    key_prefix: str = "wf"
    retention_days: float = 14.0
    timer_interval: float = 1.0
    sweep_interval: float = 2.0
    inline_steps: int = 16
    drain_steps: int = 16
    #: Drained steps started in one round trip, their instances' ends held for the next change
    #: (:mod:`engine.runtime.concerns.draining`); off: each step's start rides on the one before.
    drain_batch: bool = True
    #: A delivered step's start is its delivery's bookkeeping, in place of kombu's unacked entries
    #: (``solo`` workers on the state's Redis; :mod:`engine.broker.kombu_riders`).
    broker_riders: bool = True
    #: A ``solo`` worker runs a delivered step straight from its message, without Celery's request
    #: machinery (:mod:`engine.broker.step_strategy`).
    straight_steps: bool = True
    reconcile_seconds: float = 60.0
    clock_offset_file: Path | None = None
    #: Modules whose actions workers serve; empty: those the installed plugins name.
    service_modules: tuple[str, ...] = ()
    prefetch: int = 1
    visibility_timeout: int = 7200
    unacked_restore_seconds: int | None = None
    broker_prefix: str = ""
    #: Task events (three PUBLISH per delivered task): off, Flower enables them while it runs (docs/metrics.md).
    events: bool = False
    redis_sentinel_master: str | None = None
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_wait_replicas: int = 0
    #: A configured Redis that does not answer: PINGs before the error, and the first wait between them (doubling).
    redis_connect_attempts: int = 4
    redis_connect_wait: float = 0.25
    redis_wait_ms: int = 100
    #: The data set (epoch) a node of ``tradeflow workers`` must find, else it refuses to start.
    expected_epoch: str | None = None
    #: Roles a definition's signals may name, besides the plugins' (:mod:`engine.roles`).
    roles: tuple[str, ...] = ()
    #: Who the CLI acts as (``TRADEFLOW_PRINCIPAL``; default the OS user) and with which roles.
    principal_name: str = ""
    principal_roles: tuple[str, ...] = ()
    #: True when ``TRADEFLOW_PRINCIPAL`` was set (a refusal then need not say to set it).
    principal_configured: bool = False

    def principal(self) -> Principal:
        """The CLI's identity: ``TRADEFLOW_PRINCIPAL`` with ``TRADEFLOW_PRINCIPAL_ROLES`` (default: the OS user)."""
        return Principal(self.principal_name or _os_user(), frozenset(self.principal_roles))

    @property
    def retention_seconds(self) -> int:
        """The TTL given to a finished instance."""
        return int(self.retention_days * 86400)

    @property
    def effective_broker_url(self) -> str:
        """The broker URL (the Redis URL unless set apart)."""
        return self.broker_url or self.redis_url

    def with_redis(self, url: str) -> Settings:
        """A copy using ``url`` for Redis (and the broker, unless that was set apart)."""
        return replace(self, redis_url=url, redis_url_configured=True,
                       broker_url=self.broker_url if self.broker_url else None)

    def pinned_to(self, epoch: str) -> Settings:
        """A copy whose worker processes refuse a data set other than ``epoch`` (``tradeflow workers``)."""
        return replace(self, expected_epoch=epoch)

    def child_env(self) -> dict[str, str]:
        """The variables that hand this Redis (and broker, and expected data set) to worker processes started here."""
        env = {"TRADEFLOW_REDIS_URL": self.redis_url}
        if self.broker_url:
            env["TRADEFLOW_BROKER_URL"] = self.broker_url
        if self.expected_epoch:
            env["TRADEFLOW_EXPECT_EPOCH"] = self.expected_epoch
        return env

    @property
    def uses_sentinel(self) -> bool:
        """True when the state Redis is reached through Redis Sentinel (a ``sentinel://`` URL)."""
        return self.redis_url.strip().lower().startswith("sentinel://")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the ``TRADEFLOW_*`` variables (see the module docstring)."""
        env = os.environ if env is None else env
        d = cls  # the field defaults, written once above
        try:
            settings = cls(
                redis_url=env.get("TRADEFLOW_REDIS_URL") or DEFAULT_REDIS_URL,
                redis_url_configured=bool(env.get("TRADEFLOW_REDIS_URL")),
                broker_url=env.get("TRADEFLOW_BROKER_URL") or None,
                embedded=_flag(env.get("TRADEFLOW_EMBEDDED_REDIS"), d.embedded),
                home=Path(env.get("TRADEFLOW_HOME", DEFAULT_HOME)).expanduser(),
                key_prefix=env.get("TRADEFLOW_KEY_PREFIX", d.key_prefix),
                retention_days=float(env.get("TRADEFLOW_RETENTION_DAYS", d.retention_days)),
                timer_interval=float(env.get("TRADEFLOW_TIMER_INTERVAL", d.timer_interval)),
                sweep_interval=float(env.get("TRADEFLOW_SWEEP_INTERVAL", d.sweep_interval)),
                inline_steps=int(env.get("TRADEFLOW_INLINE_STEPS", d.inline_steps)),
                drain_steps=int(env.get("TRADEFLOW_DRAIN_STEPS", d.drain_steps)),
                drain_batch=env.get("TRADEFLOW_DRAIN_BATCH", "1") != "0",
                broker_riders=env.get("TRADEFLOW_BROKER_RIDERS", "1") != "0",
                straight_steps=env.get("TRADEFLOW_STRAIGHT_STEPS", "1") != "0",
                reconcile_seconds=float(env.get("TRADEFLOW_RECONCILE_SECONDS", d.reconcile_seconds)),
                clock_offset_file=Path(env["TRADEFLOW_CLOCK_OFFSET_FILE"]) if env.get("TRADEFLOW_CLOCK_OFFSET_FILE")
                else None,
                service_modules=tuple(m.strip() for m in env.get("TRADEFLOW_SERVICE_MODULES", "").split(",")
                                      if m.strip()),
                prefetch=int(env.get("TRADEFLOW_PREFETCH", d.prefetch)),
                visibility_timeout=int(env.get("TRADEFLOW_VISIBILITY_TIMEOUT", d.visibility_timeout)),
                unacked_restore_seconds=int(env["TRADEFLOW_UNACKED_RESTORE_SECONDS"])
                if env.get("TRADEFLOW_UNACKED_RESTORE_SECONDS") else None,
                broker_prefix=env.get("TRADEFLOW_BROKER_PREFIX", d.broker_prefix),
                events=env.get("TRADEFLOW_EVENTS", "0") != "0",
                redis_sentinel_master=env.get("TRADEFLOW_REDIS_SENTINEL_MASTER") or None,
                redis_sentinel_password=env.get("TRADEFLOW_REDIS_SENTINEL_PASSWORD") or None,
                redis_wait_replicas=int(env.get("TRADEFLOW_REDIS_WAIT_REPLICAS", d.redis_wait_replicas)),
                redis_wait_ms=int(env.get("TRADEFLOW_REDIS_WAIT_MS", d.redis_wait_ms)),
                redis_connect_attempts=int(env.get("TRADEFLOW_REDIS_CONNECT_ATTEMPTS", d.redis_connect_attempts)),
                redis_connect_wait=float(env.get("TRADEFLOW_REDIS_CONNECT_WAIT", d.redis_connect_wait)),
                expected_epoch=env.get("TRADEFLOW_EXPECT_EPOCH") or None,
                roles=_names(env.get("TRADEFLOW_ROLES", "")),
                principal_name=(env.get("TRADEFLOW_PRINCIPAL") or "").strip() or _os_user(),
                principal_roles=_names(env.get("TRADEFLOW_PRINCIPAL_ROLES", "")),
                principal_configured=bool((env.get("TRADEFLOW_PRINCIPAL") or "").strip()),
            )
        except ValueError as exc:
            raise ConfigurationError(f"bad TRADEFLOW_* setting: {exc}") from exc
        if settings.uses_sentinel and not settings.redis_sentinel_master:
            raise ConfigurationError(
                "TRADEFLOW_REDIS_URL is a sentinel:// URL: set TRADEFLOW_REDIS_SENTINEL_MASTER to the name of the "
                "master the sentinels monitor (`sentinel monitor <name> ...`)"
            )
        if settings.redis_wait_replicas < 0 or settings.redis_wait_ms <= 0:
            raise ConfigurationError("TRADEFLOW_REDIS_WAIT_REPLICAS must be 0 or more and TRADEFLOW_REDIS_WAIT_MS "
                                     "a positive number of milliseconds (e.g. 1 and 100)")
        if settings.redis_connect_attempts < 1 or settings.redis_connect_wait < 0:
            raise ConfigurationError("TRADEFLOW_REDIS_CONNECT_ATTEMPTS must be 1 or more and "
                                     "TRADEFLOW_REDIS_CONNECT_WAIT 0 or more seconds (e.g. 4 and 0.25)")
        return settings


def _names(value: str) -> tuple[str, ...]:
    """A comma list of names, stripped, empty items left out."""
    return tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))


def _os_user() -> str:
    """The OS user running this process ("unknown" when the system cannot say)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _flag(value: str | None, default: bool) -> bool:
    return default if value is None else value.lower() in {"1", "true", "yes"}
