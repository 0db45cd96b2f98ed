"""The audit log's Redis half: one stream under the engine's prefix, trimmed to the retention.

Each entry is one event's fields (:func:`engine.audit.entry_fields`); its id is given by Redis
(the time it was recorded). Every append trims entries older than the retention (``MINID``,
approximate: Redis drops whole nodes of the stream), so the log stays bounded.
"""

from __future__ import annotations

import time

import redis

from engine.store.codec import text
from engine.store.keys import Keys


class AuditLog:
    """The audit half of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys
    retention_seconds: int

    def append_audit(self, fields: dict[str, str]) -> str:
        """Append one event; returns its id. Entries older than the retention are trimmed."""
        oldest = int((time.time() - self.retention_seconds) * 1000)
        return text(self.client.xadd(self.keys.audit, fields, minid=max(oldest, 0), approximate=True))

    def audit_entries(self, newest: str, oldest: str, count: int) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` entries from ``newest`` down to ``oldest`` (XREVRANGE bounds), newest first."""
        found = self.client.xrevrange(self.keys.audit, newest, oldest, count=count)
        return [(text(entry_id), {text(k): text(v) for k, v in fields.items()}) for entry_id, fields in found]
