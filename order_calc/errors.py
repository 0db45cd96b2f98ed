"""The exception hierarchy of order_calc: one root, layered subclasses.

``OrderCalcError`` is the root of every error raised on purpose. ``InvalidRequest`` means
the caller sent something the contract rejects; its message names the offending field
(``lots[2].quantity: must be > 0``) so the fix is obvious.
"""

from __future__ import annotations

from dataclasses import dataclass


class OrderCalcError(Exception):
    """Root of every error order_calc raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One problem of a request: the field's path and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidRequest(OrderCalcError, ValueError):
    """The request breaks the contract; ``problems`` lists every problem found.

    ``str(error)`` is one line: the first problem, then how many more there are.
    """

    def __init__(self, problems: list[FieldProblem]) -> None:
        if not problems:
            raise ValueError("InvalidRequest needs at least one problem")
        self.problems = problems
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{problems[0]}{suffix}")

    @classmethod
    def one(cls, field: str, message: str) -> InvalidRequest:
        """Build the error for a single problem."""
        return cls([FieldProblem(field, message)])

    @property
    def field(self) -> str:
        """The path of the first offending field, e.g. ``lots[2].quantity``."""
        return self.problems[0].field
