"""Where the book comes from: the ``BookSource`` contract and its implementations.

- :class:`~portfolio_manager.redis_book.RedisBook`: the book in Redis under its own key
  prefix (filled by :mod:`portfolio_manager.generator` for the demo and tests).
- :class:`~portfolio_manager.http_book.HttpBook`: a custodian's REST API over ``requests``.

Both satisfy :class:`BookSource` structurally (``isinstance(x, BookSource)`` works at run
time) and pass one shared contract test suite.

Writes go through :meth:`BookWriter.batch`: a context manager yielding a writer whose calls
may be buffered and are all applied by the time the ``with`` block ends (RedisBook turns a
batch into pipelines, so seeding 100,000 accounts takes a few round trips per thousand).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date
from typing import Protocol, runtime_checkable

from portfolio_manager.book import Account, Holdings, ModelPortfolio, TaxLot, Trade


@runtime_checkable
class BookReader(Protocol):
    """Read side of the book: what the daily run needs for one account."""

    def get_account(self, account_id: str) -> Account:
        """The account; raises AccountNotFound."""
        ...

    def list_accounts(self, active_only: bool = True, invalid: dict[str, str] | None = None) -> list[Account]:
        """Every account (only active ones by default), ordered by id; raises InvalidBookData on
        an invalid one, unless ``invalid`` is given: then it is left out and id -> reason put there."""
        ...

    def get_holdings(self, account_id: str, as_of: date, lookback_days: int) -> Holdings:
        """Cash and lots as held, plus trades of the account and its linked accounts dated in
        ``[as_of - lookback_days, as_of]``; raises AccountNotFound."""
        ...

    def get_model(self, model_id: str) -> ModelPortfolio:
        """The model portfolio; raises ModelNotFound."""
        ...

    def get_prices(self, symbols: Iterable[str], as_of: date) -> dict[str, float]:
        """The last price on or before ``as_of`` of each symbol that has one (others are absent)."""
        ...


@runtime_checkable
class BookWriter(Protocol):
    """Write side of the book, used by the synthetic generator and by data loaders."""

    def put_account(self, account: Account) -> None:
        """Create or replace an account."""
        ...

    def put_lots(self, account_id: str, lots: Sequence[TaxLot]) -> None:
        """Replace every lot of the account with ``lots``."""
        ...

    def put_trades(self, trades: Iterable[Trade]) -> None:
        """Add trades to the history (a trade with a known ``trade_id`` replaces the old one)."""
        ...

    def put_model(self, model: ModelPortfolio) -> None:
        """Create or replace a model portfolio."""
        ...

    def put_prices(self, prices: Mapping[str, float], as_of: date) -> None:
        """Record closing prices of ``as_of``."""
        ...

    def set_cash(self, account_id: str, cash: float) -> None:
        """Set the account's cash balance."""
        ...


@runtime_checkable
class BookSource(BookReader, BookWriter, Protocol):
    """The whole contract: read and write the book, with batched writes."""

    def batch(self) -> AbstractContextManager[BookWriter]:
        """A writer whose writes are all applied when the ``with`` block exits."""
        ...


from portfolio_manager.http_book import HttpBook  # noqa: E402
from portfolio_manager.redis_book import RedisBook  # noqa: E402

__all__ = ["BookReader", "BookWriter", "BookSource", "HttpBook", "RedisBook"]
