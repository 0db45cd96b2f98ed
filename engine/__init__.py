"""tradeflow's workflow engine: JSON state machines on Redis, steps as Celery tasks.

The engine knows nothing of any business domain. Its public API, by concern:

- services: :func:`action` registers a service action, which returns a :class:`Transition`
  (:func:`ok` for the usual one);
- errors: :class:`TradeflowError` is the root; :class:`ActionFailed` fails a step at once,
  without retries;
- who acts: :class:`Principal` (a name and roles, given by the authenticated caller).

The Python API (:class:`engine.api.Engine`) and the Celery wiring (:mod:`engine.app`) are
imported from their modules: they pull in Redis and Celery, which a service module does not need.
"""

from engine.errors import (
    ActionFailed,
    DefinitionError,
    ExpressionError,
    InvalidInput,
    InvalidState,
    NotFound,
    TradeflowError,
)
from engine.principal import Principal
from engine.service import Transition, action, ok

__all__ = [
    # services
    "Transition",
    "action",
    "ok",
    # errors
    "ActionFailed",
    "DefinitionError",
    "ExpressionError",
    "InvalidInput",
    "InvalidState",
    "NotFound",
    "TradeflowError",
    # who acts
    "Principal",
]
