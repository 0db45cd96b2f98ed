"""``tradeflow pm diff RUN_A RUN_B``: what two runs of the morning would trade, account by account.

Both runs are read from the engine (:meth:`engine.api.Engine.run_values`: pipelined batches, a
few hash fields per instance), so a production run, a shadow run or a past run compare alike.
Each account's **outcome** is read from its instance:

- ``proposed``: the order calculation planned orders (the proposal, reviewed or not);
- ``nothing_to_do``: it planned none -- an empty plan;
- ``failed``: the instance failed (or the account was closed), with the reason;
- ``pending`` (not planned yet) or ``cancelled``.

Per account: the orders added, removed and changed (symbol, side, quantity), the traded value,
the realized gains and TLH harvests, the cash left, the drift after the trades against the
target (``order_calc.drift``), and whether the outcome changed. Accounts are ``equal`` when both
outcomes and both order lists are the same (so a shadow of the same version on the same book is
all ``equal``), ``changed`` otherwise, or ``only_a``/``only_b``. The list comes biggest change
first: by the value of the orders that differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.api import Engine

#: What each instance is read for.
PATHS = ("data.account_id", "status", "error", "result", "context.calculate")
#: Quantities closer than this are the same quantity.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Plan:
    """One account's outcome in one run, and its orders (empty unless proposed)."""

    outcome: str
    reason: str = ""
    #: (symbol, side) -> (quantity, estimated value)
    orders: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    traded_value: float = 0.0
    realized_gain: float = 0.0
    tlh_harvests: int = 0
    cash_after: float | None = None
    drift_after: float | None = None

    @classmethod
    def read(cls, status: str | None, error: Any, result: Any, calculate: Any) -> Plan:
        """The plan an instance's fields describe (see the module docstring for the outcomes)."""
        if status == "failed":
            reason = (error or {}).get("reason") if isinstance(error, dict) else None
            if not reason and isinstance(result, dict):
                reason = result.get("reason") or result.get("outcome")
            return cls("failed", str(reason or "failed"))
        if not isinstance(calculate, dict):
            return cls("cancelled" if status == "cancelled" else "pending")
        orders: dict[tuple[str, str], tuple[float, float]] = {}
        gain = 0.0
        for order in calculate.get("orders") or []:
            key = (str(order["symbol"]), str(order["side"]))
            quantity, value = orders.get(key, (0.0, 0.0))
            orders[key] = (quantity + float(order["quantity"]), value + float(order.get("est_value") or 0.0))
            gain += sum(float(lot.get("realized_gain") or 0.0) for lot in order.get("lots") or [])
        return cls("proposed" if orders else "nothing_to_do", orders=orders,
                   traded_value=round(sum(v for _, v in orders.values()), 2), realized_gain=round(gain, 2),
                   tlh_harvests=int(calculate.get("tlh_harvests") or 0),
                   cash_after=_round(calculate.get("cash_after")), drift_after=_round(calculate.get("drift_after"), 6))


