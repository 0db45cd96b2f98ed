"""Definitions in Redis: immutable numbered versions, content fingerprints and aliases."""

from __future__ import annotations

from typing import Any

import redis

from engine.definitions.nodes import Definition
from engine.errors import NotFound, TradeflowError
from engine.keyspace import read_lua
from engine.store.codec import dumps, text
from engine.store.keys import Keys


def publish_script(client: redis.Redis) -> Any:
    """``lua/publish.lua`` registered on ``client``."""
    return client.register_script(read_lua(__file__, "publish.lua"))


class Definitions:
    """The definition half of :class:`engine.store.redis_store.RedisStore`."""

    client: redis.Redis
    keys: Keys
    _publish: Any
    _definitions: dict[tuple[str, int], Definition]

    def publish(self, definition: Definition) -> tuple[int, bool]:
        """Store ``definition`` as a new immutable version; (version, True if new).

        Publishing content identical to an existing version returns that version. A file that
        pins ``version`` gets exactly that number or a conflict error.
        """
        name, k = definition.name, self.keys
        body = definition.model_dump(mode="json", exclude_none=True)
        body["version"] = "__VERSION__"
        pinned = "" if definition.version is None else str(definition.version)
        reply = self._publish(
            keys=[k.definition_versions(name), k.definition_fingerprints(name), k.definition_names, k.aliases(name)],
            args=[name, pinned, definition.fingerprint(), dumps(body)],
        )
        first, second = (text(x) for x in reply)
        if first == "conflict":
            raise TradeflowError(
                f"{name} version {second} already exists with other content; "
                "drop 'version' from the file to publish it as the next version"
            )
        return int(first), second == "new"

    def definition(self, name: str, version: int) -> Definition:
        """The definition ``name`` at ``version`` (cached: versions are immutable)."""
        cached = self._definitions.get((name, version))
        if cached is not None:
            return cached
        raw = self.client.hget(self.keys.definition_versions(name), str(version))
        if raw is None:
            raise NotFound(f"no definition {name} version {version}; see `tradeflow definitions list`")
        definition = Definition.model_validate_json(raw)
        self._definitions[(name, version)] = definition
        return definition

    def resolve_version(self, name: str, ref: int | str | None = None) -> int:
        """The version number that ``ref`` (a number, an alias, or None for latest) names."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            version = int(ref)
            if not self.client.hexists(self.keys.definition_versions(name), str(version)):
                raise NotFound(f"no definition {name} version {version}")
            return version
        alias = ref or "latest"
        found = self.client.hget(self.keys.aliases(name), alias)
        if found is None:
            if not self.client.sismember(self.keys.definition_names, name):
                raise NotFound(f"no definition named {name!r}; publish it with `tradeflow definitions publish`")
            raise NotFound(f"{name} has no alias {alias!r}; set it with `tradeflow definitions alias`")
        return int(found)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` of ``name`` at ``version``."""
        if alias == "latest":
            raise TradeflowError("'latest' is kept by publish and cannot be set")
        self.resolve_version(name, version)
        self.client.hset(self.keys.aliases(name), alias, str(version))

    def aliases(self, name: str) -> dict[str, int]:
        """Every alias of ``name`` with the version it points at."""
        return {text(a): int(v) for a, v in self.client.hgetall(self.keys.aliases(name)).items()}

    def definition_names(self) -> list[str]:
        """Names of every published definition, sorted."""
        return sorted(text(n) for n in self.client.smembers(self.keys.definition_names))

    def versions(self, name: str) -> list[int]:
        """Every published version of ``name``, ascending."""
        return sorted(int(v) for v in self.client.hkeys(self.keys.definition_versions(name)))
