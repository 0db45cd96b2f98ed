"""A Celery worker for the contract tests: the engine's Celery settings, one task that records its arguments.

``celery -A tests.contract.worker_app worker -Q <queue>`` with CONTRACT_REDIS_URL and
CONTRACT_BROKER_PREFIX in the environment; each ``contract.record`` it runs appends its
arguments (JSON) to the list ``<broker prefix>recorded``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis

from engine.app import sender_app
from engine.broker import install_worker_patches

install_worker_patches()
REDIS_URL = os.environ.get("CONTRACT_REDIS_URL", "redis://127.0.0.1:6379/14")
PREFIX = os.environ.get("CONTRACT_BROKER_PREFIX", "contract:")
app = sender_app(REDIS_URL, PREFIX, "contract-worker")
client = redis.Redis.from_url(REDIS_URL)


@app.task(name="contract.record")
def record(*args: Any) -> None:
    """Append the task's arguments to the recorded list."""
    client.rpush(f"{PREFIX}recorded", json.dumps(list(args)))
