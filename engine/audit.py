"""The audit log: who signalled, decided, operated or logged in, what, and when.

The engine records an event itself for every signal (applied, counted toward a quorum,
refused, duplicate) and every operator action (pause, resume, retry, cancel, close batch);
others record theirs with :meth:`engine.api.Engine.record_audit` (the console: ``login``,
``login_failed``, ``logout``). Events live in one Redis stream of the engine's store, trimmed
to the retention as they are written; :meth:`engine.api.Engine.audit` reads them newest first,
filtered by person, run, time and kind, a page at a time.

An event's ``id`` is its stream entry id and ``at`` the time Redis recorded it (the id's
milliseconds): ids grow with time, so a page's ``next`` (the last id it scanned) is the cursor
of the following page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidInput
from engine.principal import Principal

#: Kinds the engine records.
SIGNAL = "signal"  # a signal applied (moved the instance on, or counted toward its quorum)
SIGNAL_REFUSED = "signal_refused"
SIGNAL_DUPLICATE = "signal_duplicate"  # its key was applied before: nothing done
LIMIT_KINDS = ("limit_set", "limit_cleared")  # a run-time override of a shared limit set or dropped
CONTROL_KINDS = ("pause", "resume", "retry", "cancel")
CLOSE_BATCH = "close_batch"

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,39}$")
CURSOR_PATTERN = re.compile(r"^\d{1,20}-\d{1,20}$")
MAX_LIMIT = 1000
#: Entries read per round trip, and at most per page: a page of a rare person's events over a
#: long log may come back short, with ``next`` to go on from where the scan stopped.
CHUNK = 500
SCAN_LIMIT = 20_000

#: Reads entries newest first: (newest id bound, oldest id bound, count) -> [(id, fields)].
Reader = Callable[[str, str, int], Sequence[tuple[str, dict[str, str]]]]


@dataclass(frozen=True)
class AuditEvent:
    """One audit event: when, what (``kind``), who (name and roles), on which run and instance, details."""

    id: str
    at: float
    kind: str
    by: str
    roles: list[str]
    run: str | None
    instance: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view."""
        return {"id": self.id, "at": self.at, "kind": self.kind, "by": self.by, "roles": self.roles,
                "run": self.run, "instance": self.instance, "detail": self.detail}

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> AuditEvent:
        """The event of a stream entry (see :func:`entry_fields`)."""
        return cls(id=entry_id, at=int(entry_id.split("-", 1)[0]) / 1000, kind=fields.get("kind", ""),
                   by=fields.get("by", ""), roles=[r for r in fields.get("roles", "").split(",") if r],
                   run=fields.get("run") or None, instance=fields.get("instance") or None,
                   detail=json.loads(fields.get("detail") or "{}"))


@dataclass(frozen=True)
class AuditPage:
    """Events newest first; ``next`` is the cursor to pass as ``before`` for the following page (None: no more)."""

    events: list[AuditEvent]
    next: str | None


def entry_fields(kind: str, by: Principal | str | None, *, run: str | None = None, instance: str | None = None,
                 detail: dict[str, Any] | None = None) -> dict[str, str]:
    """The stream fields of one event (``by``: a principal, a bare name, or None when nobody was named)."""
    if not KIND_PATTERN.match(kind):
        raise InvalidInput(f"audit kind {kind!r}: lower-case letters, digits, '_', '.' or '-', at most 40")
    if isinstance(by, Principal):
        name, roles = by.name, ",".join(sorted(by.roles))
    else:
        name, roles = by or "", ""
    fields = {"kind": kind, "by": name, "roles": roles, "run": run or "", "instance": instance or ""}
    if detail:
        fields["detail"] = json.dumps(detail, separators=(",", ":"), default=str)
    return fields


@dataclass(frozen=True)
class AuditQuery:
    """What :meth:`engine.api.Engine.audit` asks for (every filter optional)."""

    person: str | None = None
    run: str | None = None
    since: float | None = None
    until: float | None = None
    kinds: frozenset[str] | None = None
    limit: int = 100
    before: str | None = None

    @classmethod
    def of(cls, *, person: str | None = None, run: str | None = None, since: float | None = None,
           until: float | None = None, kinds: Iterable[str] | None = None, limit: int = 100,
           before: str | None = None) -> AuditQuery:
        """A checked query (``InvalidInput`` says what is wrong)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"audit limit {limit}: give 1 to {MAX_LIMIT}")
        if before is not None and not CURSOR_PATTERN.match(before):
            raise InvalidInput(f"audit cursor {before!r} is not one a page gave as `next` (e.g. '1750000000000-0')")
        return cls(person or None, run or None, since, until, frozenset(kinds) if kinds else None, limit, before)

    def matches(self, event: AuditEvent) -> bool:
        """True when ``event`` passes the person, run and kind filters (time is the scan's range)."""
        return ((self.person is None or event.by == self.person) and (self.run is None or event.run == self.run)
                and (self.kinds is None or event.kind in self.kinds))

    def bounds(self) -> tuple[str, str]:
        """The stream id range to scan, newest end first (XREVRANGE's end and start)."""
        newest = "+"
        if self.until is not None:
            newest = str(int(self.until * 1000))  # an incomplete id as the end: the whole millisecond
        if self.before is not None and (newest == "+" or _id(self.before) <= (int(newest), 2 ** 64 - 1)):
            newest = f"({self.before}"
        oldest = "-" if self.since is None else str(int(self.since * 1000))
        return newest, oldest


def read_page(read: Reader, query: AuditQuery) -> AuditPage:
    """One page of events newest first, scanning at most :data:`SCAN_LIMIT` entries."""
    newest, oldest = query.bounds()
    events: list[AuditEvent] = []
    scanned = 0
    while True:
        chunk = read(newest, oldest, CHUNK)
        for entry_id, fields in chunk:
            scanned += 1
            event = AuditEvent.from_entry(entry_id, fields)
            if query.matches(event):
                events.append(event)
                if len(events) == query.limit:
                    return AuditPage(events, entry_id)
        if len(chunk) < CHUNK:
            return AuditPage(events, None)
        newest = f"({chunk[-1][0]}"
        if scanned >= SCAN_LIMIT:
            return AuditPage(events, chunk[-1][0])


def _id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-", 1)
    return int(ms), int(seq)
