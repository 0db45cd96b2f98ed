"""Celery configuration for tradeflow, as ``celery -A engine.worker`` loads it.

The settings are read once from the environment (:class:`engine.config.Settings`) and turned
into Celery's configuration and beat schedule by :func:`engine.celery_config.celery_config`;
see docs/configuration.md for the variables and docs/workers.md for the worker fleets.
"""

from __future__ import annotations

from engine.celery_config import celery_config
from engine.config import Settings
from engine.connections import state_url

_settings = Settings.from_env()
#: TRADEFLOW_REDIS_URL when set, never another (not asked here: Celery retries its broker), else
#: the local default or the embedded one; a sentinel:// URL as it is (engine.connections.state_url).
globals().update(celery_config(_settings, state_url(_settings, check=False)))
