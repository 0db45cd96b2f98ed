"""The capacity benchmark's recording (``bench.capacity.record``) on a real Redis (a sandbox prefix of its own):
it records what one default combined worker sends, the held transitions of the reads-only steps included."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bench import capacity
from portfolio_manager.services import use_services


@pytest.fixture
def recording(redis_url: str) -> Iterator[capacity.Recording]:
    """Five seeded accounts' morning, recorded (the services it installed are dropped after)."""
    try:
        yield capacity.record(redis_url, accounts=5)
    finally:
        use_services(None)


def _ops(calls: list[list[bytes]]) -> list[str]:
    return [json.loads(call[3 + int(call[2])])["op"] for call in calls]


def test_reads_only_steps_send_their_transitions_held_in_one_chain_call(recording: capacity.Recording) -> None:
    assert len(recording.ids) == 5
    for iid, calls in recording.per_instance.items():
        ops = _ops(calls)
        # fetch_holdings, fetch_target and plan_orders only read: the transitions before them ride in one call
        assert ops.count("chain") == 1, (iid, ops)
        assert all(iid.encode() in call[3] for call in calls)
    by_op = recording.calls_by_op()
    assert by_op["chain"] == 1.0
    assert sum(by_op.values()) == pytest.approx(
        (sum(len(c) for c in recording.per_instance.values()) + len(recording.batch)) / 5, abs=0.01)

