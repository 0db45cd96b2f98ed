"""Redis connections from the settings, in one place: the state client and Celery's broker.

Two kinds of ``TRADEFLOW_REDIS_URL``:

- one server: ``redis://[user:password@]host:6379/0``, ``rediss://...`` (TLS),
  ``unix:///path/redis.sock?db=0`` (a Unix socket: Redis on the workers' machine) -- redis-py's
  ``Redis.from_url`` takes these as they are, and kombu too but for the socket's, which the
  broker gets in kombu's spelling (:func:`kombu_url`);
- Redis Sentinel: ``sentinel://[user:password@]h1:26379,h2:26379,h3:26379/0`` (the sentinels,
  comma separated, then the database), or kombu's own form
  ``sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379`` (``/0`` on the first). The
  monitored master's name comes from ``TRADEFLOW_REDIS_SENTINEL_MASTER``; the user and
  password in the URL are the master's (and its replicas'), and
  ``TRADEFLOW_REDIS_SENTINEL_PASSWORD`` is the sentinels' own, if they require one. The state
  client is redis-py's ``Sentinel(...).master_for(master)``: it asks the sentinels for the
  current master on every new connection and reconnects after a failover by itself. The
  broker is kombu's ``sentinel://`` transport with ``master_name`` (and ``sentinel_kwargs``)
  in ``broker_transport_options``.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import redis
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.sentinel import Sentinel

from engine.command_packer import command_packer
from engine.errors import ConfigurationError
from engine.ops.embedded import resolve_redis_url
from engine.url_masking import masked_url

if TYPE_CHECKING:
    from engine.config import Settings

log = logging.getLogger(__name__)

#: Timeouts and health checks a long-running worker wants (state client and sentinels).
CLIENT_OPTIONS: dict[str, Any] = {"socket_timeout": 30, "socket_connect_timeout": 5, "health_check_interval": 30,
                                  "retry_on_timeout": True}
SENTINEL_OPTIONS: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelAddress:
    """A parsed ``sentinel://`` URL: the sentinels, the database and the master's credentials."""

    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None

    def kombu_url(self) -> str:
        """kombu's form: ``sentinel://[user:password@]h1:26379/0;sentinel://h2:26379/0;...``."""
        auth = ""
        if self.password is not None or self.username:
            auth = f"{self.username or ''}:{self.password or ''}@"
        return ";".join(f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.hosts)


def is_sentinel(url: str) -> bool:
    """True for a ``sentinel://`` URL (either form)."""
    return url.strip().lower().startswith("sentinel://")


def parse_sentinel_url(url: str) -> SentinelAddress:
    """Parse either sentinel URL form; ``ConfigurationError`` says what a good one looks like."""
    example = "sentinel://h1:26379,h2:26379,h3:26379/0"
    hosts: list[tuple[str, int]] = []
    db = 0
    username = password = None
    for number, part in enumerate(p for p in url.strip().split(";") if p):
        parsed = urlsplit(part)
        if parsed.scheme.lower() != "sentinel" or not parsed.netloc:
            raise ConfigurationError(f"TRADEFLOW_REDIS_URL {masked_url(url)!r} is not a sentinel URL; write {example}")
        userinfo, _, hostlist = parsed.netloc.rpartition("@")
        if number == 0:
            if userinfo:
                user, _, secret = userinfo.partition(":")
                username, password = unquote(user) or None, unquote(secret) if secret else None
            path = parsed.path.strip("/")
            if path:
                if not path.isdigit():
                    raise ConfigurationError(f"TRADEFLOW_REDIS_URL: database {path!r} is not a number; write {example}")
                db = int(path)
        for item in hostlist.split(","):
            host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
            host = host.strip("[]")
            if not host:
                raise ConfigurationError(f"TRADEFLOW_REDIS_URL: a sentinel without a host in {masked_url(url)!r}; "
                                         f"write {example}")
            try:
                hosts.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
            except ValueError:
                raise ConfigurationError(f"TRADEFLOW_REDIS_URL: port {port!r} is not a number; write {example}") \
                    from None
    if not hosts:
        raise ConfigurationError(f"TRADEFLOW_REDIS_URL names no sentinel; write {example}")
    return SentinelAddress(tuple(hosts), db, username, password)


