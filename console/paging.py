"""Paging and conditional answers for every list the console serves.

Every list in the API and the pages comes a page at a time: ``limit`` (default
:data:`DEFAULT_PAGE`, at most :data:`MAX_PAGE`) and a cursor. Instances of a run page by id
(``after=<last id of the page>``, stable while the run changes); runs, proposals and an
instance's history by position (``offset``). A JSON list answers
``{"items": [...], "next": <cursor or null>, "limit": n}``: pass ``next`` back as ``after``
(or ``offset``) for the following page; ``null`` means the last one.

Polled answers carry an ``ETag``: a client that sends it back in ``If-None-Match`` gets
``304 Not Modified`` while nothing changed (the pages' script polls that way).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import Request
from fastapi.responses import Response

DEFAULT_PAGE = 100
MAX_PAGE = 500

T = TypeVar("T")


def page_size(limit: int | None, default: int = DEFAULT_PAGE) -> int:
    """``limit`` kept between 1 and :data:`MAX_PAGE` (``default`` when not given)."""
    return max(1, min(int(limit) if limit else default, MAX_PAGE))


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the cursor of the next one (None: this is the last)."""

    items: list[T]
    next: str | None
    limit: int

    def to_dict(self, items: list[Any] | None = None) -> dict[str, Any]:
        """The API's envelope, with ``items`` as given (already JSON-able) or the page's own."""
        return {"items": self.items if items is None else items, "next": self.next, "limit": self.limit}


def by_offset(everything: Sequence[T], offset: int, limit: int) -> Page[T]:
    """The page of ``everything`` from ``offset`` (for lists that are small or already in memory)."""
    offset = max(0, offset)
    items = list(everything[offset:offset + limit])
    more = offset + limit < len(everything)
    return Page(items, str(offset + limit) if more else None, limit)


def etag_of(payload: Any) -> str:
    """A strong validator of a JSON-able payload."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def not_modified(request: Request, tag: str) -> Response | None:
    """304 when the client already holds ``tag`` (``If-None-Match``), else None."""
    sent = request.headers.get("if-none-match", "")
    if tag in {t.strip() for t in sent.split(",")}:
        return Response(status_code=304, headers={"ETag": tag})
    return None


def json_answer(request: Request, payload: Any) -> Response:
    """``payload`` as JSON with its ETag, or 304 when the client has it already."""
    from fastapi.responses import JSONResponse

    tag = etag_of(payload)
    return not_modified(request, tag) or JSONResponse(payload, headers={"ETag": tag})
