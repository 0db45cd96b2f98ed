"""Redis URLs fit for a log line or an error message: every password replaced by ``***``."""

from __future__ import annotations

import re

#: A ``password=`` option in a URL's query (redis-py reads one there too, e.g. ``unix:///s.sock?password=...``).
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&;#]*")


def masked_url(url: str) -> str:
    """``url`` (one URL, or kombu's ``;``-separated list) with its passwords, in the user part or in the
    query, replaced by ``***``."""
    out = []
    for part in url.split(";"):
        scheme, sep, rest = part.partition("://")
        userinfo, at, hostpart = rest.rpartition("@")
        if at and ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        hostpart = _QUERY_PASSWORD.sub(r"\1***", hostpart)
        out.append(f"{scheme}{sep}{userinfo}{at}{hostpart}")
    return ";".join(out)


__all__ = ["masked_url"]
