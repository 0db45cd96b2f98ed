"""Run diffs: pair the instances of two runs by a key of their input, compare a part of each.

``Engine.diff_runs(a, b, key="data.account_id", path="result")`` (and ``tradeflow runs diff A B``)
reads both runs in pipelined batches (one round trip per ``batch`` instances, only the hash
fields the key and the path need), pairs the instances by the value at ``key``, and says for
each key: ``equal``, ``changed`` (with every differing field, as a dotted path: nested objects
are compared member by member, lists and scalars as a whole), ``only_a`` or ``only_b``.

Paths: a root, then dotted members. Roots: ``data`` (the initial data), ``context`` (the whole
context; ``context.<node>`` one node's entry), ``result``, ``error``, ``status``, ``node``,
``shadow``, ``workflow``, ``version``. A member that is absent reads as ``None``.

Pure apart from :func:`read_run`: the comparison works on plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidInput
from engine.jsoncodec import loads

if TYPE_CHECKING:
    from engine.store.redis_store import RedisStore

#: The kinds of change of one key, in the order a report lists them.
CHANGES = ("changed", "only_a", "only_b", "equal")
#: Plain hash fields a path may start with (no JSON inside).
_PLAIN = frozenset({"status", "node", "workflow", "version", "run", "shadow"})
_DOCUMENTS = frozenset({"data", "result", "error"})
#: How many instances one pipelined read covers.
READ_BATCH = 1000


@dataclass(frozen=True)
class InstancePath:
    """A dotted path into an instance: the hash field it reads (None: the whole context) and the members after it."""

    source: str
    hash_field: str | None
    members: tuple[str, ...]

    @classmethod
    def parse(cls, source: str) -> InstancePath:
        """``data.account_id``, ``context.calculate.orders``, ``result``...; InvalidInput names the roots."""
        parts = source.split(".")
        if not source or any(not p for p in parts):
            raise InvalidInput(f"path {source!r}: give a root and dotted members, e.g. data.account_id")
        root, rest = parts[0], tuple(parts[1:])
        if root == "context":
            if not rest:
                return cls(source, None, ())
            return cls(source, f"c:{rest[0]}", rest[1:])
        if root in _DOCUMENTS:
            return cls(source, root, rest)
        if root in _PLAIN and not rest:
            return cls(source, root, ())
        roots = ", ".join(sorted({"context", *_DOCUMENTS, *_PLAIN}))
        raise InvalidInput(f"path {source!r}: unknown root {root!r} (roots: {roots})")

    def read(self, fields: dict[str, str]) -> Any:
        """The value this path names in an instance's fields (as :func:`read_run` reads them)."""
        if self.hash_field is None:
            value: Any = {name[2:]: loads(raw) for name, raw in fields.items() if name.startswith("c:")}
        else:
            raw = fields.get(self.hash_field)
            if raw is None:
                return None
            if self.hash_field == "version":
                value = int(raw)
            elif self.hash_field == "shadow":
                value = raw == "1"
            elif self.hash_field in _PLAIN:
                value = raw
            else:
                value = loads(raw)
        for member in self.members:
            if not isinstance(value, dict):
                return None
            value = value.get(member)
        return value


def read_run(store: RedisStore, run: str, paths: Sequence[InstancePath],
             batch: int = READ_BATCH) -> Iterator[tuple[str, list[Any]]]:
    """(instance id, the value of each of ``paths``) for every instance of ``run``, read ``batch`` at a time."""
    ids = store.run_ids(run)
    whole = any(p.hash_field is None for p in paths)
    fields = sorted({p.hash_field for p in paths if p.hash_field is not None})
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        found = store.instance_contexts(chunk) if whole else store.instance_fields(chunk, fields)
        for iid, values in zip(chunk, found, strict=True):
            if values is not None:
                yield iid, [p.read(values) for p in paths]


@dataclass(frozen=True)
class FieldChange:
    """One differing field: its dotted path under the compared part ('' for the part itself), and both values."""

    field: str
    a: Any
    b: Any

    def to_dict(self) -> dict[str, Any]:
        """``{"field", "a", "b"}``."""
        return {"field": self.field, "a": self.a, "b": self.b}


