"""The book in Redis, under its own key prefix (default ``pm:``).

Key layout (``P`` is the prefix; every value is UTF-8 JSON of a :mod:`portfolio_manager.book` model)::

    P accounts           hash    account id -> Account JSON
    P cash               hash    account id -> cash balance (decimal string)
    P lots:<account>     string  JSON array of the account's TaxLots, as held
    P trades:<account>   zset    member Trade JSON, score = date ordinal (append-only log)
    P models             hash    model id -> ModelPortfolio JSON
    P px:<symbol>        zset    member "<YYYY-MM-DD>|<price>", score = date ordinal

Reads are batched: :meth:`RedisBook.get_holdings` is one round trip (EVALSHA; the script is
loaded on the first NOSCRIPT only) — a small Lua script
reads the account, its cash and lots, and the trades of the account and of every linked
account (whose ids it takes from the account record); :meth:`RedisBook.get_holdings_many`
pipelines that script for any number of accounts, still one round trip. ``get_prices`` is
one pipeline for any number of symbols. Writes go through :meth:`RedisBook.batch`, a
non-transactional pipeline flushed every ``flush_every`` commands.

The script derives the lots/trades keys from the account id and its links, so it needs a
standalone Redis (or Sentinel); on Redis Cluster a household would need one hash tag.

The book knows nothing of the engine's keys, and the engine nothing of these.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from redis.exceptions import NoScriptError

from engine.keyspace import KeySpace, read_lua, text
from portfolio_manager.book import Account, Holdings, ModelPortfolio, TaxLot, Trade
from portfolio_manager.errors import AccountNotFound, InvalidBookData, ModelNotFound

_LOTS = TypeAdapter(tuple[TaxLot, ...])

#: One account's holdings in one round trip (see ``lua/holdings.lua``).
HOLDINGS_LUA = read_lua(__file__, "holdings.lua")
HOLDINGS_SHA = hashlib.sha1(HOLDINGS_LUA.encode(), usedforsecurity=False).hexdigest()
DEFAULT_FLUSH_EVERY = 5_000


class BookKeys:
    """Every Redis key of the book, built in one place."""

    def __init__(self, prefix: str = "pm:") -> None:
        self.prefix = prefix
        self.space = KeySpace(prefix)

    @property
    def accounts(self) -> str:
        """Hash of account id -> Account JSON."""
        return self.space.key("accounts")

    @property
    def cash(self) -> str:
        """Hash of account id -> cash balance."""
        return self.space.key("cash")

    @property
    def models(self) -> str:
        """Hash of model id -> ModelPortfolio JSON."""
        return self.space.key("models")

    def lots(self, account_id: str) -> str:
        """String holding the JSON array of an account's lots."""
        return self.space.key("lots", account_id)

    def trades(self, account_id: str) -> str:
        """Sorted set of an account's trades, scored by date ordinal."""
        return self.space.key("trades", account_id)

    def price(self, symbol: str) -> str:
        """Sorted set of a symbol's prices, scored by date ordinal."""
        return self.space.key("px", symbol)

    def families(self) -> list[str]:
        """SCAN patterns of the per-account and per-symbol keys."""
        return [self.space.family("lots"), self.space.family("trades"), self.space.family("px")]


def _parse(model: type[Any], raw: bytes | str, what: str) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidBookData(f"{what}: stored JSON is invalid: {exc}") from exc


#: Accounts read per HSCAN call and validated together by :func:`_parse_accounts`.
LIST_CHUNK = 5000
_ACCOUNTS = TypeAdapter(list[Account])


def _parse_accounts(chunk: list[tuple[bytes, bytes]], invalid: dict[str, str] | None) -> list[Account]:
    """The accounts of ``chunk`` (field, JSON) pairs: validated in one call (a JSON array of them,
    about 3x cheaper than one call each); when one is invalid, one by one, to name it."""
    if not chunk:
        return []
    try:
        return _ACCOUNTS.validate_json(b"[" + b",".join(raw for _, raw in chunk) + b"]")
    except ValidationError:
        pass
    accounts = []
    for key, raw in chunk:
        try:
            accounts.append(_parse(Account, raw, f"account {text(key)}"))
        except InvalidBookData as exc:
            if invalid is None:
                raise
            invalid[text(key)] = str(exc)
    return accounts


