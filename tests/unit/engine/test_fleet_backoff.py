"""The restart backoff of ``tradeflow workers`` (``engine.ops.fleet.restart_delay``)."""

from __future__ import annotations

from engine.ops.fleet import RESTART_MAX_DELAY, restart_delay


def test_the_delay_doubles_with_each_exit_in_a_row_up_to_the_cap() -> None:
    assert [restart_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert restart_delay(100) == RESTART_MAX_DELAY
    assert restart_delay(3, first=0.5, cap=1.5) == 1.5
