"""Step 2, tax-loss harvesting, and the buy restrictions of the loss-denial rules.

Canada's superficial-loss rule and the US wash-sale rule are applied alike: a window of
``wash_days`` before as_of, both ends included, over the trades of this account and of
every linked account in ``trade_history``; a symbol's identical group shares its fate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from order_calc import lots
from order_calc.models import Order, Restriction, Trade
from order_calc.numeric import affordable
from order_calc.valuation import Book, HeldLot


@dataclass
class Harvests:
    """The orders and diagnostics of step 2."""

    sells: list[Order] = field(default_factory=list)
    buys: list[Order] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)


def in_window(day: date, book: Book) -> bool:
    """True when ``day`` lies in [as_of - wash_days, as_of], both ends included."""
    return book.as_of - timedelta(days=book.params.wash_days) <= day <= book.as_of


def apply_history_restrictions(book: Book, history: list[Trade]) -> None:
    """A ``SELL`` with ``realized_loss`` in the window restricts buying until its date + wash_days.

    Applies in every account type, whether TLH is enabled or not.
    """
    for trade in history:
        if trade.side == "SELL" and trade.realized_loss and in_window(trade.date, book):
            book.restrict(trade.symbol, trade.date + timedelta(days=book.params.wash_days))


def wash_sale_blocked(book: Book, history: list[Trade], symbol: str) -> bool:
    """True when any account bought ``symbol`` or an identical symbol within the window.

    A replacement bought earlier in this plan that is identical to ``symbol`` blocks too:
    it is a buy dated as_of, inside the window.
    """
    group = book.group(symbol)
    if group & book.bought:
        return True
    return any(t.side == "BUY" and t.symbol in group and in_window(t.date, book) for t in history)


def restriction_list(book: Book) -> list[Restriction]:
    """Every restriction that ends after as_of, sorted by symbol then date (duplicates merged)."""
    pairs = sorted((sym, until) for sym, dates in book.restrictions.items() for until in dates if until > book.as_of)
    return [Restriction(symbol=s, until=u) for s, u in pairs]


def _loss(book: Book, symbol: str) -> tuple[list[HeldLot], float, float]:
    """The lots a harvest of ``symbol`` sells, the loss and the cost basis the loss% is taken on.

    US: the lots whose cost per share exceeds the price. CA: the whole position at its ACB.
    """
    price = book.prices[symbol]
    held = book.lots[symbol]
    chosen = held if book.region == "CA" else [x for x in held if x.cost_per_share > price]
    basis = sum(x.cost for x in chosen)
    loss = basis - sum(x.quantity for x in chosen) * price
    return chosen, loss, basis


def _replacement(book: Book, symbol: str) -> str | None:
    """The first security of the sleeve that is not ``symbol``, not identical and not restricted."""
    group = book.group(symbol)
    k = book.position[symbol][0]
    for sym in book.sleeves[k].securities:
        if sym != symbol and sym not in group and not book.is_restricted(sym):
            return sym
    return None


def harvest(book: Book, history: list[Trade], enabled: bool) -> Harvests:
    """Harvest tax losses (step 2), changing ``book`` as the orders would.

    A harvest also needs a replacement quantity > 0: a replacement priced above the
    proceeds is skipped with ``TLH_SKIPPED_MIN_VALUE`` even when ``min_trade_value`` is 0.
    Several harvests buying the same replacement make one TLH buy order (one ``NEW-<SYM>`` lot).
    """
    out = Harvests()
    if not enabled:
        return out
    if not book.taxable:
        out.diagnostics.append("TLH_SKIPPED_ACCOUNT_TYPE")
        return out
    params = book.params
    buys: dict[str, float] = {}
    for sleeve in book.sleeves:
        if len(sleeve.securities) < 2:
            continue
        for symbol in sleeve.securities:
            if symbol not in book.lots or symbol in book.bought:
                continue
            chosen, loss, basis = _loss(book, symbol)
            if not chosen or basis <= 0 or loss <= 0:
                continue
            if loss < params.tlh_min_loss_value or loss / basis < params.tlh_min_loss_pct:  # type: ignore[operator]
                continue
            if wash_sale_blocked(book, history, symbol):
                out.diagnostics.append(f"TLH_BLOCKED_WASH_SALE {symbol}")
                continue
            repl = _replacement(book, symbol)
            if repl is None:
                out.diagnostics.append(f"TLH_NO_REPLACEMENT {symbol}")
                continue
            price, repl_price = book.prices[symbol], book.price(repl)
            quantity = sum(x.quantity for x in chosen)
            proceeds = quantity * price
            repl_q = affordable(proceeds, repl_price, params.fractional)
            if repl_q <= 0 or repl_q * repl_price < params.min_trade_value:
                out.diagnostics.append(f"TLH_SKIPPED_MIN_VALUE {symbol}")
                continue
            fills = lots.sell_lots(book, symbol, list(chosen))
            out.sells.append(Order(side="SELL", symbol=symbol, quantity=quantity, reason="TLH",
                                   est_value=proceeds, lots=fills))
            book.cash += proceeds - repl_q * repl_price
            book.add_lot(repl, HeldLot(f"NEW-{repl}", repl_q, repl_q * repl_price, book.as_of))
            book.bought.add(repl)
            book.sold.add(symbol)
            book.restrict(symbol, book.as_of + timedelta(days=params.wash_days))
            buys[repl] = buys.get(repl, 0.0) + repl_q
    for sym in sorted(buys, key=lambda s: book.position[s]):
        q = buys[sym]
        out.buys.append(Order(side="BUY", symbol=sym, quantity=q, reason="TLH", est_value=q * book.prices[sym]))
    return out
