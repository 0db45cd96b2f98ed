"""A small, hand-checkable book shared by the source contract tests (unit and integration).

Household A1 (CA NON_REGISTERED) - A2 (TFSA) - A3 (RRSP): A1 links A2 and A3, A2 and A3 link
only A1. B1 is a stranger, C1 a closed US account. ``AS_OF`` is 2025-06-02.
"""

from __future__ import annotations

from datetime import date

from portfolio_manager.book import Account, ModelPortfolio, Sleeve, TaxLot, Trade
from portfolio_manager.sources import BookWriter

AS_OF = date(2025, 6, 2)

ACCOUNTS = [
    Account(
        id="A1", region="CA", type="NON_REGISTERED", linked_account_ids=("A2", "A3"), model_id="CA-M", tlh_enabled=True
    ),
    Account(id="A2", region="CA", type="TFSA", linked_account_ids=("A1",), model_id="CA-M"),
    Account(id="A3", region="CA", type="RRSP", linked_account_ids=("A1",), model_id="CA-M"),
    Account(id="B1", region="CA", type="TFSA", model_id="CA-M"),
    Account(id="C1", region="US", type="TAXABLE", status="closed", model_id="US-M", tlh_enabled=True),
]

LOTS_A1 = [
    TaxLot(lot_id="L1", symbol="VCN", quantity=170, cost_basis=8041.00, acquired_date=date(2024, 1, 2)),
    TaxLot(lot_id="L2", symbol="ZAG", quantity=300, cost_basis=4500.00, acquired_date=date(2023, 5, 1)),
]


def _trade(tid: str, day: date, account: str, symbol: str, side: str, loss: bool = False) -> Trade:
    return Trade(
        trade_id=tid, date=day, account_id=account, symbol=symbol, side=side, quantity=2, price=40.0, realized_loss=loss
    )


TRADES = [
    _trade("t-edge-in", date(2025, 5, 3), "A1", "VCN", "BUY"),  # as_of - 30: inside a 30-day window
    _trade("t-edge-out", date(2025, 5, 2), "A1", "VCN", "BUY"),  # as_of - 31: outside
    _trade("t-today", date(2025, 6, 2), "A1", "ZAG", "SELL", loss=True),  # as_of itself: inside
    _trade("t-future", date(2025, 6, 3), "A1", "XIC", "BUY"),  # after as_of: never
    _trade("t-spouse", date(2025, 5, 15), "A2", "XIC", "BUY"),  # linked account: inside
    _trade("t-rrsp-old", date(2025, 4, 1), "A3", "VCN", "SELL"),  # linked, 62 days back
    _trade("t-stranger", date(2025, 5, 20), "B1", "VCN", "BUY"),  # not linked to A1
]

MODELS = [
    ModelPortfolio(
        id="CA-M",
        region="CA",
        sleeves=(
            Sleeve(id="EQ", target_weight=0.6, securities=("VCN", "ZCN", "XIC")),
            Sleeve(id="BOND", target_weight=0.4, securities=("ZAG", "XBB")),
        ),
        identical_groups=(("VCN", "XIC"),),
    ),
    ModelPortfolio(
        id="US-M",
        region="US",
        sleeves=(Sleeve(id="ALL", target_weight=1.0, securities=("VTI", "SCHB", "ITOT")),),
        identical_groups=(("VTI", "ITOT"),),
    ),
]

PRICES = {
    date(2025, 5, 30): {"VCN": 47.00, "ZAG": 14.00},
    AS_OF: {"VCN": 47.30, "ZAG": 14.15, "ZCN": 30.10},
    date(2025, 6, 3): {"XBB": 29.00},
}


def populate(writer: BookWriter) -> None:
    """Write the book above through ``writer``."""
    for account in ACCOUNTS:
        writer.put_account(account)
    for model in MODELS:
        writer.put_model(model)
    writer.put_lots("A1", LOTS_A1)
    writer.set_cash("A1", 119.50)
    writer.put_trades(TRADES)
    for day, prices in PRICES.items():
        writer.put_prices(prices, day)
