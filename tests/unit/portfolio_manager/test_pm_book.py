"""The book's models: validation that rejects bad data, and JSON round trips."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from portfolio_manager.book import (
    ACCOUNT_TYPES,
    Account,
    AccountType,
    Holdings,
    ModelPortfolio,
    Region,
    Sleeve,
    TaxLot,
    Trade,
)
from tests.unit.portfolio_manager import data


@pytest.mark.parametrize(
    ("region", "kind"),
    [("CA", "IRA"), ("CA", "ROTH_IRA"), ("CA", "TAXABLE"), ("US", "TFSA"), ("US", "RRSP"), ("US", "NON_REGISTERED")],
)
def test_account_type_must_belong_to_region(region: str, kind: str) -> None:
    with pytest.raises(ValidationError, match=f"account type {kind} belongs to region"):
        Account(id="X", region=region, type=kind, model_id="M")


@pytest.mark.parametrize("region", list(Region))
def test_every_type_of_a_region_is_accepted(region: Region) -> None:
    for kind in ACCOUNT_TYPES[region]:
        account = Account(id="X", region=region, type=kind, model_id="M")
        assert account.currency == ("CAD" if region is Region.CA else "USD")
        assert kind.region is region


def test_unknown_region_or_type_or_key_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Account(id="X", region="EU", type="TFSA", model_id="M")
    with pytest.raises(ValidationError):
        Account(id="X", region="CA", type="LIRA", model_id="M")
    with pytest.raises(ValidationError, match="extra"):
        Account.model_validate({"id": "X", "region": "CA", "type": "TFSA", "model_id": "M", "colour": "red"})


def test_account_links() -> None:
    with pytest.raises(ValidationError, match="linked to itself"):
        Account(id="X", region="CA", type="TFSA", model_id="M", linked_account_ids=("X",))
    with pytest.raises(ValidationError, match="duplicates"):
        Account(id="X", region="CA", type="TFSA", model_id="M", linked_account_ids=("Y", "Y"))


def test_taxable_types() -> None:
    assert {t for t in AccountType if t.taxable} == {AccountType.NON_REGISTERED, AccountType.TAXABLE}


def test_lot_and_trade_validation() -> None:
    with pytest.raises(ValidationError):
        TaxLot(lot_id="L", symbol="VCN", quantity=0, cost_basis=1, acquired_date=date(2024, 1, 1))
    with pytest.raises(ValidationError):
        TaxLot(lot_id="L", symbol="VCN", quantity=1, cost_basis=-1, acquired_date=date(2024, 1, 1))
    with pytest.raises(ValidationError):
        TaxLot(lot_id="L", symbol="VCN", quantity=float("nan"), cost_basis=1, acquired_date=date(2024, 1, 1))
    with pytest.raises(ValidationError, match="realized_loss"):
        Trade(
            trade_id="T",
            date=date(2025, 1, 2),
            account_id="A",
            symbol="VCN",
            side="BUY",
            quantity=1,
            price=1,
            realized_loss=True,
        )
    lot = TaxLot(lot_id="L", symbol="VCN", quantity=4, cost_basis=10, acquired_date=date(2024, 1, 1))
    assert lot.cost_per_share == 2.5


def test_model_weights_must_sum_to_one() -> None:
    sleeves = (
        Sleeve(id="A", target_weight=0.6, securities=("X",)),
        Sleeve(id="B", target_weight=0.3, securities=("Y",)),
    )
    with pytest.raises(ValidationError, match="sum to"):
        ModelPortfolio(id="M", region="CA", sleeves=sleeves)
    ok = (*sleeves, Sleeve(id="C", target_weight=0.1 + 5e-7, securities=("Z",)))
    assert ModelPortfolio(id="M", region="CA", sleeves=ok).securities == ("X", "Y", "Z")


def test_model_structure_is_checked() -> None:
    with pytest.raises(ValidationError, match="in sleeves A and B"):
        ModelPortfolio(
            id="M",
            region="US",
            sleeves=(
                Sleeve(id="A", target_weight=0.5, securities=("X", "Y")),
                Sleeve(id="B", target_weight=0.5, securities=("Y",)),
            ),
        )
    with pytest.raises(ValidationError, match="unique"):
        ModelPortfolio(
            id="M",
            region="US",
            sleeves=(
                Sleeve(id="A", target_weight=0.5, securities=("X",)),
                Sleeve(id="A", target_weight=0.5, securities=("Y",)),
            ),
        )
    one = (Sleeve(id="A", target_weight=1, securities=("X", "Y")),)
    with pytest.raises(ValidationError, match="two or more"):
        ModelPortfolio(id="M", region="US", sleeves=one, identical_groups=(("X",),))
    with pytest.raises(ValidationError, match="two identical groups"):
        ModelPortfolio(id="M", region="US", sleeves=one, identical_groups=(("X", "Y"), ("Y", "Z")))
    with pytest.raises(ValidationError):
        Sleeve(id="A", target_weight=1.5, securities=("X",))
    with pytest.raises(ValidationError, match="duplicates"):
        Sleeve(id="A", target_weight=1, securities=("X", "X"))


def test_sleeve_primary_and_alternates() -> None:
    sleeve = data.MODELS[0].sleeves[0]
    assert sleeve.primary == "VCN" and sleeve.alternates == ("ZCN", "XIC")
    assert data.MODELS[0].sleeve_of("XBB").id == "BOND"
    assert data.MODELS[0].sleeve_of("NOPE") is None


def test_holdings_reject_trades_of_unlinked_accounts() -> None:
    stranger = data.TRADES[-1]
    with pytest.raises(ValidationError, match="unlinked"):
        Holdings(account=data.ACCOUNTS[0], as_of=data.AS_OF, lookback_days=30, trade_history=(stranger,))


def test_holdings_positions_sum_lots() -> None:
    extra = TaxLot(lot_id="L3", symbol="VCN", quantity=5, cost_basis=200, acquired_date=date(2025, 1, 2))
    h = Holdings(account=data.ACCOUNTS[0], as_of=data.AS_OF, lookback_days=30, lots=(*data.LOTS_A1, extra))
    assert h.positions() == {"VCN": 175, "ZAG": 300}
    with pytest.raises(ValidationError, match="lot ids"):
        Holdings(account=data.ACCOUNTS[0], as_of=data.AS_OF, lookback_days=30, lots=(extra, extra))


@pytest.mark.parametrize("item", [*data.ACCOUNTS, *data.LOTS_A1, *data.TRADES, *data.MODELS])
def test_json_round_trip(item: object) -> None:
    cls = type(item)
    assert cls.model_validate_json(item.model_dump_json()) == item  # type: ignore[attr-defined]


@given(
    region=st.sampled_from(list(Region)),
    tlh=st.booleans(),
    links=st.lists(st.text("ABCDEF0123456789-", min_size=1, max_size=8), unique=True, max_size=4),
    quantity=st.floats(min_value=1e-4, max_value=1e7, allow_nan=False),
    cost=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    day=st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 1, 1)),
)
def test_round_trip_property(
    region: Region, tlh: bool, links: list[str], quantity: float, cost: float, day: date
) -> None:
    links = [x for x in links if x != "ME"]
    account = Account(
        id="ME",
        region=region,
        type=ACCOUNT_TYPES[region][0],
        model_id="M",
        tlh_enabled=tlh,
        linked_account_ids=tuple(links),
    )
    lot = TaxLot(lot_id="L", symbol="VTI", quantity=quantity, cost_basis=cost, acquired_date=day)
    holdings = Holdings(account=account, as_of=day, lookback_days=30, cash=cost, lots=(lot,))
    assert Holdings.model_validate_json(holdings.model_dump_json()) == holdings


def test_trade_id_defaults_to_a_digest_of_the_trade() -> None:
    fields = {"date": "2025-05-01", "account_id": "A1", "symbol": "VCN", "side": "BUY", "quantity": 2, "price": 40}
    one = Trade(**fields)
    assert one.trade_id.startswith("T-")
    assert Trade(**(fields | {"date": date(2025, 5, 1), "quantity": 2.0})).trade_id == one.trade_id
    assert Trade(**(fields | {"quantity": 3})).trade_id != one.trade_id
    assert Trade(**fields, trade_id="mine").trade_id == "mine"
    assert Trade.model_validate_json(one.model_dump_json()) == one
    with pytest.raises(ValidationError):
        Trade(**(fields | {"quantity": "lots"}))
