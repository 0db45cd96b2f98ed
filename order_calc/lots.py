"""Step 6, lot selection: which lots a sell consumes and the gain it realises.

US ``TAXABLE`` accounts report every lot a sell touches, with its term; CA
``NON_REGISTERED`` accounts report one ``ACB`` entry (average cost per share of the whole
position, no term); other account types report no lots. A sell always reduces the
working holdings, whatever the account type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date

from order_calc.models import LotFill
from order_calc.valuation import Book, HeldLot

_SMALL = 1e-9  # a lot with less left than this (after a float subtraction) is used up


def anniversary(acquired: date) -> date:
    """The day a lot turns one year old; a lot bought on Feb 29 turns one year old on Feb 28."""
    try:
        return acquired.replace(year=acquired.year + 1)
    except ValueError:  # Feb 29 -> Feb 28 of the next year
        return date(acquired.year + 1, 2, 28)


def term(acquired: date, as_of: date) -> str:
    """``LT`` when as_of > acquired + 1 year, else ``ST``."""
    return "LT" if as_of > anniversary(acquired) else "ST"


def _tax_min_key(price: float, as_of: date) -> Callable[[HeldLot], tuple[int, float, date, str]]:
    """ST losses (largest loss/share first), LT losses, LT gains (smallest gain/share first), ST gains.

    Within each category gain per share ascends, which is "largest loss first" for losses and
    "smallest gain first" for gains; ties go to the earliest date, then the lot id. A zero gain
    is a gain.
    """

    def key(lot: HeldLot) -> tuple[int, float, date, str]:
        gain = price - lot.cost_per_share
        long = term(lot.acquired, as_of) == "LT"
        category = (1 if long else 0) if gain < 0 else (2 if long else 3)
        return (category, gain, lot.acquired, lot.lot_id)

    return key


def order_lots(lots: Iterable[HeldLot], method: str, price: float, as_of: date) -> list[HeldLot]:
    """Lots in the order a sell consumes them under ``method`` (``TAX_MIN``, ``HIFO`` or ``FIFO``).

    HIFO: highest cost per share first; FIFO: oldest first. Ties in both go to the earliest
    ``acquired_date``, then the lot id.
    """
    if method == "TAX_MIN":
        return sorted(lots, key=_tax_min_key(price, as_of))
    if method == "HIFO":
        return sorted(lots, key=lambda x: (-x.cost_per_share, x.acquired, x.lot_id))
    return sorted(lots, key=lambda x: (x.acquired, x.lot_id))


def _take(lot: HeldLot, quantity: float) -> float:
    """Remove ``quantity`` from ``lot``; return the cost removed."""
    if quantity >= lot.quantity - _SMALL:
        cost, lot.quantity, lot.cost = lot.cost, 0.0, 0.0
        return cost
    cost = lot.cost * quantity / lot.quantity
    lot.quantity -= quantity
    lot.cost -= cost
    return cost


def _prune(book: Book, symbol: str) -> None:
    left = [x for x in book.lots.get(symbol, ()) if x.quantity > _SMALL]
    if left:
        book.lots[symbol] = left
    else:
        book.lots.pop(symbol, None)


def _sell_in_order(book: Book, symbol: str, quantity: float, ordered: list[HeldLot]) -> list[LotFill]:
    price = book.prices[symbol]
    fills: list[LotFill] = []
    left = quantity
    for lot in ordered:
        if left <= _SMALL:
            break
        q = min(left, lot.quantity)
        lot_term = term(lot.acquired, book.as_of)
        cost = _take(lot, q)
        fills.append(LotFill(lot_id=lot.lot_id, quantity=q, realized_gain=q * price - cost, term=lot_term))
        left -= q
    _prune(book, symbol)
    return fills


def _sell_acb(book: Book, symbol: str, quantity: float) -> list[LotFill]:
    held = book.lots[symbol]
    total_q = sum(x.quantity for x in held)
    total_cost = sum(x.cost for x in held)
    acb = total_cost / total_q
    share = min(1.0, quantity / total_q)
    for lot in held:  # proportional: the remaining position keeps the same ACB per share
        lot.cost -= lot.cost * share
        lot.quantity -= lot.quantity * share
    _prune(book, symbol)
    return [LotFill(lot_id="ACB", quantity=quantity, realized_gain=quantity * (book.prices[symbol] - acb))]


def sell(book: Book, symbol: str, quantity: float) -> list[LotFill] | None:
    """Sell ``quantity`` of ``symbol`` from the book; the lot report for the order, or None.

    US ``TAXABLE``: lots in ``lot_method`` order. CA ``NON_REGISTERED``: one ``ACB`` entry.
    Other types: ``None`` (the holding is still reduced, oldest lots first).
    """
    held = book.lots.get(symbol, [])
    if book.taxable and book.region == "CA":
        return _sell_acb(book, symbol, quantity)
    method = book.params.lot_method if book.taxable else "FIFO"
    fills = _sell_in_order(book, symbol, quantity, order_lots(held, method, book.prices[symbol], book.as_of))
    return fills if book.taxable else None


def sell_lots(book: Book, symbol: str, chosen: list[HeldLot]) -> list[LotFill] | None:
    """Sell exactly the lots ``chosen``, in the order given (a harvest).

    A US harvest sells its loss lots, reported one by one; a CA harvest sells the whole
    position, reported as one ``ACB`` entry.
    """
    quantity = sum(x.quantity for x in chosen)
    if book.taxable and book.region == "CA":
        return _sell_acb(book, symbol, quantity)
    fills = _sell_in_order(book, symbol, quantity, chosen)
    return fills if book.taxable else None
