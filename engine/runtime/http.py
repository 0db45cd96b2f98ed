"""The ``http`` node: the service contract over HTTP, so any language can take part.

The input is POSTed (or PUT) as JSON; the endpoint answers ``{"transition": ..., "data": {...}}``.
Header values may name environment variables as ``${NAME}`` (secrets stay out of definitions).
5xx, 429 and connection errors are retried per the node's policy; other 4xx fail the step.
"""

from __future__ import annotations

import os
import re
from typing import Any

import requests

from engine.definitions.nodes import HttpNode
from engine.errors import ActionFailed, MalformedAnswer, RetryableHttpError
from engine.service import Transition, as_transition

_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
_MAX_BODY = 16 * 1024 * 1024


def _headers(node: HttpNode) -> dict[str, str]:
    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ActionFailed(f"header refers to ${{{name}}}, which is not set in the worker's environment")
        return os.environ[name]

    headers = {k: _ENV_REF.sub(expand, v) for k, v in node.headers.items()}
    headers.setdefault("Content-Type", "application/json")
    return headers


def call_http(node: HttpNode, payload: Any, session: requests.Session | None = None) -> Transition:
    """Send ``payload`` to the node's endpoint and read its transition."""
    http = session or requests
    response = http.request(node.method, node.url, json=payload, headers=_headers(node),
                            timeout=node.timeout_seconds)
    if response.status_code >= 500 or response.status_code == 429:
        raise RetryableHttpError(f"HTTP {response.status_code} from {node.url}: {response.text[:200]}")
    if response.status_code >= 400:
        raise ActionFailed(f"HTTP {response.status_code} from {node.url}: {response.text[:200]}")
    if len(response.content) > _MAX_BODY:
        raise MalformedAnswer(f"answer from {node.url} is larger than {_MAX_BODY} bytes")
    try:
        body = response.json()
    except ValueError as exc:
        raise MalformedAnswer(f"answer from {node.url} is not JSON: {response.text[:200]!r}") from exc
    return as_transition(body)
