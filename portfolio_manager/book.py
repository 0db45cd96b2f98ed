"""The book of accounts as pydantic models: accounts, tax lots, trades, model portfolios, holdings.

Every model is frozen and round-trips JSON -> model -> JSON unchanged
(``Model.model_validate_json(m.model_dump_json()) == m``). Unknown keys are rejected so a
typo in a custodian's payload fails loudly instead of silently dropping data.
Money is a plain ``float`` in the account's base currency (CAD for CA, USD for US): the
order calculation works on floats and rounds to cents only in its output.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Symbol = Annotated[str, Field(min_length=1, max_length=24, pattern=r"^\S+$")]
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Quantity = Annotated[float, Field(gt=0, allow_inf_nan=False)]

WEIGHT_TOLERANCE = 1e-6


class Region(StrEnum):
    """Where an account is held; decides its account types, tax rules and exchange."""

    CA = "CA"
    US = "US"

    @property
    def currency(self) -> str:
        """The base currency of accounts in this region (ISO 4217)."""
        return "CAD" if self is Region.CA else "USD"


class AccountType(StrEnum):
    """The tax wrapper of an account; each type belongs to exactly one region."""

    TFSA = "TFSA"
    RRSP = "RRSP"
    NON_REGISTERED = "NON_REGISTERED"
    IRA = "IRA"
    ROTH_IRA = "ROTH_IRA"
    TAXABLE = "TAXABLE"

    @property
    def region(self) -> Region:
        """The region this account type belongs to."""
        return Region.CA if self in _CA_TYPES else Region.US

    @property
    def taxable(self) -> bool:
        """True for the types where gains are taxed and losses can be harvested."""
        return self in (AccountType.NON_REGISTERED, AccountType.TAXABLE)


_CA_TYPES = frozenset({AccountType.TFSA, AccountType.RRSP, AccountType.NON_REGISTERED})

ACCOUNT_TYPES: dict[Region, tuple[AccountType, ...]] = {
    Region.CA: (AccountType.TFSA, AccountType.RRSP, AccountType.NON_REGISTERED),
    Region.US: (AccountType.IRA, AccountType.ROTH_IRA, AccountType.TAXABLE),
}


class AccountStatus(StrEnum):
    """Whether an account is still managed."""

    ACTIVE = "active"
    CLOSED = "closed"


class Side(StrEnum):
    """The direction of a trade or an order."""

    BUY = "BUY"
    SELL = "SELL"


class FrozenModel(BaseModel):
    """A strict, immutable model: unknown keys refused (every record of the book and the brokerage)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Account(FrozenModel):
    """One client account: its region and tax type, household links, model and TLH switch."""

    id: Identifier
    region: Region
    type: AccountType
    status: AccountStatus = AccountStatus.ACTIVE
    linked_account_ids: tuple[Identifier, ...] = ()
    model_id: Identifier
    tlh_enabled: bool = False

    @model_validator(mode="after")
    def _check(self) -> Account:
        if self.type.region is not self.region:
            allowed = ", ".join(t.value for t in ACCOUNT_TYPES[self.region])
            raise ValueError(
                f"account type {self.type.value} belongs to region {self.type.region.value}, "
                f"not {self.region.value} (allowed in {self.region.value}: {allowed})"
            )
        if self.id in self.linked_account_ids:
            raise ValueError(f"account {self.id!r} cannot be linked to itself")
        if len(set(self.linked_account_ids)) != len(self.linked_account_ids):
            raise ValueError("linked_account_ids has duplicates")
        return self

    @property
    def currency(self) -> str:
        """The base currency, implied by the region."""
        return self.region.currency

    @property
    def active(self) -> bool:
        """True unless the account is closed."""
        return self.status is AccountStatus.ACTIVE


class TaxLot(FrozenModel):
    """Shares of one symbol bought together: quantity, total cost and acquisition date."""

    lot_id: Identifier
    symbol: Symbol
    quantity: Quantity
    cost_basis: Money = Field(description="Total cost of the lot, not per share.")
    acquired_date: date

    @property
    def cost_per_share(self) -> float:
        """cost_basis / quantity."""
        return self.cost_basis / self.quantity


