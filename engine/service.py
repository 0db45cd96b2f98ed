"""Service actions: plain functions registered with a decorator.

A service action takes plain data (a ``dict``, or a pydantic model when its first parameter
is annotated with one) and returns a :class:`Transition`. It knows nothing of Redis or
Celery; :func:`engine.app.bind_tasks` turns every registered action into a Celery task on the queue of
its service::

    from engine import Transition, action

    @action("order_calc", "plan_orders")
    def plan_orders(request: PlanRequest) -> Transition:
        return Transition("ok", calculate(request))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pydantic import BaseModel, ValidationError

from engine.errors import ActionFailed, MalformedAnswer, TradeflowError
from engine.jsoncodec import NotJSON, encode_strict


@dataclass(frozen=True)
class Transition:
    """A service's answer: the transition's name and the data to merge into the context."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    #: ``data`` as compact JSON, set by :func:`ok` and :func:`as_transition` once they have checked
    #: it: the store writes this text instead of encoding the same document again. Not part of
    #: the answer's identity; an action never sets it.
    encoded: str | None = field(default=None, kw_only=True, repr=False, compare=False)


def ok(data: Mapping[str, Any] | BaseModel | None = None) -> Transition:
    """Shorthand for ``Transition("ok", data)``."""
    plain, encoded = _plain(data)
    return Transition("ok", plain, encoded=encoded)


def _plain(data: Any) -> tuple[dict[str, Any], str | None]:
    """``data`` as a plain dict, and as compact JSON when it was checked (a mapping)."""
    if data is None:
        return {}, "{}"
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json"), None
    if isinstance(data, Mapping):
        plain = dict(data)
        return plain, _check_json(plain)
    raise MalformedAnswer(f"transition data must be an object, got {type(data).__name__}")


def _check_json(data: dict[str, Any]) -> str:
    """``data`` as compact JSON (as the store writes it); refuse data JSON cannot carry as it is
    (a set, bytes, an object, NaN): the store would save its str()."""
    try:
        return encode_strict(data).decode()
    except (NotJSON, RecursionError) as exc:
        raise MalformedAnswer(f"transition data is not plain JSON: {exc}") from None


def as_transition(answer: Any) -> Transition:
    """Normalise what an action returned: a Transition, a name, (name, data) or a dict."""
    if isinstance(answer, Transition):
        if answer.encoded is not None:  # made by ok(): checked and encoded already
            return answer
        plain, encoded = _plain(answer.data)
        return Transition(answer.name, plain, encoded=encoded)
    if isinstance(answer, str):
        return Transition(answer, {}, encoded="{}")
    if isinstance(answer, tuple) and len(answer) == 2 and isinstance(answer[0], str):
        plain, encoded = _plain(answer[1])
        return Transition(answer[0], plain, encoded=encoded)
    if isinstance(answer, Mapping) and isinstance(answer.get("transition"), str):
        extra = set(answer) - {"transition", "data"}
        if extra:
            raise MalformedAnswer(f"unexpected keys in answer: {sorted(extra)}")
        plain, encoded = _plain(answer.get("data"))
        return Transition(answer["transition"], plain, encoded=encoded)
    raise MalformedAnswer(
        "an action must return a Transition, a transition name, (name, data) or "
        f'{{"transition": ..., "data": {{...}}}}; got {type(answer).__name__}'
    )


@dataclass(frozen=True)
class ActionSpec:
    """A registered action: where it runs and how it is called."""

    service: str
    name: str
    fn: Callable[..., Any]
    input_model: type[BaseModel] | None
    #: The action changes nothing but its answer (it reads and computes): run inline, it may start
    #: before the transition before it is confirmed (see :func:`action`).
    reads_only: bool = False

    @property
    def task_name(self) -> str:
        """The Celery task name, ``<service>.<action>`` (routed to the ``<service>`` queue)."""
        return f"{self.service}.{self.name}"

    def call(self, payload: Any) -> Transition:
        """Run the action on ``payload`` and return its transition (no Redis, no Celery)."""
        return as_transition(self.invoke(payload))

    def invoke(self, payload: Any) -> Any:
        """Run the action on ``payload`` (validated into its input model) and return its answer as is.

        A gather node's action answers one transition per member (see :mod:`engine.runtime.gather`).
        """
        if self.input_model is not None:
            try:  # model_validate(payload), without its keyword defaults passed on one by one
                argument: Any = self.input_model.__pydantic_validator__.validate_python(payload)
            except ValidationError as exc:
                raise ActionFailed(f"invalid input for {self.task_name}: {_short(exc)}") from exc
        else:
            argument = payload
        return self.fn(argument)


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class ActionRegistry:
    """Every action known to this process, by task name."""

    def __init__(self) -> None:
        self._actions: dict[str, ActionSpec] = {}

    def register(self, spec: ActionSpec) -> None:
        """Add ``spec``; registering the same function twice is harmless."""
        existing = self._actions.get(spec.task_name)
        if existing is not None and existing.fn is not spec.fn:
            raise TradeflowError(f"action {spec.task_name} is registered twice ({existing.fn} and {spec.fn})")
        self._actions[spec.task_name] = spec

    def get(self, service: str, name: str) -> ActionSpec:
        """The action ``service.name``; NotFound-like TradeflowError with a hint if missing."""
        key = f"{service}.{name}"
        try:
            return self._actions[key]
        except KeyError:
            known = ", ".join(sorted(self._actions)) or "none"
            raise TradeflowError(
                f"no action {key} in this process (known: {known}); "
                "is its module listed in TRADEFLOW_SERVICE_MODULES?"
            ) from None

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(list(self._actions.values()))

    def __contains__(self, task_name: object) -> bool:
        return task_name in self._actions

    def find(self, task_name: str) -> ActionSpec | None:
        """The action called ``task_name`` (``<service>.<action>``), or None."""
        return self._actions.get(task_name)


registry = ActionRegistry()


def action(service: str, name: str | None = None, *, into: ActionRegistry | None = None,
           reads_only: bool = False) -> Callable:
    """Register a plain function as action ``name`` (default: its own name) of ``service``.

    The function is returned unchanged, so it stays a plain, testable function.

    ``reads_only=True`` says the action changes nothing outside its answer: it reads (a book, a
    price feed) and computes. When a worker runs such a step inline right after the step before
    it, it does not wait for that step's transition to be confirmed: the transitions of a run of
    such steps go to Redis together with the next one's, in one round trip, each still its own
    compare-and-set with its own record. If one of them is refused (the instance was paused,
    cancelled or moved on meanwhile), the answers computed after it are dropped as no-ops: a
    reads-only action may thus run once for nothing, never with an effect.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        (into or registry).register(ActionSpec(service, name or fn.__name__, fn, _input_model(fn), reads_only))
        return fn

    return decorate


def _input_model(fn: Callable[..., Any]) -> type[BaseModel] | None:
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise TradeflowError(f"action {fn.__qualname__} must take one argument (its input)")
    hint = get_type_hints(fn).get(params[0].name)
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None
