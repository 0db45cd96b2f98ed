"""Request and plan models: the JSON contract of ``plan_orders`` as pydantic models.

Validation errors name the field with a path such as ``lots[2].quantity``; see
:func:`parse_request`, which turns every problem into an :class:`InvalidRequest`.
The plan models keep money unrounded; it is rounded to cents only when dumped.
"""

from __future__ import annotations

import difflib
import math
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from order_calc import defaults
from order_calc.errors import FieldProblem, InvalidRequest
from order_calc.numeric import cents, out_quantity

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"not a date: {value!r} (expected YYYY-MM-DD)")


IsoDate = Annotated[date, BeforeValidator(_parse_date)]


def _choice(kind: str, allowed: tuple[str, ...]) -> BeforeValidator:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {kind} {value!r} (expected one of {', '.join(allowed)})")
        return str(value)

    return BeforeValidator(check)


Region = Annotated[Literal["CA", "US"], _choice("region", defaults.REGIONS)]
LotMethod = Annotated[Literal["TAX_MIN", "HIFO", "FIFO"], _choice("lot_method", defaults.LOT_METHODS)]
Solver = Annotated[Literal["milp", "greedy"], _choice("solver", defaults.SOLVERS)]
Side = Annotated[Literal["BUY", "SELL"], _choice("side", defaults.SIDES)]


class _Strict(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)


