"""The portfolio manager's settings, read from the environment at the edge, then passed in.

| variable | default | meaning |
|---|---|---|
| ``TRADEFLOW_PM_REDIS_URL`` | ``TRADEFLOW_REDIS_URL`` | Redis of the book, the proposals and the simulated brokerage |
| ``TRADEFLOW_REDIS_SENTINEL_MASTER``, ``..._PASSWORD`` | — | with a ``sentinel://`` URL (as the engine's) |
| ``TRADEFLOW_REDIS_WAIT_REPLICAS``, ``..._WAIT_MS`` | ``0``, ``100`` | ``WAIT`` for replicas after a submission |
| ``TRADEFLOW_PM_PREFIX`` | ``pm:`` | prefix of every portfolio-manager key (never the engine's) |
| ``TRADEFLOW_PM_BOOK_URL`` | unset | a custodian's REST API (``HttpBook``) instead of the Redis book |
| ``TRADEFLOW_RETENTION_DAYS`` | ``14`` | days proposals and simulated brokerage records are kept |
| ``TRADEFLOW_PM_BROKER_LATENCY`` | ``0`` | seconds the simulated brokerage takes per order |
| ``TRADEFLOW_DEFINITIONS_DIR`` | ``definitions/`` of the checkout | where the workflow JSON files are |
| ``TRADEFLOW_MORNING_RUN`` | ``1`` | ``0``: no beat entries for the morning rebalance |
| ``TRADEFLOW_MORNING_AT`` | ``09:00`` | exchange-local time at which beat starts the morning run |

Nothing here touches Redis: :mod:`portfolio_manager.actions` builds the clients from these.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from portfolio_manager.errors import SettingsError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "pm:"
DEFAULT_DEFINITIONS_DIR = Path(__file__).resolve().parents[1] / "definitions"
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


@dataclass(frozen=True)
class PMSettings:
    """Where the portfolio manager keeps its data and how it behaves."""

    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = DEFAULT_PREFIX
    book_url: str | None = None
    broker_latency: float = 0.0
    definitions_dir: Path = field(default=DEFAULT_DEFINITIONS_DIR)
    morning_run: bool = True
    morning_at: str = "09:00"
    redis_sentinel_master: str | None = None
    redis_sentinel_password: str | None = field(default=None, repr=False)
    redis_wait_replicas: int = 0
    redis_wait_ms: int = 100
    #: Days a proposal (from its recording) and a brokerage record are kept: the engine's retention.
    retention_days: float = 14.0

    @property
    def retention_seconds(self) -> int:
        """:attr:`retention_days` in seconds (at least one)."""
        return max(1, int(self.retention_days * 86400))

    @property
    def book_prefix(self) -> str:
        """Prefix of the Redis book (``RedisBook``)."""
        return self.prefix

    @property
    def proposals_prefix(self) -> str:
        """Prefix of the proposal store."""
        return f"{self.prefix}prop:"

    @property
    def broker_prefix(self) -> str:
        """Prefix of the simulated brokerage."""
        return f"{self.prefix}broker:"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, redis_url: str | None = None) -> PMSettings:
        """Read the variables of the module docstring; ``SettingsError`` names a bad one.

        ``redis_url``: the engine's Redis as resolved by the caller (an embedded one, say),
        used when ``TRADEFLOW_PM_REDIS_URL`` is unset.
        """
        env = os.environ if env is None else env
        prefix = env.get("TRADEFLOW_PM_PREFIX", DEFAULT_PREFIX)
        if not prefix or " " in prefix:
            raise SettingsError(f"TRADEFLOW_PM_PREFIX={prefix!r}: use a non-empty prefix without spaces, e.g. 'pm:'")
        try:
            latency = float(env.get("TRADEFLOW_PM_BROKER_LATENCY", "0"))
        except ValueError:
            raise SettingsError("TRADEFLOW_PM_BROKER_LATENCY must be a number of seconds, e.g. 0.05") from None
        if not 0 <= latency <= 60:
            raise SettingsError(f"TRADEFLOW_PM_BROKER_LATENCY={latency}: use 0 to 60 seconds")
        try:
            wait_replicas = int(env.get("TRADEFLOW_REDIS_WAIT_REPLICAS", "0"))
            wait_ms = int(env.get("TRADEFLOW_REDIS_WAIT_MS", "100"))
        except ValueError:
            raise SettingsError("TRADEFLOW_REDIS_WAIT_REPLICAS and TRADEFLOW_REDIS_WAIT_MS must be whole numbers, "
                                "e.g. 1 and 100") from None
        try:
            retention_days = float(env.get("TRADEFLOW_RETENTION_DAYS", "14"))
        except ValueError:
            raise SettingsError("TRADEFLOW_RETENTION_DAYS must be a number of days, e.g. 14") from None
        if not retention_days > 0:
            raise SettingsError(f"TRADEFLOW_RETENTION_DAYS={retention_days}: use a positive number of days")
        at = env.get("TRADEFLOW_MORNING_AT", "09:00")
        if not _TIME.match(at):
            raise SettingsError(f"TRADEFLOW_MORNING_AT={at!r}: use HH:MM, exchange-local (e.g. 09:00)")
        return cls(
            redis_url=env.get("TRADEFLOW_PM_REDIS_URL") or redis_url or env.get("TRADEFLOW_REDIS_URL")
            or DEFAULT_REDIS_URL,
            prefix=prefix,
            book_url=env.get("TRADEFLOW_PM_BOOK_URL") or None,
            broker_latency=latency,
            definitions_dir=Path(env.get("TRADEFLOW_DEFINITIONS_DIR") or DEFAULT_DEFINITIONS_DIR),
            morning_run=env.get("TRADEFLOW_MORNING_RUN", "1").lower() not in {"0", "false", "no"},
            morning_at=at,
            redis_sentinel_master=env.get("TRADEFLOW_REDIS_SENTINEL_MASTER") or None,
            redis_sentinel_password=env.get("TRADEFLOW_REDIS_SENTINEL_PASSWORD") or None,
            redis_wait_replicas=wait_replicas,
            redis_wait_ms=wait_ms,
            retention_days=retention_days,
        )


__all__ = ["PMSettings", "SettingsError", "DEFAULT_PREFIX"]
