"""Sample actions: an IO-bound ``sample_io`` service and a CPU-bound ``sample_cpu`` one."""

from __future__ import annotations

import hashlib
from typing import Any

from engine.errors import ActionFailed
from engine.service import Transition, action


@action("sample_io", "fetch")
def fetch(payload: dict[str, Any]) -> Transition:
    """Produce a record's values; every ``fail_every``-th record is broken, to show failures."""
    record_id = int(payload["record_id"])
    if payload.get("fail_every") and record_id % int(payload["fail_every"]) == 13:
        raise ActionFailed(f"record {record_id} is corrupt (sample failure)")
    if record_id % 50 == 49:
        return Transition("missing")
    digest = hashlib.sha256(str(record_id).encode()).digest()
    return Transition("ok", {"values": list(digest[:8])})


@action("sample_cpu", "score")
def score(payload: dict[str, Any]) -> Transition:
    """Score the values (0-100)."""
    values = payload["values"]
    return Transition("ok", {"score": round(sum(values) / (255 * len(values)) * 100, 2)})


@action("sample_io", "store")
def store(payload: dict[str, Any]) -> Transition:
    """Pretend to store the scored record."""
    return Transition("ok", {"stored": f"{payload['bucket']}/{payload['record_id']}"})


@action("bench", "noop")
def noop(payload: dict[str, Any]) -> Transition:
    """Does nothing (engine overhead benchmark)."""
    return Transition("ok")
