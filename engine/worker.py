"""The app module workers and beat start from: ``celery -A engine.worker worker -Q <service>``.

At start a worker remembers the Redis data set it runs on (the epoch key) before any pool
process exists, so that every runtime it creates later, even after Redis lost its data,
compares with the data set the worker started on (``DataSetLost``); and it warns when that
Redis has no persistence or may evict keys (``engine.ops.health``). Before anything connects, it
installs the broker's kombu patches: the work-around that lets a worker survive a Redis restart, and
the record of which consumer holds each delivery (``engine.broker.install_worker_patches``).

The settings are read from the environment once, here (:data:`SETTINGS`), and the app is built
from them; nothing the worker runs reads the environment again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from pathlib import Path
from typing import Any

import redis
from celery.signals import beat_init, worker_init, worker_process_init, worker_ready

from engine import plugins
from engine.app import create_app, make_store, redis_client
from engine.broker import install_worker_patches, kombu_riders
from engine.config import Settings
from engine.connections import masked_url
from engine.errors import DataSetLost
from engine.ops.health import log_redis_warnings

log = logging.getLogger(__name__)

install_worker_patches()
#: The worker's settings, read from the environment once, here at its bootstrap, and passed in.
SETTINGS = Settings.from_env()
app = create_app(SETTINGS)
for _hook in plugins.hooks("worker"):  # what a plugin's actions use is built from the same settings
    _hook(SETTINGS)
# Beat keeps its schedule under TRADEFLOW_HOME (``beat_schedule_filename``) and opens it before
# any signal a handler could use; a home that cannot be made is reported by beat itself.
with contextlib.suppress(OSError):
    Path(app.conf.beat_schedule_filename).parent.mkdir(parents=True, exist_ok=True)


#: Exit status of a worker that refuses the data set it found (``TRADEFLOW_EXPECT_EPOCH``).
EXIT_OTHER_DATA_SET = 78


@worker_init.connect
def remember_epoch(**_: Any) -> None:
    """Read (or create) the data set's epoch now: pool processes forked later inherit it.

    A node of ``tradeflow workers`` is told the epoch its fleet started on
    (``TRADEFLOW_EXPECT_EPOCH``): restarted on a Redis holding another data set (an embedded
    Redis started meanwhile, a Redis restarted empty), it refuses to start (CRITICAL, exit 78).
    """
    settings = SETTINGS
    try:
        store = make_store(settings, app.conf.tradeflow_redis_url)
        try:
            if settings.expected_epoch:
                store.check_epoch(settings.expected_epoch)
            app.conf.tradeflow_epoch = store.ensure_epoch()
        finally:
            store.close()
    except DataSetLost as exc:
        log.critical("refusing to start on %s (its fleet started on another data set; restart the whole fleet "
                     "to accept this one): %s", masked_url(app.conf.tradeflow_redis_url), exc)
        raise SystemExit(EXIT_OTHER_DATA_SET) from exc
    except redis.RedisError as exc:
        log.warning("could not read the Redis epoch at start (%s); each process reads it on its first task", exc)


@worker_init.connect
def ride_deliveries(sender: Any = None, **_: Any) -> None:
    """A ``solo`` worker (its tasks run in the thread that consumes their messages, as they arrive):
    a delivered step's start is its delivery's bookkeeping, in place of kombu's, and its ack kombu's
    in-memory one (:mod:`engine.broker.kombu_riders`), unless ``TRADEFLOW_BROKER_RIDERS=0``. Prefork and threads
    workers keep kombu's own round trips, and so does a worker reserving messages ahead
    (``TRADEFLOW_PREFETCH`` above 1): a step reserved behind another is not started before it runs."""
    if SETTINGS.broker_riders and SETTINGS.prefetch == 1 and kombu_riders.rides_in(getattr(sender, "pool_cls", None)):
        kombu_riders.enable(app.tradeflow_delivery_starts)


@worker_ready.connect
def check_redis(**_: Any) -> None:
    """Warn (WARNING log) when the Redis has no persistence or may evict keys."""
    url = app.conf.tradeflow_redis_url
    client = redis_client(url, SETTINGS)
    try:
        log_redis_warnings(client, masked_url(url))  # never log a password
    finally:
        client.close()


@worker_ready.connect
@worker_process_init.connect
def freeze_start_up_objects(**_: Any) -> None:
    """Move what the start-up made (modules, the app, pydantic's validators, the definitions read)
    out of the garbage collector's sight (``gc.freeze``): a full collection during a morning walks
    the objects made since, not the whole process again (about 90 ms each in a combined worker).

    In the process that runs the tasks: the worker's own once it is ready (``solo``, ``threads``;
    for ``prefork`` that is the parent, which only hands tasks out) and each ``prefork`` pool
    process once forked. What is garbage now is collected first.
    """
    gc.collect()
    gc.freeze()


@beat_init.connect
def quiet_beat(**_: Any) -> None:
    """Beat publishes with the app's ``task_send_sent_event``: off here, so the tick and sweep it
    sends every second or so do not each add a ``task-sent`` entry to Flower's task list."""
    app.conf.task_send_sent_event = False
