"""The year soak (``tests/faults/year_soak.py``): 250 trading mornings leave Redis where it started.

Slow (several minutes): run it with ``make soak`` or ``pytest -s -m slow tests/faults/test_year_soak.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.year_soak import DAYS, TOLERANCE, run_soak


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_a_year_of_mornings_leaves_redis_where_it_started(tmp_path: Path) -> None:
    figures = run_soak(tmp_path, DAYS)
    assert figures.days == DAYS
    assert figures.archived == figures.instances and figures.archived_twice == 0, figures.line()
    assert abs(figures.key_drift) <= TOLERANCE, figures.line()
    assert abs(figures.data_drift) <= TOLERANCE, figures.line()
