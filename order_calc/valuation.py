"""Step 1, valuation, and the working state ("book") the later steps read and change.

V = Σ quantity * price + cash; sleeve target T_k = target_weight_k * V * (1 - cash_reserve_pct);
a sleeve's value counts every security in its list. Holdings of symbols that are in no
sleeve count in V but belong to no sleeve and are never traded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np

from order_calc.errors import InvalidRequest
from order_calc.models import Parameters, PlanRequest


@dataclass
class HeldLot:
    """A lot in the working state (mutable: sells reduce ``quantity`` and ``cost``)."""

    lot_id: str
    quantity: float
    cost: float
    acquired: date

    @property
    def cost_per_share(self) -> float:
        """Total cost divided by quantity."""
        return self.cost / self.quantity


@dataclass(frozen=True)
class SleeveInfo:
    """A sleeve as the solvers see it: index, id, weight and ordered securities."""

    index: int
    id: str
    weight: float
    securities: tuple[str, ...]


@dataclass
class Book:
    """Holdings, cash and plan-wide facts, updated as the plan's steps trade."""

    as_of: date
    region: str
    taxable: bool
    params: Parameters
    prices: dict[str, float]
    sleeves: list[SleeveInfo]
    #: symbol -> (sleeve index, position in the sleeve's securities)
    position: dict[str, tuple[int, int]]
    lots: dict[str, list[HeldLot]]
    cash: float
    total_value: float
    targets: np.ndarray
    #: symbol -> the other symbols identical to it (its own group, itself included)
    identical: dict[str, frozenset[str]]
    #: symbol -> every date through which buying it is restricted
    restrictions: dict[str, set[date]] = field(default_factory=dict)
    bought: set[str] = field(default_factory=set)
    sold: set[str] = field(default_factory=set)

    @classmethod
    def from_request(cls, req: PlanRequest) -> Book:
        """Value the account (step 1) and set up the working state."""
        prices = {s: p for s, p in req.prices.items() if req.has_price(s)}
        sleeves = [SleeveInfo(k, s.id, s.target_weight, tuple(s.securities)) for k, s in enumerate(req.sleeves)]
        position = {sym: (s.index, j) for s in sleeves for j, sym in enumerate(s.securities)}
        lots: dict[str, list[HeldLot]] = {}
        for lot in req.lots:
            lots.setdefault(lot.symbol, []).append(
                HeldLot(lot.lot_id, lot.quantity, lot.cost_basis, lot.acquired_date)
            )
        held_value = sum(sum(x.quantity for x in ls) * prices[sym] for sym, ls in lots.items())
        total = held_value + req.cash
        weights = np.fromiter((s.weight for s in sleeves), dtype=float, count=len(sleeves))
        targets = weights * total * (1.0 - req.parameters.cash_reserve_pct)
        identical: dict[str, set[str]] = {}
        for group in req.identical_groups:
            for sym in group:
                identical.setdefault(sym, {sym}).update(group)
        return cls(
            as_of=req.as_of,
            region=req.account.region,
            taxable=req.account.taxable,
            params=req.parameters,
            prices=prices,
            sleeves=sleeves,
            position=position,
            lots=lots,
            cash=req.cash,
            total_value=total,
            targets=targets,
            identical={s: frozenset(g) for s, g in identical.items()},
        )

    # ------------------------------------------------------------------ reading

    def holding(self, symbol: str) -> float:
        """Quantity of ``symbol`` held now."""
        return sum(x.quantity for x in self.lots.get(symbol, ()))

    def price(self, symbol: str) -> float:
        """The price of ``symbol``; a missing price of a security the plan buys is invalid input."""
        p = self.prices.get(symbol)
        if p is None:
            raise InvalidRequest.one(f"prices.{symbol}", f"missing price > 0 for {symbol}, which this plan buys")
        return p

    def group(self, symbol: str) -> frozenset[str]:
        """``symbol`` and every symbol identical to it."""
        return self.identical.get(symbol) or frozenset((symbol,))

    def is_restricted(self, symbol: str) -> bool:
        """True when buying ``symbol`` is restricted today."""
        return symbol in self.restrictions

    def sleeve_values(self) -> np.ndarray:
        """Current value of every sleeve, in sleeve order."""
        values = np.zeros(len(self.sleeves))
        for sym, ls in self.lots.items():
            pos = self.position.get(sym)
            if pos is not None:
                values[pos[0]] += sum(x.quantity for x in ls) * self.prices[sym]
        return values

    def buy_security(self, k: int) -> str | None:
        """The security sleeve ``k`` buys: its first one that is not restricted (None if all are)."""
        for sym in self.sleeves[k].securities:
            if not self.is_restricted(sym):
                return sym
        return None

    # ------------------------------------------------------------------ changing

    def restrict(self, symbol: str, until: date) -> None:
        """Restrict buying ``symbol`` and its identical group through ``until``."""
        for sym in self.group(symbol):
            self.restrictions.setdefault(sym, set()).add(until)

    def add_lot(self, symbol: str, lot: HeldLot) -> None:
        """Add a lot bought in this plan (merged with an earlier one of the same id)."""
        held = self.lots.setdefault(symbol, [])
        for existing in held:
            if existing.lot_id == lot.lot_id:
                existing.quantity += lot.quantity
                existing.cost += lot.cost
                return
        held.append(lot)


def decide_mode(book: Book) -> str:
    """Step 3, taken on the holdings after the harvests: ``REBALANCE``, ``CASH_INVEST`` or ``NONE``.

    ``REBALANCE`` if any sleeve has |value_k - T_k| / V > drift_band_abs, or, with
    drift_band_rel set, |value_k - T_k| > drift_band_rel * T_k. Else ``CASH_INVEST`` if
    cash - cash_reserve_pct * V ≥ min_trade_value. Else ``NONE``. An empty account (V = 0)
    is ``NONE``.
    """
    params, total = book.params, book.total_value
    if total <= 0:
        return "NONE"
    drift = np.abs(book.sleeve_values() - book.targets)
    if bool((drift / total > params.drift_band_abs).any()):
        return "REBALANCE"
    if params.drift_band_rel is not None and bool((drift > params.drift_band_rel * book.targets).any()):
        return "REBALANCE"
    if book.cash - params.cash_reserve_pct * total >= params.min_trade_value:
        return "CASH_INVEST"
    return "NONE"
