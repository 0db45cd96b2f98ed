"""Which next steps a worker runs inline: the same service's, and those of every service it consumes."""

from __future__ import annotations

from typing import Any

from celery import Celery

from engine.app import hosted_services
from engine.definitions.nodes import ServiceNode, TerminalNode
from engine.runtime.concerns.inline import inline_rule
from engine.service import ActionRegistry, Transition, action

ACTIONS = ActionRegistry()


@action("alpha", "one", into=ACTIONS)
def one(payload: Any) -> Transition:
    """A step of service alpha."""
    return Transition("ok")


@action("beta", "two", into=ACTIONS)
def two(payload: Any) -> Transition:
    """A step of service beta."""
    return Transition("ok")


def _node(service: str, name: str) -> ServiceNode:
    return ServiceNode(type="service", service=service, action=name, transitions={"ok": "done"})


def test_a_worker_of_one_service_inlines_that_service_only() -> None:
    rule = inline_rule("alpha", ACTIONS, lambda: frozenset({"alpha"}))
    assert rule(_node("alpha", "one"))
    assert not rule(_node("beta", "two"))  # another queue: its own workers take it
    assert not rule(_node("alpha", "unknown"))  # an action this worker does not have
    assert not rule(TerminalNode(type="terminal", status="succeeded"))


def test_a_worker_consuming_several_queues_inlines_across_them() -> None:
    asked = []

    def hosted() -> frozenset[str]:
        asked.append(1)
        return frozenset({"alpha", "beta"})

    rule = inline_rule("alpha", ACTIONS, hosted)
    assert rule(_node("beta", "two")) and rule(_node("beta", "two"))
    assert asked == [1]  # the worker's queues are read once
    assert not rule(_node("gamma", "three"))


def test_hosted_services_are_the_queues_a_worker_consumes() -> None:
    app = Celery("t", set_as_current=False)
    app.amqp.queues.select(["alpha", "beta"])  # what `celery worker -Q alpha,beta` does at start-up
    assert hosted_services(app) == frozenset({"alpha", "beta"})
    assert hosted_services(object()) == frozenset()  # not a worker's app: the same service only
