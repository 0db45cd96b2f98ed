"""The data-set check: stop a worker whose Redis lost the data set it started on (``DataSetLost``)."""

from __future__ import annotations

from engine.runtime.outcomes import StepOutcomes
from engine.runtime.pipeline import Hook


class DataSetCheck(Hook):
    """Checks the Redis epoch when a step names an unknown instance and before the timers run."""

    def on_missing(self, runtime: StepOutcomes, instance_id: str) -> None:
        """An unknown instance may mean Redis came back empty: raise ``DataSetLost`` if so."""
        runtime.check_data_set()

    def before_timers(self, runtime: StepOutcomes) -> None:
        """Never let the timers or the sweeper act on a data set that is not the one they started on."""
        runtime.check_data_set()