def changed_fields(a: Any, b: Any, prefix: str = "") -> list[FieldChange]:
    """Every field where ``a`` and ``b`` differ: objects member by member, anything else as a whole."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[FieldChange] = []
        for name in sorted(set(a) | set(b), key=str):
            out.extend(changed_fields(a.get(name), b.get(name), f"{prefix}.{name}" if prefix else str(name)))
        return out
    if (a == b and type(a) is type(b)) or (_number(a) and _number(b) and a == b):
        return []
    return [FieldChange(prefix, a, b)]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class PairDiff:
    """One key of a run diff: how it changed, which instances carry it, and the differing fields."""

    key: str
    change: str
    a_instance: str | None = None
    b_instance: str | None = None
    fields: list[FieldChange] = field(default_factory=list)


@dataclass(frozen=True)
class RunDiff:
    """Two runs compared instance by instance (:meth:`engine.api.Engine.diff_runs`)."""

    a: str
    b: str
    key: str
    path: str
    items: list[PairDiff]

    @property
    def key_name(self) -> str:
        """What a key is called in the JSON form: the key path's last member (``account_id``)."""
        return self.key.rsplit(".", 1)[-1]

    @property
    def summary(self) -> dict[str, int]:
        """How many keys, and how many of each change."""
        counts = dict.fromkeys(("equal", "changed", "only_a", "only_b"), 0)
        for item in self.items:
            counts[item.change] += 1
        return {"keys": len(self.items), **counts}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"a", "b", "key", "path", "summary", "items": [{<key name>, "change", ...}]}``."""
        name = self.key_name
        items = []
        for item in self.items:
            entry: dict[str, Any] = {name: item.key, "change": item.change,
                                     "a_instance": item.a_instance, "b_instance": item.b_instance}
            if item.fields:
                entry["fields"] = [f.to_dict() for f in item.fields]
            items.append(entry)
        return {"a": self.a, "b": self.b, "key": self.key, "path": self.path, "summary": self.summary,
                "items": items}


def compare(a: str, b: str, key: str, path: str, left: Iterable[tuple[str, Any, Any]],
            right: Iterable[tuple[str, Any, Any]]) -> RunDiff:
    """The diff of two runs given as (instance id, key value, compared value) triples (pure).

    Instances without a key value are left out; of several with the same key, the last one counts.
    """
    side_a = {str(k): (iid, value) for iid, k, value in left if k is not None}
    side_b = {str(k): (iid, value) for iid, k, value in right if k is not None}
    items: list[PairDiff] = []
    for k in sorted(set(side_a) | set(side_b)):
        if k not in side_b:
            items.append(PairDiff(k, "only_a", a_instance=side_a[k][0]))
        elif k not in side_a:
            items.append(PairDiff(k, "only_b", b_instance=side_b[k][0]))
        else:
            changes = changed_fields(side_a[k][1], side_b[k][1])
            items.append(PairDiff(k, "changed" if changes else "equal", side_a[k][0], side_b[k][0], changes))
    items.sort(key=lambda item: CHANGES.index(item.change))
    return RunDiff(a, b, key, path, items)


def diff_runs(store: RedisStore, a: str, b: str, key: str = "data.account_id", path: str = "result",
              batch: int = READ_BATCH) -> RunDiff:
    """Pair the instances of runs ``a`` and ``b`` by ``key`` and compare them at ``path``."""
    paths = [InstancePath.parse(key), InstancePath.parse(path)]

    def triples(run: str) -> Iterator[tuple[str, Any, Any]]:
        for iid, (k, value) in read_run(store, run, paths, batch):
            yield iid, k, value

    return compare(a, b, key, path, triples(a), triples(b))


__all__ = ["CHANGES", "FieldChange", "InstancePath", "PairDiff", "RunDiff", "changed_fields", "compare",
           "diff_runs", "read_run"]
