"""The portfolio manager's exception hierarchy: one root, layered subclasses.

``PortfolioError`` is the root. Each class says whether another attempt can help
(``retryable``): a service action maps retryable errors to a retry of its step and the
others to an immediate failure of that one account, which must never stop the others.
Messages name the account, symbol or key at fault and, where there is one, the fix.
"""

from __future__ import annotations


class PortfolioError(Exception):
    """Root of every error the portfolio manager raises on purpose."""

    retryable: bool = False


# --- the book: accounts, holdings, models, prices ------------------------------------------------


class BookError(PortfolioError):
    """Something is wrong with, or missing from, the book of accounts."""


class AccountNotFound(BookError):
    """No account with this id exists in the book."""

    def __init__(self, account_id: str, detail: str = "") -> None:
        self.account_id = account_id
        super().__init__(f"account {account_id!r} not found{': ' + detail if detail else ''}")


class AccountClosed(BookError):
    """The account is closed: it is not rebalanced and takes no orders."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(f"account {account_id!r} is closed")


class ModelNotFound(BookError):
    """No model portfolio with this id exists in the book."""

    def __init__(self, model_id: str, account_id: str | None = None) -> None:
        self.model_id = model_id
        self.account_id = account_id
        owner = f" (model of account {account_id!r})" if account_id else ""
        super().__init__(f"model portfolio {model_id!r} not found{owner}")


class ModelMismatch(BookError):
    """An account and its model portfolio belong to different regions."""


class MissingPrice(BookError):
    """A symbol that must be priced (held, or a sleeve's primary) has no price."""

    def __init__(self, symbol: str, account_id: str | None = None, why: str = "") -> None:
        self.symbol = symbol
        self.account_id = account_id
        where = f" for account {account_id!r}" if account_id else ""
        because = f" ({why})" if why else ""
        super().__init__(f"no price for {symbol!r}{where}{because}")


class InvalidBookData(BookError):
    """A source returned data that does not parse as the book's models."""


class SourceUnavailable(BookError):
    """The source did not answer usefully (connection error, timeout, HTTP 5xx after retries)."""

    retryable = True


class SourceRejected(BookError):
    """The source refused the request (e.g. HTTP 4xx other than 404): fix the request, do not retry."""


# --- the brokerage ----------------------------------------------------------------------------------


class BrokerageError(PortfolioError):
    """The brokerage refused an order or could not be reached."""


class ShadowTradeRefused(BrokerageError):
    """An order of a shadow instance reached the brokerage adapter: a shadow never trades.

    Not retryable: the instance fails at once. Its definition lacks a ``"shadow": "stop"`` before
    the node that sends orders (the validator refuses such a definition on publish).
    """


class BrokerageTimeout(BrokerageError):
    """The order may have been accepted, but its answer was lost.

    Submit it again with the same idempotency key: the brokerage answers with the original
    receipt and never places it twice.
    """

    retryable = True


class DuplicateOrder(BrokerageError):
    """An idempotency key was reused for a different order (account, symbol, side or quantity)."""


# --- calendars ---------------------------------------------------------------------------------


class CalendarError(PortfolioError):
    """A trading-calendar question has no answer (unknown exchange, non-trading day)."""


class NotATradingDay(CalendarError):
    """The exchange has no session on this date, so it neither opens nor closes."""


__all__ = [
    "PortfolioError",
    "BookError",
    "AccountNotFound",
    "AccountClosed",
    "ModelNotFound",
    "ModelMismatch",
    "MissingPrice",
    "InvalidBookData",
    "SourceUnavailable",
    "SourceRejected",
    "BrokerageError",
    "BrokerageTimeout",
    "DuplicateOrder",
    "ShadowTradeRefused",
    "CalendarError",
    "NotATradingDay",
]


# --- configuration, proposals, the demo ----------------------------------------------------------


class SettingsError(PortfolioError, ValueError):
    """A ``TRADEFLOW_PM_*`` (or ``TRADEFLOW_MORNING_*``) variable has a value that cannot be used."""


class NoSuchProposal(PortfolioError, LookupError):
    """No proposal for this run and account (or not in the status an operation needs)."""


class DemoRefused(PortfolioError):
    """The configured book is a real one: the demo will not overwrite it."""

