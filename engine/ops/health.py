"""Start-up checks of the Redis a worker runs on: persistence and eviction policy.

Tradeflow's state lives only in Redis. Without persistence a restart loses every instance in
flight; with an eviction policy other than ``noeviction`` Redis may delete instances under
memory pressure. Workers log each finding as a WARNING that says what to do
(:func:`log_redis_warnings`, called when a worker is ready). Managed Redis services often
forbid ``CONFIG GET``; then the check says it could not look.
"""

from __future__ import annotations

import logging

import redis

from engine.keyspace import text

log = logging.getLogger(__name__)

NO_PERSISTENCE = (
    "Redis has no persistence (appendonly no, no RDB save): a Redis restart loses every workflow instance. "
    "Set `appendonly yes` (with `appendfsync always`, or `everysec` to risk the last second) in redis.conf "
    "or run `CONFIG SET appendonly yes` and `CONFIG REWRITE`."
)
RDB_ONLY = (
    "Redis persists only RDB snapshots (appendonly no, save {save!r}): a crash loses every transition since "
    "the last snapshot. Set `appendonly yes` in redis.conf or run `CONFIG SET appendonly yes` and "
    "`CONFIG REWRITE`."
)
EVICTION = (
    "Redis maxmemory-policy is {policy!r}: under memory pressure it may delete workflow instances. "
    "Set `maxmemory-policy noeviction` in redis.conf or run `CONFIG SET maxmemory-policy noeviction`."
)
UNCHECKED = (
    "could not check Redis persistence and eviction policy ({reason}); make sure it runs with "
    "`appendonly yes` and `maxmemory-policy noeviction` (managed Redis: check its settings)."
)


def redis_warnings(client: redis.Redis) -> list[str]:
    """What is unsafe about this Redis for tradeflow (empty when nothing is)."""
    try:
        config = {**client.config_get("appendonly"), **client.config_get("save"),
                  **client.config_get("maxmemory-policy")}
    except redis.ResponseError as exc:  # NOPERM (ACL) or CONFIG renamed/disabled (managed Redis)
        return [UNCHECKED.format(reason=f"CONFIG GET refused: {exc}")]
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return [UNCHECKED.format(reason=f"Redis unreachable: {exc}")]
    config = {text(k): text(v) for k, v in config.items()}
    found = []
    if config.get("appendonly") != "yes":
        save = config.get("save", "").strip()
        found.append(RDB_ONLY.format(save=save) if save else NO_PERSISTENCE)
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        found.append(EVICTION.format(policy=policy))
    return found


def log_redis_warnings(client: redis.Redis, where: str) -> list[str]:
    """Log every finding of :func:`redis_warnings` as a WARNING naming ``where``; returns them."""
    found = redis_warnings(client)
    for message in found:
        log.warning("Redis at %s: %s", where, message)
    return found