def _round(value: Any, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class OrderChange:
    """One (symbol, side) whose quantity differs: absent on one side (added/removed) or changed."""

    symbol: str
    side: str
    a: float
    b: float
    value: float

    def to_dict(self) -> dict[str, Any]:
        """``{"symbol", "side", "a", "b"}`` (quantities; 0 where absent)."""
        return {"symbol": self.symbol, "side": self.side, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class AccountDiff:
    """One account compared between the two runs."""

    account_id: str
    change: str
    a: Plan | None
    b: Plan | None
    added: list[OrderChange] = field(default_factory=list)
    removed: list[OrderChange] = field(default_factory=list)
    changed: list[OrderChange] = field(default_factory=list)

    @property
    def outcome_changed(self) -> bool:
        """True when both runs have the account and its outcome differs."""
        return self.a is not None and self.b is not None and self.a.outcome != self.b.outcome

    @property
    def size(self) -> float:
        """How big the change is: the estimated value of the orders that differ."""
        return round(sum(c.value for c in (*self.added, *self.removed, *self.changed)), 2)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of one account (see :meth:`PmDiff.to_dict`)."""
        out: dict[str, Any] = {"account_id": self.account_id, "change": self.change, "size": self.size,
                               "outcome": {"a": self.a.outcome if self.a else None,
                                           "b": self.b.outcome if self.b else None}}
        if self.a and self.a.reason:
            out["outcome"]["reason_a"] = self.a.reason
        if self.b and self.b.reason:
            out["outcome"]["reason_b"] = self.b.reason
        out["outcome_changed"] = self.outcome_changed
        out["orders"] = {"added": [c.to_dict() for c in self.added], "removed": [c.to_dict() for c in self.removed],
                         "changed": [c.to_dict() for c in self.changed]}
        for name in ("traded_value", "realized_gain", "tlh_harvests", "cash_after", "drift_after"):
            out[name] = {"a": getattr(self.a, name) if self.a else None, "b": getattr(self.b, name) if self.b else None}
        return out


def compare_plans(account_id: str, a: Plan | None, b: Plan | None) -> AccountDiff:
    """One account's diff (pure)."""
    if a is None or b is None:
        return AccountDiff(account_id, "only_b" if a is None else "only_a", a, b)
    added, removed, changed = [], [], []
    for key in sorted(set(a.orders) | set(b.orders)):
        qa, va = a.orders.get(key, (0.0, 0.0))
        qb, vb = b.orders.get(key, (0.0, 0.0))
        if abs(qa - qb) <= _EPSILON:
            continue
        change = OrderChange(key[0], key[1], round(qa, 6), round(qb, 6), round(abs(vb - va), 2))
        (added if key not in a.orders else removed if key not in b.orders else changed).append(change)
    same = a.outcome == b.outcome and a.reason == b.reason and not (added or removed or changed)
    return AccountDiff(account_id, "equal" if same else "changed", a, b, added, removed, changed)


@dataclass(frozen=True)
class PmDiff:
    """Two runs of the morning compared account by account (:func:`diff_runs`)."""

    a: str
    b: str
    accounts: list[AccountDiff]

    def summary(self) -> dict[str, int]:
        """How many accounts, how many of each change, and how many changed outcome."""
        counts = dict.fromkeys(("equal", "changed", "only_a", "only_b"), 0)
        for item in self.accounts:
            counts[item.change] += 1
        return {"accounts": len(self.accounts), **counts,
                "outcome_changed": sum(1 for item in self.accounts if item.outcome_changed)}

    def totals(self) -> dict[str, Any]:
        """Every account added up: order changes, and each measure in A and in B."""
        out: dict[str, Any] = {
            "orders_added": sum(len(i.added) for i in self.accounts),
            "orders_removed": sum(len(i.removed) for i in self.accounts),
            "orders_changed": sum(len(i.changed) for i in self.accounts),
            "orders": {"a": sum(len(i.a.orders) for i in self.accounts if i.a),
                       "b": sum(len(i.b.orders) for i in self.accounts if i.b)},
        }
        for name in ("traded_value", "realized_gain", "tlh_harvests", "cash_after"):
            out[name] = {side: round(sum(getattr(p, name) or 0 for p in self._plans(side)), 2) for side in "ab"}
        for side_name in "ab":
            drifts = [p.drift_after for p in self._plans(side_name) if p.drift_after is not None]
            out.setdefault("drift_after_mean", {})[side_name] = round(sum(drifts) / len(drifts), 6) if drifts else None
            out.setdefault("drift_after_max", {})[side_name] = max(drifts) if drifts else None
        moves: dict[str, int] = {}
        for item in self.accounts:
            if item.outcome_changed and item.a and item.b:
                label = f"{item.a.outcome} -> {item.b.outcome}"
                moves[label] = moves.get(label, 0) + 1
        out["outcomes"] = {side: _count(p.outcome for p in self._plans(side)) for side in "ab"}
        out["outcome_changes"] = dict(sorted(moves.items()))
        return out

    def _plans(self, side: str) -> Iterator[Plan]:
        for item in self.accounts:
            plan = item.a if side == "a" else item.b
            if plan is not None:
                yield plan

    def to_dict(self) -> dict[str, Any]:
        """``{"a", "b", "summary": {"accounts", "equal", "changed", "only_a", "only_b", "outcome_changed"},
        "totals": {...}, "accounts": [{"account_id", "change", "size", "outcome", "orders": {"added",
        "removed", "changed"}, "traded_value": {"a", "b"}, ...}]}``, biggest change first."""
        return {"a": self.a, "b": self.b, "summary": self.summary(), "totals": self.totals(),
                "accounts": [item.to_dict() for item in self.accounts]}


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items()))


_ORDER = {"changed": 0, "only_a": 1, "only_b": 1, "equal": 2}


def compare_runs(a: str, b: str, left: dict[str, Plan], right: dict[str, Plan]) -> PmDiff:
    """The diff of two runs' plans by account (pure): biggest change first, then by account id."""
    items = [compare_plans(account, left.get(account), right.get(account)) for account in set(left) | set(right)]
    items.sort(key=lambda i: (_ORDER[i.change], -i.size, i.account_id))
    return PmDiff(a, b, items)


def read_plans(engine: Engine, run: str) -> dict[str, Plan]:
    """Account id -> its plan in ``run`` (read in pipelined batches)."""
    out: dict[str, Plan] = {}
    for _iid, (account_id, status, error, result, calculate) in engine.run_values(run, PATHS):
        if account_id is not None:
            out[str(account_id)] = Plan.read(status, error, result, calculate)
    return out


def diff_runs(engine: Engine, a: str, b: str) -> PmDiff:
    """What runs ``a`` and ``b`` trade, account by account (NotFound when a run does not exist)."""
    for run in (a, b):
        engine.progress(run)
    return compare_runs(a, b, read_plans(engine, a), read_plans(engine, b))


__all__ = ["AccountDiff", "OrderChange", "PATHS", "Plan", "PmDiff", "compare_plans", "compare_runs", "diff_runs",
           "read_plans"]