class RedisWriter:
    """Buffers book writes in a pipeline; :meth:`flush` sends them. Obtain one from ``RedisBook.batch()``."""

    def __init__(self, client: Any, keys: BookKeys, flush_every: int = DEFAULT_FLUSH_EVERY) -> None:
        self._pipe = client.pipeline(transaction=False)
        self._keys = keys
        self._flush_every = flush_every
        self._pending = 0
        self._fields: dict[str, dict[str, str]] = {}  # hash key -> fields, sent as one HSET each

    def _added(self, commands: int = 1) -> None:
        self._pending += commands
        if self._pending >= self._flush_every:
            self.flush()

    def _hset(self, key: str, field: str, value: str) -> None:
        self._fields.setdefault(key, {})[field] = value
        self._added()

    def flush(self) -> None:
        """Send every buffered command in one round trip."""
        for key, fields in self._fields.items():
            self._pipe.hset(key, mapping=fields)
        self._fields = {}
        if self._pending:
            self._pipe.execute()
            self._pending = 0

    def discard(self) -> None:
        """Drop the buffered commands without sending them."""
        self._pipe.reset()
        self._fields = {}
        self._pending = 0

    def put_account(self, account: Account) -> None:
        """Create or replace an account."""
        self._hset(self._keys.accounts, account.id, account.model_dump_json())

    def put_lots(self, account_id: str, lots: Sequence[TaxLot]) -> None:
        """Replace every lot of the account."""
        if lots:
            payload = "[" + ",".join(lot.model_dump_json() for lot in lots) + "]"
            self._pipe.set(self._keys.lots(account_id), payload)
        else:
            self._pipe.delete(self._keys.lots(account_id))
        self._added()

    def put_trades(self, trades: Iterable[Trade]) -> None:
        """Append trades to each account's log (the same trade put twice is kept once)."""
        by_account: dict[str, dict[str, int]] = {}
        for trade in trades:
            by_account.setdefault(trade.account_id, {})[trade.model_dump_json()] = trade.date.toordinal()
        for account_id, members in by_account.items():
            self._pipe.zadd(self._keys.trades(account_id), members)
            self._added()

    def put_model(self, model: ModelPortfolio) -> None:
        """Create or replace a model portfolio."""
        self._hset(self._keys.models, model.id, model.model_dump_json())

    def put_prices(self, prices: Mapping[str, float], as_of: date) -> None:
        """Record prices of ``as_of`` (replacing any earlier price of that date)."""
        day = as_of.toordinal()
        for symbol, price in prices.items():
            if not price > 0:
                raise ValueError(f"price of {symbol} must be > 0, got {price!r}")
            key = self._keys.price(symbol)
            self._pipe.zremrangebyscore(key, day, day)
            self._pipe.zadd(key, {f"{as_of.isoformat()}|{float(price)!r}": day})
            self._added(2)

    def set_cash(self, account_id: str, cash: float) -> None:
        """Set the account's cash balance."""
        if not cash >= 0:
            raise ValueError(f"cash of {account_id} must be >= 0, got {cash!r}")
        self._hset(self._keys.cash, account_id, repr(float(cash)))


