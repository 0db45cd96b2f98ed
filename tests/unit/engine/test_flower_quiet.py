"""The periodic tasks stay out of Flower's task list; step tasks still send their events."""

from __future__ import annotations

from celery import Celery

from engine.app import bind_tasks
from engine.runtime.routing import SWEEP_TASK, TICK_TASK
from engine.service import ActionRegistry, Transition, action

ACTIONS = ActionRegistry()


@action("svc", "noop", into=ACTIONS)
def noop(payload: dict) -> Transition:
    """Does nothing."""
    return Transition("ok")


def test_tick_and_sweep_send_no_task_events_but_steps_do() -> None:
    app = Celery("flower-quiet", set_as_current=False)
    bind_tasks(app, lambda: None, ACTIONS)  # type: ignore[arg-type,return-value]
    assert app.tasks[TICK_TASK].send_events is False
    assert app.tasks[SWEEP_TASK].send_events is False
    assert app.tasks["svc.noop"].send_events is True


def test_beat_sends_no_task_sent_events() -> None:
    import engine.worker as worker

    before = worker.app.conf.task_send_sent_event
    try:
        worker.app.conf.task_send_sent_event = True
        worker.quiet_beat()
        assert worker.app.conf.task_send_sent_event is False
    finally:
        worker.app.conf.task_send_sent_event = before
