"""The brokerage adapter: a ``Brokerage`` contract and a simulated brokerage on Redis.

Every order carries an idempotency key. A brokerage places at most one order per key: a
second submit with the same key (a retry after a lost answer, a redelivered task, a second
worker) returns the original receipt; the same key with a *different* order raises
:class:`DuplicateOrder`.

:class:`SimulatedBrokerage` keeps, under its own prefix ``P`` (default ``pm:broker:``)::

    P received   list  JSON of every order delivered to it, duplicates included (``received_count``)
    P orders     hash  idempotency key -> BrokerReceipt JSON of the order it took (``accepted_orders``)

One submit is one ``MULTI``/``EXEC`` transaction — ``RPUSH received``, ``HSETNX orders key
receipt``, ``HGET orders key`` — so of any number of concurrent submits of one key, from any
number of processes, exactly one is accepted and all get that one's receipt. (No Lua, so
it runs on fakeredis too.)

Orders fill at once at the last price (``last_price(symbol)``, else the order's ``est_price``,
else its ``limit_price``); a limit the last price does not satisfy, or no price at all, gives a
``REJECTED`` receipt — recorded under the key like a fill, so a retry gets the same answer.

An order or block marked ``shadow`` (sent for a shadow instance) is refused before anything
else (:func:`refuse_shadow`, :class:`ShadowTradeRefused`): nothing is delivered, counted or placed.

**Block orders** (``submit_block``: the summed orders of many accounts, one symbol and side) have
keys of their own, under the same rules::

    P blocks          hash  idempotency key -> BlockReceipt JSON (``accepted_blocks``)
    P blocks:received list  every block delivered, duplicates included (``received_block_count``)
    P liquidity       hash  symbol -> the most a block of it fills (``set_liquidity``): a partial fill
    P halted          hash  symbol -> reason: a block of it is rejected (``halt``)

With ``retention_seconds`` (the engine's retention, from the services' settings), the records
are kept that long: each receipts hash has a companion zset ``<hash>:at`` (key -> acceptance
time) and each delivery list a list ``<list>:at`` of delivery times; records older than the
retention are dropped (``lua/trim_brokerage.lua``) at most once a second per process, after a
submit, and the keys themselves expire a retention after the last submit. An idempotency key is
therefore honoured for the retention, not forever -- as a real brokerage keeps its keys for a
window. Without it (the default), nothing is ever dropped.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar, runtime_checkable

from pydantic import Field

from engine.keyspace import KeySpace, read_lua
from portfolio_manager.book import FrozenModel, Identifier, Quantity, Side, Symbol
from portfolio_manager.errors import BrokerageTimeout, DuplicateOrder, ShadowTradeRefused

if TYPE_CHECKING:
    from portfolio_manager.sources import BookReader

Price = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class OrderStatus(StrEnum):
    """What became of an order the brokerage took."""

    FILLED = "FILLED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    REJECTED = "REJECTED"


class BrokerOrder(FrozenModel):
    """An order to send: what to trade, plus the key that makes sending it twice harmless."""

    idempotency_key: Annotated[str, Field(min_length=1, max_length=256)]
    account_id: Identifier
    symbol: Symbol
    side: Side
    quantity: Quantity
    limit_price: Price | None = None
    est_price: Price | None = None
    #: Sent for a shadow instance: every adapter refuses it (:class:`ShadowTradeRefused`).
    shadow: bool = False


class BrokerReceipt(FrozenModel):
    """The brokerage's answer for one idempotency key."""

    order_id: str
    idempotency_key: str
    account_id: str
    symbol: str
    side: Side
    quantity: float
    status: OrderStatus
    fill_price: float | None = None
    filled_value: float | None = None
    reason: str = ""
    accepted_at: datetime

    def matches(self, order: BrokerOrder) -> bool:
        """True when ``order`` is the order this receipt answers (same account, symbol, side, quantity)."""
        return (self.account_id, self.symbol, self.side, self.quantity) == (
            order.account_id,
            order.symbol,
            order.side,
            order.quantity,
        )


class BlockOrder(FrozenModel):
    """A block: the summed quantity of many accounts' orders of one symbol and side, sent once."""

    idempotency_key: Annotated[str, Field(min_length=1, max_length=512)]
    symbol: Symbol
    side: Side
    quantity: Quantity
    accounts: int = Field(ge=1, description="How many accounts' orders it sums (for the record).")
    est_price: Price | None = None
    #: Sums a shadow instance's orders: every adapter refuses it (:class:`ShadowTradeRefused`).
    shadow: bool = False


