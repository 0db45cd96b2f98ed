"""A worker moves its start-up objects out of the garbage collector's sight before it runs steps."""

from __future__ import annotations

import gc

from celery.signals import worker_process_init, worker_ready


def test_start_up_objects_are_frozen_in_the_process_that_runs_the_steps() -> None:
    import engine.worker as worker

    before = gc.get_freeze_count()
    try:
        worker.freeze_start_up_objects()
        assert gc.get_freeze_count() > before  # every object alive now is frozen
    finally:
        gc.unfreeze()  # the test process goes on collecting as before


def test_the_freeze_runs_when_a_solo_worker_is_ready_and_when_a_pool_process_starts() -> None:
    import engine.worker as worker

    for signal in (worker_ready, worker_process_init):
        receivers = [ref() if callable(ref) else ref for _key, ref in signal.receivers]
        assert worker.freeze_start_up_objects in receivers, signal.name
