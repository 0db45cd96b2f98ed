"""The app module workers and beat start from: ``celery -A engine.worker worker -Q <service>``.

At start a worker remembers the Redis data set it runs on (the epoch key) before any pool
process exists, so that every runtime it creates later, even after Redis lost its data,
compares with the data set the worker started on (``DataSetLost``); and it warns when that
Redis has no persistence or may evict keys (``engine.ops.health``).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.signals import beat_init, worker_init, worker_ready

from engine.app import create_app, make_store, redis_client
from engine.config import Settings
from engine.connections import masked_url
from engine.ops.health import log_redis_warnings

log = logging.getLogger(__name__)

app = create_app()


@worker_init.connect
def remember_epoch(**_: Any) -> None:
    """Read (or create) the data set's epoch now: pool processes forked later inherit it."""
    try:
        store = make_store(Settings.from_env(), app.conf.tradeflow_redis_url)
        app.conf.tradeflow_epoch = store.ensure_epoch()
        store.close()
    except redis.RedisError as exc:
        log.warning("could not read the Redis epoch at start (%s); each process reads it on its first task", exc)


@worker_ready.connect
def check_redis(**_: Any) -> None:
    """Warn (WARNING log) when the Redis has no persistence or may evict keys."""
    url = app.conf.tradeflow_redis_url
    client = redis_client(url, Settings.from_env())
    try:
        log_redis_warnings(client, masked_url(url))  # never log a password
    finally:
        client.close()


@beat_init.connect
def quiet_beat(**_: Any) -> None:
    """Beat publishes with the app's ``task_send_sent_event``: off here, so the tick and sweep it
    sends every second or so do not each add a ``task-sent`` entry to Flower's task list."""
    app.conf.task_send_sent_event = False
