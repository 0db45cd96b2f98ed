"""The trading platform's portfolio manager: the book of accounts, its sources, and the brokerage.

This package's data side is pure and engine-independent; its public API, by concern:

- the book: :mod:`portfolio_manager.book` models (``Account``, ``Holdings``, ``ModelPortfolio``...)
- sources: ``BookSource`` with ``RedisBook`` (own key prefix) and ``HttpBook`` (custodian REST API)
- synthetic data: ``seed_book`` / ``generate_book``
- order calculation input: ``build_plan_request``
- brokerage: ``Brokerage``, ``SimulatedBrokerage``, ``BrokerOrder``, ``BrokerReceipt``
- errors: ``PortfolioError`` and its subclasses

Calendars live in :mod:`portfolio_manager.calendars` and are not imported here (pandas is slow
to import); import that module where trading days are needed.
"""

from portfolio_manager.book import (
    Account,
    AccountStatus,
    AccountType,
    Holdings,
    ModelPortfolio,
    Region,
    Side,
    Sleeve,
    TaxLot,
    Trade,
)
from portfolio_manager.brokerage import (
    Brokerage,
    BrokerOrder,
    BrokerReceipt,
    OrderStatus,
    SimulatedBrokerage,
    last_price_from,
)
from portfolio_manager.errors import (
    AccountClosed,
    AccountNotFound,
    BookError,
    BrokerageError,
    BrokerageTimeout,
    CalendarError,
    DuplicateOrder,
    InvalidBookData,
    MissingPrice,
    ModelMismatch,
    ModelNotFound,
    NotATradingDay,
    PortfolioError,
    SourceRejected,
    SourceUnavailable,
)
from portfolio_manager.generator import GeneratorConfig, SeedSummary, generate_book, seed_book
from portfolio_manager.order_request import build_plan_request
from portfolio_manager.sources import BookReader, BookSource, BookWriter, HttpBook, RedisBook

__all__ = [
    # the book
    "Account",
    "AccountStatus",
    "AccountType",
    "Holdings",
    "ModelPortfolio",
    "Region",
    "Side",
    "Sleeve",
    "TaxLot",
    "Trade",
    # sources
    "BookReader",
    "BookSource",
    "BookWriter",
    "HttpBook",
    "RedisBook",
    # synthetic data
    "GeneratorConfig",
    "SeedSummary",
    "generate_book",
    "seed_book",
    # order calculation input
    "build_plan_request",
    # brokerage
    "Brokerage",
    "BrokerOrder",
    "BrokerReceipt",
    "OrderStatus",
    "SimulatedBrokerage",
    "last_price_from",
    # errors
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
    "CalendarError",
    "NotATradingDay",
]
