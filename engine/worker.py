"""The app module workers and beat start from: ``celery -A engine.worker worker -Q <service>``."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from engine.app import create_app, redis_client
from engine.health import log_redis_warnings

app = create_app()


@worker_ready.connect
def check_redis(**_: Any) -> None:
    """Warn (WARNING log) when the Redis has no persistence or may evict keys."""
    url = app.conf.tradeflow_redis_url
    client = redis_client(url)
    try:
        log_redis_warnings(client, url.split("@")[-1])  # never log a password
    finally:
        client.close()
