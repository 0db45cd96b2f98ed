"""The brokerage limit, end to end on real workers (the default fleets and beat): a simulated
brokerage that refuses what goes over its own rate refuses orders of a submission phase that has
no limit in its definition, and none of the same phase under the engine's ``brokerage`` limit."""

from __future__ import annotations

import pytest
from rich.console import Console

from bench import limited_submission

pytestmark = pytest.mark.integration

#: Requests a second the simulated brokerage accepts; the engine's limit is 20 % under it.
ACCEPTS = 10
ACCOUNTS = 12


def test_without_the_limit_the_brokerage_refuses_orders_and_with_it_none(redis_url: str) -> None:
    quiet = Console(quiet=True)
    unlimited = limited_submission.run(redis_url, ACCOUNTS, ACCEPTS, console=quiet, limited=False)
    # every account's orders go as fast as the workers send them: far more than 10 in some second
    assert unlimited["orders"] > 3 * ACCEPTS
    assert unlimited["rejected_for_rate"] > 0
    assert unlimited["accepted_orders"] < unlimited["orders"]

    limited = limited_submission.run(redis_url, ACCOUNTS, ACCEPTS, console=quiet, headroom=0.2)
    assert limited["rejected_for_rate"] == 0
    assert limited["accepted_orders"] == limited["received"] == limited["orders"]  # each accepted once
    assert limited["counts"] == {"succeeded": ACCOUNTS}
    assert limited["busiest_second"] <= ACCEPTS
    # at most 8 orders a second (burst 8) after the first 8: the phase lasts at least this long
    assert limited["submission_seconds"] >= (limited["orders"] - 8) / 8 - 0.5