class BlockReceipt(FrozenModel):
    """The brokerage's answer for one block: how much filled, at what average price, or why not."""

    order_id: str
    idempotency_key: str
    symbol: str
    side: Side
    quantity: float
    filled_quantity: float
    status: OrderStatus
    avg_price: float | None = None
    filled_value: float | None = None
    reason: str = ""
    accepted_at: datetime

    def matches(self, block: BlockOrder) -> bool:
        """True when ``block`` is the block this receipt answers (same symbol, side and quantity)."""
        return (self.symbol, self.side, self.quantity) == (block.symbol, block.side, block.quantity)


Receipt = TypeVar("Receipt", BrokerReceipt, BlockReceipt)


def _what(item: BrokerOrder | BrokerReceipt | BlockOrder | BlockReceipt) -> str:
    """``SIDE QUANTITY SYMBOL``, with ``in ACCOUNT`` for one account's order (the words of DuplicateOrder)."""
    text = f"{item.side.value} {item.quantity:g} {item.symbol}"
    return f"{text} in {item.account_id}" if isinstance(item, BrokerOrder | BrokerReceipt) else text


def refuse_shadow(ticket: BrokerOrder | BlockOrder) -> None:
    """Raise :class:`ShadowTradeRefused` for an order or block of a shadow instance: a shadow never trades.

    Every adapter calls it before it delivers anything (nothing is counted, placed or recorded).
    """
    if ticket.shadow:
        raise ShadowTradeRefused(f"{_what(ticket)} (key {ticket.idempotency_key}) comes from a shadow instance: "
                                 "a shadow never trades; its definition needs a \"shadow\": \"stop\" before the "
                                 "node that sends orders")


def last_price_from(book: BookReader, as_of: date | None = None) -> Callable[[str], float | None]:
    """A ``last_price`` for :class:`SimulatedBrokerage` that reads the book's prices.

    ``as_of`` fixes the pricing date; by default each lookup uses the current UTC date.
    """

    def lookup(symbol: str) -> float | None:
        return book.get_prices([symbol], as_of or datetime.now(UTC).date()).get(symbol)

    return lookup


@runtime_checkable
class Brokerage(Protocol):
    """Places orders, at most once per idempotency key."""

    def submit(self, order: BrokerOrder) -> BrokerReceipt:
        """Place ``order`` (or return the receipt of the order already placed under its key)."""
        ...

    def submit_block(self, block: BlockOrder) -> BlockReceipt:
        """Place ``block`` (or return the receipt of the block already placed under its key)."""
        ...


