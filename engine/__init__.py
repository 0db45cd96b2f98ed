"""tradeflow's workflow engine: JSON state machines on Redis, steps as Celery tasks.

The engine knows nothing of any business domain. Its public API, by concern:
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
]