class Trade(FrozenModel):
    """An executed trade in the history of an account (used for wash-sale / superficial-loss rules).

    ``trade_id`` identifies the trade in its account's log; left out, it is derived from the
    trade's content, so the same trade recorded twice is kept once.
    """

    trade_id: Identifier
    date: date
    account_id: Identifier
    symbol: Symbol
    side: Side
    quantity: Quantity
    price: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    realized_loss: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("trade_id"):
            fields = ("date", "account_id", "symbol", "side", "quantity", "price", "realized_loss")
            if all(data.get(f) is not None for f in fields[:6]):
                basis = "|".join(
                    [str(data[f]) for f in fields[:4]]
                    + [repr(float(data["quantity"])), repr(float(data["price"])), str(bool(data.get("realized_loss")))]
                )
                digest = hashlib.sha1(basis.encode(), usedforsecurity=False).hexdigest()[:16]
                data = {**data, "trade_id": f"T-{digest}"}
        return data

    @model_validator(mode="after")
    def _check(self) -> Trade:
        if self.realized_loss and self.side is not Side.SELL:
            raise ValueError("realized_loss can only be true on a SELL")
        return self


class Sleeve(FrozenModel):
    """One slice of a model portfolio: its target weight and securities, primary first."""

    id: Identifier
    target_weight: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    securities: tuple[Symbol, ...] = Field(min_length=1)

    @field_validator("securities")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("securities has duplicates")
        return value

    @property
    def primary(self) -> str:
        """The security the sleeve buys when nothing restricts it."""
        return self.securities[0]

    @property
    def alternates(self) -> tuple[str, ...]:
        """Substitutes used for tax-loss harvesting, in order of preference."""
        return self.securities[1:]


class ModelPortfolio(FrozenModel):
    """A target mix: sleeves whose weights sum to 1, and groups of identical securities."""

    id: Identifier
    region: Region
    name: str = ""
    sleeves: tuple[Sleeve, ...] = Field(min_length=1)
    identical_groups: tuple[tuple[Symbol, ...], ...] = ()

    @model_validator(mode="after")
    def _check(self) -> ModelPortfolio:
        total = math.fsum(s.target_weight for s in self.sleeves)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"sleeve target weights sum to {total!r}, not 1 (tolerance 1e-6)")
        ids = [s.id for s in self.sleeves]
        if len(set(ids)) != len(ids):
            raise ValueError("sleeve ids must be unique")
        seen: dict[str, str] = {}
        for sleeve in self.sleeves:
            for symbol in sleeve.securities:
                if symbol in seen:
                    raise ValueError(f"{symbol} is in sleeves {seen[symbol]} and {sleeve.id}")
                seen[symbol] = sleeve.id
        grouped: set[str] = set()
        for group in self.identical_groups:
            if len(group) < 2 or len(set(group)) != len(group):
                raise ValueError(f"identical group {list(group)} needs two or more distinct symbols")
            if grouped & set(group):
                raise ValueError(f"symbols {sorted(grouped & set(group))} are in two identical groups")
            grouped |= set(group)
        return self

    @property
    def securities(self) -> tuple[str, ...]:
        """Every security of every sleeve, in sleeve order then security order."""
        return tuple(s for sleeve in self.sleeves for s in sleeve.securities)

    def sleeve_of(self, symbol: str) -> Sleeve | None:
        """The sleeve that lists ``symbol``, or None."""
        return next((s for s in self.sleeves if symbol in s.securities), None)


class Holdings(FrozenModel):
    """What an account holds on ``as_of``: cash and lots, plus recent trades of its household.

    ``trade_history`` holds the trades of the account *and of every linked account* dated in
    ``[as_of - lookback_days, as_of]``, oldest first.
    """

    account: Account
    as_of: date
    lookback_days: Annotated[int, Field(ge=0)]
    cash: Money = 0.0
    lots: tuple[TaxLot, ...] = ()
    trade_history: tuple[Trade, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Holdings:
        ids = [lot.lot_id for lot in self.lots]
        if len(set(ids)) != len(ids):
            raise ValueError(f"account {self.account.id}: lot ids must be unique")
        household = {self.account.id, *self.account.linked_account_ids}
        strangers = sorted({t.account_id for t in self.trade_history} - household)
        if strangers:
            raise ValueError(f"trade_history has trades of unlinked accounts {strangers}")
        return self

    def positions(self) -> dict[str, float]:
        """Total quantity held per symbol, in order of first appearance."""
        out: dict[str, float] = {}
        for lot in self.lots:
            out[lot.symbol] = out.get(lot.symbol, 0.0) + lot.quantity
        return out


__all__ = [
    "Region",
    "AccountType",
    "ACCOUNT_TYPES",
    "AccountStatus",
    "Side",
    "Account",
    "TaxLot",
    "Trade",
    "Sleeve",
    "ModelPortfolio",
    "Holdings",
]