def redis_client(url: str, *, sentinel_master: str | None = None, sentinel_password: str | None = None,
                 **options: Any) -> redis.Redis:
    """A client of the state Redis at ``url`` (one server or a Sentinel-monitored master).

    ``options`` override :data:`CLIENT_OPTIONS` (timeouts, health checks).
    """
    opts = {**CLIENT_OPTIONS, **options}
    if "command_packer" not in opts and (packer := command_packer(url, opts)) is not None:
        opts["command_packer"] = packer  # hiredis packs the commands' plain arguments itself
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **opts)
    if not sentinel_master:
        raise ConfigurationError(
            "TRADEFLOW_REDIS_URL is a sentinel:// URL but TRADEFLOW_REDIS_SENTINEL_MASTER is not set: set it to the "
            "name the sentinels monitor (`sentinel monitor <name> ...` in sentinel.conf)"
        )
    address = parse_sentinel_url(url)
    sentinel_kwargs = {**SENTINEL_OPTIONS, **({"password": sentinel_password} if sentinel_password else {})}
    sentinel = Sentinel(list(address.hosts), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(sentinel_master, db=address.db, username=address.username,
                               password=address.password, **opts)


#: Bumped in a child process after each fork: a connection pinned before it belongs to the parent.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)

#: The connection classes :class:`PinnedCalls` pins (redis-py's own sockets; not a fake or a sentinel's).
_PINNABLE = frozenset({Connection, SSLConnection, UnixDomainSocketConnection})


def _pinnable(client: Any) -> bool:
    """Whether :class:`PinnedCalls` may keep connections of ``client``'s pool (redis-py's own client and pool)."""
    pool = getattr(client, "connection_pool", None)
    kind = type(client)
    return (type(pool) is redis.ConnectionPool and pool.connection_class in _PINNABLE
            and getattr(client, "connection", None) is None and getattr(pool, "cache", None) is None
            and getattr(kind, "execute_command", None) is redis.Redis.execute_command
            and getattr(kind, "pipeline", None) is redis.Redis.pipeline)


class PinnedCalls:
    """Commands sent on a connection each thread keeps for them, instead of a checkout of the client's pool
    around each command.

    redis-py's ``execute_command`` and ``pipeline().execute()`` take a connection from the pool
    and give it back around every command: a lock, a fork check (a ``getpid``), a poll of the
    socket for unread data, and the pool's bookkeeping, about 10 us of a worker's CPU for a
    command and 16 for a pipeline. The store's script calls go through this instead: each
    thread keeps one connection of the client's pool settings (timeouts, health checks, retry
    policy) for them, made on first use, dropped in a child process after a fork (each
    process makes its own) and closed when its thread ends or :meth:`close` is called.

    Failures are handled as redis-py's own calls handle them: connection errors and timeouts
    are retried under the connection's retry policy, the connection reconnecting; a connection
    the server closed while it was idle (a restart, an idle timeout) is reconnected and the
    command sent again at once, as the pool's check of a connection it hands out does; any other
    failure while a reply is unread drops the connection, so no reply is ever read by the wrong
    command. A client whose pool is not redis-py's plain one (a sentinel's, a fake, a single
    connection client, a client-side cache, a client whose ``execute_command`` or ``pipeline`` is
    its own) is used as it is, and so is any client when ``pin`` is false.
    """

    def __init__(self, client: redis.Redis, pin: bool = True) -> None:
        self.client = client
        #: Whether commands go on this thread's kept connection (else through the client as it is).
        self.pinned = pin and _pinnable(client)
        self._local = threading.local()
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()  # every thread's, for close()
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        """This thread's connection (made on first use, and again in a child process after a fork)."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.forks != _forks:
            conn = self.client.connection_pool.make_connection()
            local.conn, local.forks = conn, _forks
            with self._lock:
                self._made.add(conn)
        return conn

    def _call(self, do: Callable[[Any], Any]) -> Any:
        """``do(connection)`` on this thread's connection, with redis-py's reconnects and retries."""
        conn = self._connection()
        try:
            kept = conn._sock is not None
            if not kept:
                conn.connect()  # as the pool connects a connection it hands out (connect's own retries)

            def attempt() -> Any:
                nonlocal kept
                if kept:  # the first send on a kept connection: if the server closed it, a new one at once
                    kept = False
                    try:
                        return do(conn)
                    except RedisConnectionError:
                        conn.disconnect()
                        conn.connect()
                return do(conn)

            return conn.retry.call_with_retry(attempt, lambda _error: conn.disconnect())
        except ResponseError:
            raise  # an error reply, read whole: the connection is in step
        except BaseException:
            conn.disconnect()  # a reply may be left unread
            raise

    def execute(self, *args: Any) -> Any:
        """``client.execute_command(*args)``: one command and its (parsed) reply."""
        if not self.pinned:
            return self.client.execute_command(*args)
        client, name = self.client, args[0]

        def do(conn: Any) -> Any:
            conn.send_command(*args)
            return client.parse_response(conn, name)

        return self._call(do)

    def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``commands`` in one round trip, as ``pipeline(transaction=False)`` sends them and
        ``execute(raise_on_error=False)`` answers: each reply parsed, an error reply as its exception."""
        if not self.pinned:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute(raise_on_error=False)
        client = self.client

        def do(conn: Any) -> list[Any]:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for command in commands:
                try:
                    replies.append(client.parse_response(conn, command[0]))
                except ResponseError as error:
                    replies.append(error)
            return replies

        return self._call(do)

    def close(self) -> None:
        """Close every thread's connection of this process (each reconnects if used again)."""
        with self._lock:
            made = list(self._made)
            self._made = weakref.WeakSet()
        for conn in made:
            conn.disconnect()


def kombu_url(url: str) -> str:
    """The broker URL kombu reads for the one Redis server at ``url``.

    A ``unix:///path/redis.sock?db=N`` URL (redis-py's form; kombu has no ``unix`` transport)
    becomes kombu's ``redis+socket:///path/redis.sock?virtual_host=N``, its user and password
    kept; any other URL is returned as it is.
    """
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    user, password = options.pop("username", None), options.pop("password", None)
    netloc = parts.netloc  # kombu reads the user and password there only (redis-py in the query too)
    if not netloc and (user or password):
        netloc = f"{quote(user or '', safe='')}:{quote(password or '', safe='')}@"
    if "db" in options:
        options["virtual_host"] = options.pop("db")
    query = urlencode(options)
    return f"redis+socket://{netloc}{parts.path}" + (f"?{query}" if query else "")


def broker_config(url: str, *, sentinel_master: str | None = None,
                  sentinel_password: str | None = None) -> tuple[str, dict[str, Any]]:
    """Celery's ``broker_url`` and the transport options it needs for ``url`` (added to the others)."""
    if not is_sentinel(url):
        return kombu_url(url), {}
    if not sentinel_master:
        raise ConfigurationError(
            "the broker is a sentinel:// URL but TRADEFLOW_REDIS_SENTINEL_MASTER is not set: set it to the name "
            "the sentinels monitor"
        )
    options: dict[str, Any] = {"master_name": sentinel_master}
    if sentinel_password:
        options["sentinel_kwargs"] = {"password": sentinel_password}
    return parse_sentinel_url(url).kombu_url(), options


def answers(url: str, *, sentinel_master: str | None = None, sentinel_password: str | None = None,
            timeout: float = 2.0) -> bool:
    """True when the Redis at ``url`` (for Sentinel: the current master) answers PING."""
    try:
        client = redis_client(url, sentinel_master=sentinel_master, sentinel_password=sentinel_password,
                              socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class ReplicaWait:
    """``WAIT replicas timeout_ms`` after the writes that matter: they reach a replica before we go on.

    Replication is asynchronous: a write the master acknowledged can be lost when a replica
    is promoted before it arrived. Waiting bounds that for the writes that end something (a
    terminal transition, a submission's record). When fewer replicas acknowledge within the
    timeout, tradeflow goes on (availability first) and logs a warning.
    """

    replicas: int
    timeout_ms: int = 100

    def __call__(self, client: redis.Redis) -> int:
        """Wait; the number of replicas that acknowledged every write of this connection so far."""
        acked = int(client.wait(self.replicas, self.timeout_ms))
        if acked < self.replicas:
            log.warning("WAIT: %d of %d replica(s) acknowledged within %d ms; going on", acked, self.replicas,
                        self.timeout_ms)
        return acked


def replica_wait(settings: Settings) -> ReplicaWait | None:
    """The ``WAIT`` the settings ask for (``TRADEFLOW_REDIS_WAIT_REPLICAS``), or None."""
    if settings.redis_wait_replicas <= 0:
        return None
    return ReplicaWait(settings.redis_wait_replicas, settings.redis_wait_ms)


def state_url(settings: Settings, *, allow_start: bool = False, check: bool = True,
              notice: Callable[[str], None] | None = None) -> str:
    """The state Redis URL: a ``sentinel://`` one as configured, else the configured or embedded one.

    A Sentinel URL is taken as it is (the sentinels name the master; redis-py and kombu
    reconnect through them); any other goes through :func:`engine.ops.embedded.resolve_redis_url`
    (``check``, ``notice``: see there), which never replaces a configured Redis by another.
    """
    return resolve_redis_url(settings, allow_start=allow_start, check=check, notice=notice)


def client_for(settings: Settings, url: str | None = None, **options: Any) -> redis.Redis:
    """A state client for ``url`` (default: the settings' Redis URL) with the settings' Sentinel options."""
    return redis_client(url or settings.redis_url, sentinel_master=settings.redis_sentinel_master,
                        sentinel_password=settings.redis_sentinel_password, **options)


def broker_for(settings: Settings, url: str | None = None) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and extra transport options (default: the broker, else the state Redis)."""
    return broker_config(url or settings.effective_broker_url, sentinel_master=settings.redis_sentinel_master,
                         sentinel_password=settings.redis_sentinel_password)


__all__ = [
    "PinnedCalls",
    "ReplicaWait",
    "SentinelAddress",
    "answers",
    "broker_config",
    "broker_for",
    "client_for",
    "is_sentinel",
    "kombu_url",
    "masked_url",
    "parse_sentinel_url",
    "redis_client",
    "replica_wait",
    "state_url",
]