class SimulatedBrokerage:
    """A :class:`Brokerage` on Redis that fills at the last price and counts every delivery.

    Fault hooks for tests: with probability ``fail_before_accept`` a submit raises
    :class:`BrokerageTimeout` before reaching the brokerage (nothing recorded); with probability
    ``fail_after_accept`` it raises after the order was recorded — "accepted, but the caller
    never heard back". Both are plain attributes, so a test can switch them between calls.
    """

    def __init__(
        self,
        client: Any,
        prefix: str = "pm:broker:",
        last_price: Callable[[str], float | None] | None = None,
        fail_before_accept: float = 0.0,
        fail_after_accept: float = 0.0,
        fault_seed: int | None = None,
        retention_seconds: float | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.space = KeySpace(prefix)
        #: Seconds a receipt and a delivery are kept (None: forever).
        self.retention_seconds = retention_seconds
        self._trim = client.register_script(read_lua(__file__, "trim_brokerage.lua"))
        self._trimmed_at = float("-inf")
        self.last_price = last_price
        self.fail_before_accept = fail_before_accept
        self.fail_after_accept = fail_after_accept
        self._rng = random.Random(fault_seed)

    def __repr__(self) -> str:
        return f"SimulatedBrokerage(prefix={self.prefix!r})"

    @property
    def received_key(self) -> str:
        """List of every order delivered."""
        return self.space.key("received")

    @property
    def orders_key(self) -> str:
        """Hash of idempotency key -> receipt."""
        return self.space.key("orders")

    def _fault(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    def _answer(self, order: BrokerOrder) -> BrokerReceipt:
        price = self.last_price(order.symbol) if self.last_price else None
        price = price or order.est_price or order.limit_price
        status, reason = OrderStatus.FILLED, ""
        if price is None:
            status, reason = OrderStatus.REJECTED, f"no price for {order.symbol}"
        elif order.limit_price is not None and (
            (order.side is Side.BUY and price > order.limit_price)
            or (order.side is Side.SELL and price < order.limit_price)
        ):
            status, reason = OrderStatus.REJECTED, f"limit {order.limit_price} not met by last price {price}"
        filled = status is OrderStatus.FILLED
        return BrokerReceipt(
            order_id=f"SIM-{uuid.uuid4().hex[:16]}",
            idempotency_key=order.idempotency_key,
            account_id=order.account_id,
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            status=status,
            fill_price=price if filled else None,
            filled_value=round(price * order.quantity, 2) if filled and price else None,
            reason=reason,
            accepted_at=datetime.now(UTC),
        )

    def _place(self, ticket: BrokerOrder | BlockOrder, answer: Callable[[], Receipt], received_key: str,
               receipts_key: str) -> Receipt:
        """Deliver ``ticket`` (an order or a block) and place it once per idempotency key; its receipt.

        One ``MULTI``/``EXEC``: the delivery is counted in ``received_key`` and ``answer()``
        recorded in ``receipts_key`` unless the key already has a receipt; the stored one is
        returned. Raises DuplicateOrder when the key names another ticket, and BrokerageTimeout
        at the fault hooks' odds.
        """
        key, kind = ticket.idempotency_key, "block" if isinstance(ticket, BlockOrder) else "order"
        refuse_shadow(ticket)
        if self._fault(self.fail_before_accept):
            raise BrokerageTimeout(f"{kind} {key}: no answer (simulated, not delivered)")
        candidate = answer()
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(received_key, ticket.model_dump_json())
        pipe.hsetnx(receipts_key, key, candidate.model_dump_json())
        pipe.hget(receipts_key, key)
        if self.retention_seconds is not None:
            now = time.time()
            pipe.rpush(f"{received_key}:at", repr(now))
            pipe.zadd(f"{receipts_key}:at", {key: now}, nx=True)
            for record in (received_key, receipts_key, f"{received_key}:at", f"{receipts_key}:at"):
                pipe.expire(record, max(1, int(self.retention_seconds)))  # all of it, a retention after the last
        stored = pipe.execute()[2]
        self.trim()
        receipt = type(candidate).model_validate_json(stored)
        if not receipt.matches(ticket):  # type: ignore[arg-type]  # a receipt answers tickets of its own kind
            used = f"the block {_what(receipt)}" if kind == "block" else _what(receipt)
            raise DuplicateOrder(f"idempotency key {key!r} was used for {used} (order {receipt.order_id}), "
                                 f"not {_what(ticket)}")
        if self._fault(self.fail_after_accept):
            raise BrokerageTimeout(f"{kind} {key}: no answer (simulated; the brokerage did record it)")
        return receipt

    def trim(self, now: float | None = None, every: float = 1.0) -> int:
        """Drop the receipts and deliveries older than the retention (at most once per ``every`` s); how many."""
        mono = time.monotonic()
        if self.retention_seconds is None or mono - self._trimmed_at < every:
            return 0
        self._trimmed_at = mono
        cutoff = (time.time() if now is None else now) - self.retention_seconds
        keys = [self.orders_key, f"{self.orders_key}:at", self.blocks_key, f"{self.blocks_key}:at",
                self.received_key, f"{self.received_key}:at", self.blocks_received_key,
                f"{self.blocks_received_key}:at"]
        return int(self._trim(keys=keys, args=[2, repr(cutoff), 1000]))

    def submit(self, order: BrokerOrder) -> BrokerReceipt:
        """Place ``order`` once per key; raises DuplicateOrder when the key names another order."""
        return self._place(order, lambda: self._answer(order), self.received_key, self.orders_key)

    @property
    def blocks_key(self) -> str:
        """Hash of block idempotency key -> block receipt."""
        return self.space.key("blocks")

    @property
    def blocks_received_key(self) -> str:
        """List of every block delivered."""
        return self.space.key("blocks:received")

    def set_liquidity(self, symbol: str, quantity: float | None) -> None:
        """A block of ``symbol`` fills at most ``quantity`` (None: no limit) -- how a partial fill is simulated."""
        if quantity is None:
            self.client.hdel(self.space.key("liquidity"), symbol)
        else:
            self.client.hset(self.space.key("liquidity"), symbol, repr(float(quantity)))

    def halt(self, symbol: str, reason: str | None = "trading halted") -> None:
        """Blocks of ``symbol`` are rejected with ``reason`` (None: trading resumes)."""
        if reason is None:
            self.client.hdel(self.space.key("halted"), symbol)
        else:
            self.client.hset(self.space.key("halted"), symbol, reason)

    def _block_answer(self, block: BlockOrder) -> BlockReceipt:
        halted = self.client.hget(self.space.key("halted"), block.symbol)
        limit = self.client.hget(self.space.key("liquidity"), block.symbol)
        price = self.last_price(block.symbol) if self.last_price else None
        price = price or block.est_price
        filled, status, reason = block.quantity, OrderStatus.FILLED, ""
        if halted is not None:
            filled, status = 0.0, OrderStatus.REJECTED
            reason = f"{block.symbol}: {halted.decode() if isinstance(halted, bytes) else halted}"
        elif price is None:
            filled, status, reason = 0.0, OrderStatus.REJECTED, f"no price for {block.symbol}"
        elif limit is not None and float(limit) < block.quantity:
            # a block of whole shares fills in whole shares
            filled = float(limit) if block.quantity != int(block.quantity) else float(int(float(limit)))
            status = OrderStatus.PARTIALLY_FILLED
            reason = f"liquidity: {float(limit):g} of {block.quantity:g} filled"
            if filled <= 0:
                filled, status = 0.0, OrderStatus.REJECTED
        done = status is not OrderStatus.REJECTED
        return BlockReceipt(order_id=f"SIMB-{uuid.uuid4().hex[:16]}", idempotency_key=block.idempotency_key,
                            symbol=block.symbol, side=block.side, quantity=block.quantity, filled_quantity=filled,
                            status=status, avg_price=price if done else None,
                            filled_value=round(price * filled, 2) if done and price else None, reason=reason,
                            accepted_at=datetime.now(UTC))

    def submit_block(self, block: BlockOrder) -> BlockReceipt:
        """Place ``block`` once per key; raises DuplicateOrder when the key names another block."""
        return self._place(block, lambda: self._block_answer(block), self.blocks_received_key, self.blocks_key)

    def accepted_blocks(self) -> list[BlockReceipt]:
        """Every block taken (one per key), in order of acceptance."""
        receipts = [BlockReceipt.model_validate_json(raw) for raw in self.client.hvals(self.blocks_key)]
        return sorted(receipts, key=lambda r: (r.accepted_at, r.order_id))

    def received_block_count(self) -> int:
        """How many block submits reached the brokerage (duplicates included)."""
        return int(self.client.llen(self.blocks_received_key))

    def get_receipt(self, idempotency_key: str) -> BrokerReceipt | None:
        """The receipt recorded under ``idempotency_key``, if any."""
        raw = self.client.hget(self.orders_key, idempotency_key)
        return BrokerReceipt.model_validate_json(raw) if raw is not None else None

    def accepted_orders(self) -> list[BrokerReceipt]:
        """Every order taken (one per key), in order of acceptance."""
        receipts = [BrokerReceipt.model_validate_json(raw) for raw in self.client.hvals(self.orders_key)]
        return sorted(receipts, key=lambda r: (r.accepted_at, r.order_id))

    def received_orders(self) -> list[BrokerOrder]:
        """Every order delivered, duplicates included, in order of arrival."""
        return [BrokerOrder.model_validate_json(raw) for raw in self.client.lrange(self.received_key, 0, -1)]

    def received_count(self) -> int:
        """How many submits reached the brokerage (duplicates included)."""
        return int(self.client.llen(self.received_key))

    def clear(self) -> None:
        """Delete this brokerage's keys (and nothing else)."""
        records = (self.received_key, self.orders_key, self.blocks_key, self.blocks_received_key)
        self.client.delete(*records, *(f"{key}:at" for key in records),
                           self.space.key("liquidity"), self.space.key("halted"))


__all__ = ["BlockOrder", "BlockReceipt", "Brokerage", "BrokerOrder", "BrokerReceipt", "OrderStatus",
           "SimulatedBrokerage", "last_price_from"]
