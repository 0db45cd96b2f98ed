"""The runtime's quick constructors make exactly what the classes' own constructors make."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.expressions.cel import Scope
from engine.instance import Activity, Instance, InstanceStatus, Outcome
from engine.runtime.outcomes import clone, record

REQUIRED: dict[str, Any] = {"seq": 3, "node": "calc", "attempt": 1, "outcome": Outcome.APPLIED, "worker": "h:1:T",
                            "started_at": 1.5, "ended_at": 2.5}


@pytest.mark.parametrize("extra", [
    {},
    {"transition": "ok", "service": "s", "action": "a", "sent": {"x": [1, None]}, "received": {"y": 1.5},
     "next": "pay", "via": ["choose"]},
    {"reason": "another delivery applied first", "transition": "ok"},
    {"error": "boom", "retry_in": 2.0, "batch": "b1", "quorum": "1 of 2"},
])
def test_record_is_the_activity_its_constructor_makes(extra: dict[str, Any]) -> None:
    made, expected = record(**REQUIRED, **extra), Activity(**REQUIRED, **extra)
    assert made == expected and type(made) is Activity
    assert list(made.__dict__) == list(expected.__dict__)  # the same fields in the same order ...
    assert made.to_json() == expected.to_json()  # ... so the same stored JSON
    with pytest.raises(AttributeError):
        made.seq = 4  # type: ignore[misc]  # still frozen


def test_record_refuses_what_the_constructor_refuses() -> None:
    with pytest.raises(TypeError, match="unexpected keyword"):
        record(**REQUIRED, colour="red")
    with pytest.raises(TypeError, match="missing"):
        record(seq=1, node="a")


def test_clone_is_a_shallow_copy() -> None:
    instance = Instance(id="i", workflow="w", version=1, run="r", status=InstanceStatus.RUNNING, node="a", seq=1,
                        attempt=1, data={"k": 1}, context={"a": {}}, created_at=1.0, updated_at=2.0, carrier="c")
    made = clone(instance)
    assert made == copy.copy(instance) and made is not instance and made.data is instance.data
    made.node = "b"
    assert instance.node == "a"


def test_scope_of_is_the_scope_its_constructor_makes() -> None:
    when = time.time()
    made = Scope.of({"d": 1}, {"p": 2}, {"c": 3}, when, {"id": "i"})
    expected = Scope({"d": 1}, {"p": 2}, {"c": 3}, datetime.fromtimestamp(when, UTC), {"id": "i"})
    assert "now" not in made.__dict__  # made when first read
    assert made == expected and repr(made) == repr(expected)
    assert made.now is made.now and made.now == expected.now and made.now.tzinfo is UTC
    with pytest.raises(AttributeError):
        made.colour  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError):
        expected.colour  # type: ignore[attr-defined]  # noqa: B018
