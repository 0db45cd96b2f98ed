"""The engine's exception hierarchy: one root, layered subclasses.

``TradeflowError`` is the root. Errors a user can fix carry a message that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass


class TradeflowError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigurationError(TradeflowError):
    """The environment or configuration is wrong (unreachable Redis, bad URL, ...)."""


class RedisUnavailable(ConfigurationError):
    """The configured Redis did not answer after a few attempts (it is never replaced by another)."""


@dataclass(frozen=True)
class Problem:
    """One problem in a definition: where (a JSON pointer) and what."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


class DefinitionError(TradeflowError):
    """A definition is malformed; ``problems`` lists every problem with its JSON pointer."""

    def __init__(self, problems: list[Problem], source: str = "<definition>") -> None:
        self.problems = problems
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class ExpressionError(TradeflowError):
    """An expression does not compile, or failed to evaluate at run time."""


class NotFound(TradeflowError):
    """A workflow, version, alias, instance or run does not exist."""


class InvalidInput(TradeflowError):
    """The initial data of a start does not match the definition's ``initial_data`` schema."""


class InvalidState(TradeflowError):
    """An operation does not apply to the instance's current status (e.g. resume a running one)."""


class SignalRefused(InvalidState):
    """A refused signal; the message says why (and where the instance is).

    ``code`` names the reason: ``not_awaited``, ``role``, ``requires``, ``same_principal`` (a
    quorum counts distinct principals), ``timeout`` (past the await's timeout), ``invalid``
    (malformed data or key), ``moved`` (the instance moved on while it was applied).
    """

    def __init__(self, message: str, code: str = "not_awaited") -> None:
        super().__init__(message)
        self.code = code


class StepFailed(TradeflowError):
    """A step cannot go on: unknown transition, malformed answer, or exhausted retries."""


class DataSetLost(TradeflowError):
    """Redis lost tradeflow's data (restarted empty or replaced): refusing to continue silently.

    Raised when the Redis epoch key a process saw at start is gone or different. What to do is
    in the README's runbook: restore Redis from its AOF/RDB and restart the workers, or, to
    accept the empty data set, restart the workers and start the run again.
    """


class ActionFailed(TradeflowError):
    """Raised by a service action to fail its step at once, without retries.

    Use it for errors that another attempt cannot fix (bad account data, a closed account).
    Any other exception is retried per the node's retry policy.
    """


class MalformedAnswer(ActionFailed):
    """A service or HTTP endpoint answered something that is not a transition."""


class RetryableHttpError(TradeflowError):
    """An http step's response that another attempt may fix (5xx, 429): the node's retry policy applies."""