def _problem(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("order_calc_field", "{field}: {message}", {"field": field, "message": message})


# --------------------------------------------------------------------------- request


class Account(_Strict):
    """The account: its region and type decide the tax rules (TLH, lots, wash sales)."""

    id: str
    region: Region
    type: str
    tlh_enabled: bool = False

    @model_validator(mode="after")
    def _type_in_region(self) -> Account:
        allowed = defaults.ACCOUNT_TYPES[self.region]
        if self.type not in allowed:
            raise _problem(
                "type",
                f"unknown account type {self.type!r} for region {self.region} "
                f"(expected one of {', '.join(allowed)})",
            )
        return self

    @property
    def taxable(self) -> bool:
        """True for US ``TAXABLE`` and CA ``NON_REGISTERED``: TLH applies, sells carry lots."""
        return defaults.TAXABLE_TYPES[self.region] == self.type


class Lot(_Strict):
    """One tax lot held: ``cost_basis`` is the lot's total cost."""

    lot_id: str
    symbol: str
    quantity: float
    cost_basis: float
    acquired_date: IsoDate

    @field_validator("quantity")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("cost_basis")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be >= 0")
        return v


class Sleeve(_Strict):
    """A slice of the target mix: primary security first, then alternates for TLH."""

    id: str
    target_weight: float
    securities: list[str] = Field(min_length=1)

    @field_validator("target_weight")
    @classmethod
    def _unit_interval(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("must lie in [0, 1]")
        return v


class Trade(_Strict):
    """One past trade of this account or of a linked (affiliated) account."""

    date: IsoDate
    account_id: str | None = None
    symbol: str
    side: Side
    quantity: float | None = None
    realized_loss: bool = False


class Parameters(_Strict):
    """Planning parameters; any left out (or null) take the contract's default.

    ``tlh_min_loss_pct`` and ``tlh_min_loss_value`` default by region (CA 5% and 500,
    US 5% and 200); :class:`PlanRequest` fills them in. Unknown keys are rejected, so a
    typo cannot silently fall back to a default.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    drift_band_abs: float = defaults.DRIFT_BAND_ABS
    drift_band_rel: float | None = defaults.DRIFT_BAND_REL
    min_trade_value: float = defaults.MIN_TRADE_VALUE
    cash_reserve_pct: float = defaults.CASH_RESERVE_PCT
    fractional: bool = defaults.FRACTIONAL
    tlh_min_loss_pct: float | None = None
    tlh_min_loss_value: float | None = None
    lot_method: LotMethod = defaults.LOT_METHOD
    wash_days: int = defaults.WASH_DAYS
    solver: Solver = defaults.SOLVER

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @field_validator(
        "drift_band_abs", "drift_band_rel", "min_trade_value", "tlh_min_loss_pct", "tlh_min_loss_value",
        "wash_days",
    )
    @classmethod
    def _non_negative(cls, v: float | None) -> float | None:
        if v is not None and v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("cash_reserve_pct")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("must lie in [0, 1]")
        return v


class PlanRequest(_Strict):
    """One account's planning request for one trading day (see ORDER_CALC.md, "Request").

    Cross-field rules checked here: the account type belongs to the region, weights sum to
    1 (±1e-6), held symbols and each sleeve's first security have a price > 0, lot ids are
    unique, and no security appears in two sleeves. A non-positive price counts as missing.
    """

    as_of: IsoDate
    account: Account
    cash: float
    lots: list[Lot] = Field(default_factory=list)
    prices: dict[str, float] = Field(default_factory=dict)
    sleeves: list[Sleeve] = Field(min_length=1)
    identical_groups: list[list[str]] = Field(default_factory=list)
    trade_history: list[Trade] = Field(default_factory=list)
    parameters: Parameters = Field(default_factory=Parameters)

    @model_validator(mode="before")
    @classmethod
    def _null_means_empty(cls, data: Any) -> Any:
        """``null`` for ``lots``, ``identical_groups``, ``trade_history`` or ``parameters`` means left out."""
        if isinstance(data, dict):
            optional = ("lots", "identical_groups", "trade_history", "parameters")
            return {k: v for k, v in data.items() if not (k in optional and v is None)}
        return data

    @field_validator("cash")
    @classmethod
    def _cash(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> PlanRequest:
        total = sum(s.target_weight for s in self.sleeves)
        if abs(total - 1.0) > defaults.WEIGHT_SUM_TOLERANCE:
            raise _problem("sleeves", f"target weights sum to {total:.6g}, must sum to 1 (±1e-6)")
        seen: dict[str, str] = {}
        for k, sleeve in enumerate(self.sleeves):
            for j, sym in enumerate(sleeve.securities):
                if sym in seen:
                    raise _problem(
                        f"sleeves[{k}].securities[{j}]", f"{sym!r} is already in sleeve {seen[sym]!r}"
                    )
                seen[sym] = sleeve.id
            first = sleeve.securities[0]
            if not self.has_price(first):
                raise _problem(f"prices.{first}", f"missing price > 0 for {first}, first security of "
                               f"sleeves[{k}] ({sleeve.id!r})")
        lot_ids: set[str] = set()
        for i, lot in enumerate(self.lots):
            if lot.lot_id in lot_ids:
                raise _problem(f"lots[{i}].lot_id", f"duplicate lot id {lot.lot_id!r}")
            lot_ids.add(lot.lot_id)
            if not self.has_price(lot.symbol):
                raise _problem(f"prices.{lot.symbol}", f"missing price > 0 for held symbol {lot.symbol} "
                               f"(lots[{i}])")
        pct, value = defaults.TLH_THRESHOLDS[self.account.region]
        if self.parameters.tlh_min_loss_pct is None:
            self.parameters.tlh_min_loss_pct = pct
        if self.parameters.tlh_min_loss_value is None:
            self.parameters.tlh_min_loss_value = value
        return self

    def has_price(self, symbol: str) -> bool:
        """True when ``symbol`` has a usable price (present and > 0)."""
        p = self.prices.get(symbol)
        return p is not None and p > 0 and math.isfinite(p)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: ErrorDetails) -> FieldProblem:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "order_calc_field":
        prefix, rel = _path(loc), str(ctx["field"])
        field = f"{prefix}{'' if rel.startswith('[') else '.'}{rel}" if prefix else rel
        return FieldProblem(field, str(ctx["message"]))
    if kind == "value_error":
        return FieldProblem(_path(loc), str(ctx.get("error", err["msg"])))
    if kind == "extra_forbidden":
        name = str(loc[-1])
        close = difflib.get_close_matches(name, list(Parameters.model_fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return FieldProblem(_path(loc), f"unknown parameter{hint}")
    if kind == "missing":
        return FieldProblem(_path(loc), "required field is missing")
    msg = err["msg"]
    return FieldProblem(_path(loc), msg[:1].lower() + msg[1:])


def parse_request(data: PlanRequest | dict[str, Any]) -> PlanRequest:
    """Validate ``data`` into a :class:`PlanRequest`; raise :class:`InvalidRequest` naming the field."""
    if isinstance(data, PlanRequest):
        return data
    if not isinstance(data, dict):
        raise InvalidRequest.one("", f"a request must be a JSON object, got {type(data).__name__}")
    try:
        return PlanRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest([_describe(e) for e in exc.errors()]) from None


# --------------------------------------------------------------------------- plan


def _drop_none(data: dict[str, Any], key: str) -> dict[str, Any]:
    if data.get(key) is None:
        data.pop(key, None)
    return data


class LotFill(BaseModel):
    """The part of one lot a sell consumes. CA accounts report one ``ACB`` entry, without ``term``."""

    lot_id: str
    quantity: float
    realized_gain: float
    term: Literal["ST", "LT"] | None = None

    @field_serializer("quantity")
    def _q(self, v: float) -> int | float:
        return out_quantity(v)

    @field_serializer("realized_gain")
    def _money(self, v: float) -> float:
        return cents(v)

    @model_serializer(mode="wrap")
    def _no_null_term(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_none(handler(self), "term")


class Order(BaseModel):
    """One order; ``est_value`` = quantity * price, unrounded here, cents in the dump."""

    side: Literal["BUY", "SELL"]
    symbol: str
    quantity: float
    reason: Literal["TLH", "REBALANCE", "CASH_INVEST"]
    est_value: float
    lots: list[LotFill] | None = None

    @field_serializer("quantity")
    def _q(self, v: float) -> int | float:
        return out_quantity(v)

    @field_serializer("est_value")
    def _money(self, v: float) -> float:
        return cents(v)

    @model_serializer(mode="wrap")
    def _no_null_lots(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_none(handler(self), "lots")


class Restriction(BaseModel):
    """Buying ``symbol`` is restricted through ``until`` (wash sale / superficial loss)."""

    symbol: str
    until: date


class Plan(BaseModel):
    """The response: ``model_dump(mode="json")`` is exactly the contract's plan JSON.

    ``solver_used`` (``"greedy"``, ``"milp"`` or ``None`` when no solver ran) is kept for
    callers and tests and is not part of the dump.
    """

    mode: Literal["NONE", "CASH_INVEST", "REBALANCE"]
    orders: list[Order]
    restrictions: list[Restriction]
    diagnostics: list[str]
    cash_after: float
    solver_used: str | None = Field(default=None, exclude=True)

    @field_serializer("cash_after")
    def _money(self, v: float) -> float:
        return cents(v)
