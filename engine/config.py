"""Settings read from the environment at the edge, then passed in.

| variable | default | meaning |
|---|---|---|
| ``TRADEFLOW_REDIS_URL`` | ``redis://127.0.0.1:6379/0`` | state store (``rediss://`` for TLS) |
| ``TRADEFLOW_BROKER_URL`` | the Redis URL | Celery broker |
| ``TRADEFLOW_EMBEDDED_REDIS`` | ``0`` | ``1``: always use the embedded redis-server |
| ``TRADEFLOW_HOME`` | ``~/.tradeflow`` | where the embedded Redis keeps its data and address |
| ``TRADEFLOW_KEY_PREFIX`` | ``wf`` | prefix of every engine key |
| ``TRADEFLOW_RETENTION_DAYS`` | ``14`` | TTL of finished instances and their activities |
| ``TRADEFLOW_TIMER_INTERVAL`` | ``1`` | seconds between timer ticks (waits, retry backoffs) |
| ``TRADEFLOW_SWEEP_INTERVAL`` | ``5`` | seconds between sweeps for steps that made no progress |
| ``TRADEFLOW_RECONCILE_SECONDS`` | ``60`` | how often, and after how long, queued steps are looked for in the broker |
| ``TRADEFLOW_INLINE_STEPS`` | ``16`` | same-service steps run right after a delivered one (``0``: a message each) |
| ``TRADEFLOW_CLOCK_OFFSET_FILE`` | — | rehearsals and tests only: a file holding seconds added to the wall clock |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.errors import ConfigurationError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    """Everything the engine needs to know about its environment."""

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str | None = None
    embedded: bool = False
    home: Path = field(default_factory=lambda: Path("~/.tradeflow").expanduser())
    key_prefix: str = "wf"
    retention_days: float = 14.0
    timer_interval: float = 1.0
    sweep_interval: float = 5.0
    inline_steps: int = 16
    reconcile_seconds: float = 60.0
    clock_offset_file: Path | None = None

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
        return replace(self, redis_url=url, broker_url=self.broker_url if self.broker_url else None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the ``TRADEFLOW_*`` variables (see the module docstring)."""
        env = os.environ if env is None else env
        try:
            return cls(
                redis_url=env.get("TRADEFLOW_REDIS_URL", DEFAULT_REDIS_URL),
                broker_url=env.get("TRADEFLOW_BROKER_URL") or None,
                embedded=env.get("TRADEFLOW_EMBEDDED_REDIS", "0").lower() in {"1", "true", "yes"},
                home=Path(env.get("TRADEFLOW_HOME", "~/.tradeflow")).expanduser(),
                key_prefix=env.get("TRADEFLOW_KEY_PREFIX", "wf"),
                retention_days=float(env.get("TRADEFLOW_RETENTION_DAYS", "14")),
                timer_interval=float(env.get("TRADEFLOW_TIMER_INTERVAL", "1")),
                sweep_interval=float(env.get("TRADEFLOW_SWEEP_INTERVAL", "5")),
                inline_steps=int(env.get("TRADEFLOW_INLINE_STEPS", "16")),
                reconcile_seconds=float(env.get("TRADEFLOW_RECONCILE_SECONDS", "60")),
                clock_offset_file=Path(env["TRADEFLOW_CLOCK_OFFSET_FILE"]) if env.get("TRADEFLOW_CLOCK_OFFSET_FILE")
                else None,
            )
        except ValueError as exc:
            raise ConfigurationError(f"bad TRADEFLOW_* setting: {exc}") from exc