class RedisBook:
    """A :class:`~portfolio_manager.sources.BookSource` on Redis (any redis-py compatible client)."""

    def __init__(self, client: Any, prefix: str = "pm:", flush_every: int = DEFAULT_FLUSH_EVERY) -> None:
        self.client = client
        self.keys = BookKeys(prefix)
        self.flush_every = flush_every

    def __repr__(self) -> str:
        return f"RedisBook(prefix={self.keys.prefix!r})"

    # --- writes -----------------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[RedisWriter]:
        """Buffer writes in a pipeline, flushed every ``flush_every`` commands and at exit.

        On an exception inside the block, commands not yet flushed are dropped.
        """
        writer = RedisWriter(self.client, self.keys, self.flush_every)
        try:
            yield writer
        except BaseException:
            writer.discard()
            raise
        writer.flush()

    def put_account(self, account: Account) -> None:
        """Create or replace an account."""
        with self.batch() as w:
            w.put_account(account)

    def put_lots(self, account_id: str, lots: Sequence[TaxLot]) -> None:
        """Replace every lot of the account."""
        with self.batch() as w:
            w.put_lots(account_id, lots)

    def put_trades(self, trades: Iterable[Trade]) -> None:
        """Append trades to the history (the same trade put twice is kept once)."""
        with self.batch() as w:
            w.put_trades(trades)

    def put_model(self, model: ModelPortfolio) -> None:
        """Create or replace a model portfolio."""
        with self.batch() as w:
            w.put_model(model)

    def put_prices(self, prices: Mapping[str, float], as_of: date) -> None:
        """Record prices of ``as_of``."""
        with self.batch() as w:
            w.put_prices(prices, as_of)

    def set_cash(self, account_id: str, cash: float) -> None:
        """Set the account's cash balance."""
        with self.batch() as w:
            w.set_cash(account_id, cash)

    def clear(self) -> int:
        """Delete every key of this book (only this prefix's book families); returns the count."""
        deleted = self.client.delete(self.keys.accounts, self.keys.cash, self.keys.models)
        for pattern in self.keys.families():
            batch: list[Any] = []
            for key in self.client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += self.client.delete(*batch)
                    batch = []
            if batch:
                deleted += self.client.delete(*batch)
        return int(deleted)

    # --- reads ------------------------------------------------------------------------------------

    def get_account(self, account_id: str) -> Account:
        """The account; raises AccountNotFound."""
        raw = self.client.hget(self.keys.accounts, account_id)
        if raw is None:
            raise AccountNotFound(account_id)
        account: Account = _parse(Account, raw, f"account {account_id}")
        return account

    def list_accounts(self, active_only: bool = True, invalid: dict[str, str] | None = None) -> list[Account]:
        """Every account (active ones only by default), ordered by id; scans in chunks.

        An account whose stored JSON is invalid raises InvalidBookData, unless ``invalid`` is
        given: then it is left out and its id and reason are put there.
        """
        accounts: list[Account] = []
        chunk: list[tuple[bytes, bytes]] = []
        for entry in self.client.hscan_iter(self.keys.accounts, count=LIST_CHUNK):
            chunk.append(entry)
            if len(chunk) >= LIST_CHUNK:
                accounts += _parse_accounts(chunk, invalid)
                chunk = []
        accounts += _parse_accounts(chunk, invalid)
        if active_only:
            accounts = [a for a in accounts if a.active]
        return sorted(accounts, key=lambda a: a.id)

    def get_model(self, model_id: str) -> ModelPortfolio:
        """The model portfolio; raises ModelNotFound."""
        raw = self.client.hget(self.keys.models, model_id)
        if raw is None:
            raise ModelNotFound(model_id)
        model: ModelPortfolio = _parse(ModelPortfolio, raw, f"model {model_id}")
        return model

    def get_prices(self, symbols: Iterable[str], as_of: date) -> dict[str, float]:
        """The last price on or before ``as_of`` of each symbol that has one; one round trip."""
        wanted = list(dict.fromkeys(symbols))
        pipe = self.client.pipeline(transaction=False)
        for symbol in wanted:
            pipe.zrevrangebyscore(self.keys.price(symbol), as_of.toordinal(), "-inf", start=0, num=1)
        prices: dict[str, float] = {}
        for symbol, found in zip(wanted, pipe.execute(), strict=True):
            if found:
                prices[symbol] = float(text(found[0]).split("|", 1)[1])
        return prices

    def get_holdings(self, account_id: str, as_of: date, lookback_days: int) -> Holdings:
        """Cash, lots and the household's trades in ``[as_of - lookback_days, as_of]``: one round trip."""
        return self.get_holdings_many([account_id], as_of, lookback_days)[account_id]

    def get_holdings_many(self, account_ids: Sequence[str], as_of: date, lookback_days: int) -> dict[str, Holdings]:
        """Holdings of many accounts in one round trip; raises AccountNotFound naming the first missing."""
        if lookback_days < 0:
            raise ValueError(f"lookback_days must be >= 0, got {lookback_days}")
        low, high = (as_of - timedelta(days=lookback_days)).toordinal(), as_of.toordinal()
        ids = list(dict.fromkeys(account_ids))
        out: dict[str, Holdings] = {}
        for account_id, reply in zip(ids, self._run_holdings_script(ids, low, high), strict=True):
            if not reply or reply[0] is None:
                raise AccountNotFound(account_id)
            raw_account, raw_cash, raw_lots, *raw_trades = reply
            account = _parse(Account, raw_account, f"account {account_id}")
            out[account_id] = self._holdings(account, raw_cash, raw_lots, raw_trades, as_of, lookback_days)
        return out

    def _run_holdings_script(self, ids: Sequence[str], low: int, high: int) -> list[Any]:
        """EVALSHA per account in one pipeline; on NOSCRIPT (first use, or after a Redis restart)
        load the script and send the pipeline once more."""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for account_id in ids:
                pipe.evalsha(
                    HOLDINGS_SHA, 2, self.keys.accounts, self.keys.cash, self.keys.prefix, account_id, low, high
                )
            try:
                return list(pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                self.client.script_load(HOLDINGS_LUA)
        raise AssertionError("unreachable")

    @staticmethod
    def _holdings(
        account: Account,
        raw_cash: Any,
        raw_lots: Any,
        raw_trades: Sequence[Any],
        as_of: date,
        lookback_days: int,
    ) -> Holdings:
        try:
            lots = _LOTS.validate_json(raw_lots) if raw_lots is not None else ()
            history = [Trade.model_validate_json(raw) for raw in raw_trades]
            history.sort(key=lambda t: (t.date, t.account_id, t.trade_id))
            return Holdings(
                account=account,
                as_of=as_of,
                lookback_days=lookback_days,
                cash=float(text(raw_cash)) if raw_cash is not None else 0.0,
                lots=lots,
                trade_history=tuple(history),
            )
        except (ValidationError, ValueError) as exc:
            raise InvalidBookData(f"account {account.id}: stored holdings are invalid: {exc}") from exc


__all__ = ["BookKeys", "RedisBook", "RedisWriter"]
