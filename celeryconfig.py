"""Celery configuration as a module, for Celery tools that load one by name (``--config celeryconfig``).

Nothing in tradeflow imports it: a worker (``celery -A engine.worker``) reads its settings once
at its bootstrap and builds its app from them (:func:`engine.app.create_app`); a sending app is
built by :func:`engine.app.sender_app`. A tool that loads this module reads the settings from
the environment once, here, at its edge (:class:`engine.config.Settings`), and they are turned
into Celery's configuration by :func:`engine.celery_config.celery_config`; see
docs/configuration.md for the variables and docs/workers.md for the worker fleets.
"""

from __future__ import annotations

from engine.celery_config import celery_config
from engine.config import Settings
from engine.connections import state_url

_settings = Settings.from_env()
#: TRADEFLOW_REDIS_URL when set, never another (not asked here: Celery retries its broker), else
#: the local default or the embedded one; a sentinel:// URL as it is (engine.connections.state_url).
globals().update(celery_config(_settings, state_url(_settings, check=False)))
