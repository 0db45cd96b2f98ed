"""Reading chosen fields of many instances at once (run diffs, reports): pipelined, no per-instance round trip."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from engine.store.codec import JSON_FIELDS, text, unpack
from engine.store.keys import Keys


class Fields:
    """The field-reading part of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys

    def instance_fields(self, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, str] | None]:
        """For each of ``ids``: its ``fields`` that are set (JSON documents unpacked), or None when the
        instance does not exist. One pipelined round trip of HMGETs (``id`` is always read too)."""
        names = ["id", *fields]
        pipe = self.client.pipeline(transaction=False)
        for iid in ids:
            pipe.hmget(self.keys.instance(iid), names)
        out: list[dict[str, str] | None] = []
        for values in pipe.execute():
            if values[0] is None:
                out.append(None)
                continue
            found: dict[str, str] = {}
            for name, value in zip(names[1:], values[1:], strict=True):
                if value is not None:
                    found[name] = unpack(value) if name in JSON_FIELDS or name.startswith("c:") else text(value)
            out.append(found)
        return out

    def instance_contexts(self, ids: Sequence[str]) -> list[dict[str, str] | None]:
        """For each of ``ids``: its whole hash with documents unpacked (None: no such instance); pipelined."""
        pipe = self.client.pipeline(transaction=False)
        for iid in ids:
            pipe.hgetall(self.keys.instance(iid))
        out: list[dict[str, str] | None] = []
        for raw in pipe.execute():
            if not raw:
                out.append(None)
                continue
            out.append({text(k): (unpack(v) if text(k) in JSON_FIELDS or text(k).startswith("c:") else text(v))
                        for k, v in raw.items()})
        return out
