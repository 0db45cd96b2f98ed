"""Lot selection (step 6): terms, TAX_MIN / HIFO / FIFO orders, partial lots, CA ACB."""

from __future__ import annotations

from datetime import date

import pytest

from order_calc import plan_orders
from order_calc.lots import anniversary, order_lots, term
from order_calc.valuation import HeldLot

AS_OF = date(2025, 6, 2)


@pytest.mark.parametrize(
    ("acquired", "as_of", "expected"),
    [
        ("2024-06-02", "2025-06-02", "ST"),  # exactly one year: still short
        ("2024-06-02", "2025-06-03", "LT"),
        ("2024-06-01", "2025-06-02", "LT"),
        ("2024-02-29", "2025-02-28", "ST"),  # Feb 29 turns one year old on Feb 28
        ("2024-02-29", "2025-03-01", "LT"),
        ("2023-02-28", "2024-02-29", "LT"),  # a leap as_of changes nothing for a Feb 28 lot
        ("2023-02-28", "2024-02-28", "ST"),
    ],
)
def test_term(acquired: str, as_of: str, expected: str) -> None:
    assert term(date.fromisoformat(acquired), date.fromisoformat(as_of)) == expected


def test_anniversary_of_feb_29() -> None:
    assert anniversary(date(2024, 2, 29)) == date(2025, 2, 28)
    assert anniversary(date(2024, 3, 1)) == date(2025, 3, 1)


def _lot(lot_id: str, cost_per_share: float, acquired: str, quantity: float = 10) -> HeldLot:
    return HeldLot(lot_id, quantity, cost_per_share * quantity, date.fromisoformat(acquired))


# Price 100 on 2025-06-02. Gain per share in brackets.
LOTS = [
    _lot("a", 105, "2025-03-01"),  # ST loss  (-5)
    _lot("b", 120, "2025-04-01"),  # ST loss  (-20)
    _lot("c", 130, "2023-01-01"),  # LT loss  (-30)
    _lot("d", 95, "2022-01-01"),  # LT gain  (5)
    _lot("e", 50, "2021-01-01"),  # LT gain  (50)
    _lot("f", 90, "2025-02-01"),  # ST gain  (10)
    _lot("g", 100, "2025-05-01"),  # ST zero gain: a gain
    _lot("h", 100, "2020-01-01"),  # LT zero gain: a gain
]


def _ids(method: str, lots: list[HeldLot] = LOTS) -> str:
    return "".join(x.lot_id for x in order_lots(reversed(lots), method, 100.0, AS_OF))


def test_tax_min_order() -> None:
    # ST losses largest first (b, a), LT losses (c), LT gains smallest first (h 0, d 5, e 50),
    # ST gains smallest first (g 0, f 10).
    assert _ids("TAX_MIN") == "bachdegf"


def test_hifo_order_ties_by_date() -> None:
    # 130 c, 120 b, 105 a, 100 h (2020) before g (2025), 95 d, 90 f, 50 e.
    assert _ids("HIFO") == "cbahgdfe"


def test_fifo_order() -> None:
    assert _ids("FIFO") == "hedcfabg"


def test_tax_min_ties_by_date_then_lot_id() -> None:
    lots = [_lot("z", 120, "2025-04-01"), _lot("y", 120, "2025-03-01"), _lot("x", 120, "2025-04-01")]
    assert _ids("TAX_MIN", lots) == "yxz"


def test_fifo_ties_by_lot_id() -> None:
    lots = [_lot("L2", 10, "2024-01-01"), _lot("L10", 50, "2024-01-01"), _lot("L1", 90, "2024-01-01")]
    assert _ids("FIFO", lots) == "L1L10L2"


def _taxable_sell(req, method: str) -> dict:
    # V = 2000 + 1000 = 3000 at price 10: T_X = 1500 -> sell 50 X (500 of excess / 10).
    request = req.build(
        sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")],
        prices={"X": 10, "Y": 10},
        lots=[
            req.lot("OLD", "X", 40, 320, "2020-01-01"),  # 8/sh, LT gain 2/sh
            req.lot("HI", "X", 40, 480, "2025-01-01"),  # 12/sh, ST loss 2/sh
            req.lot("MID", "X", 120, 1140, "2024-08-01"),  # 9.5/sh, ST gain 0.5/sh
            req.lot("Y1", "Y", 100, 1000, "2020-01-01"),
        ],
        region="US", account_type="TAXABLE", lot_method=method,
    )
    return plan_orders(request).model_dump(mode="json")["orders"][0]


def test_sell_consumes_lots_and_splits_the_last_one(req) -> None:
    sell = _taxable_sell(req, "TAX_MIN")
    assert sell["quantity"] == 50
    assert sell["lots"] == [
        {"lot_id": "HI", "quantity": 40, "realized_gain": -80.0, "term": "ST"},
        {"lot_id": "OLD", "quantity": 10, "realized_gain": 20.0, "term": "LT"},
    ]


def test_fifo_and_hifo_in_a_plan(req) -> None:
    assert [x["lot_id"] for x in _taxable_sell(req, "FIFO")["lots"]] == ["OLD", "MID"]
    assert _taxable_sell(req, "HIFO")["lots"] == [
        {"lot_id": "HI", "quantity": 40, "realized_gain": -80.0, "term": "ST"},
        {"lot_id": "MID", "quantity": 10, "realized_gain": 5.0, "term": "ST"},
    ]


def test_no_lots_reported_outside_taxable_accounts(req) -> None:
    request = req.build(sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")], prices={"X": 10, "Y": 10},
                        lots=[req.lot("1", "X", 200, 1000)], region="US", account_type="ROTH_IRA")
    sell = plan_orders(request).model_dump(mode="json")["orders"][0]
    assert sell["side"] == "SELL"
    assert "lots" not in sell


def test_ca_acb_over_all_lots(req) -> None:
    # ACB = (320 + 480 + 1140) / 200 = 9.7; 50 sold at 10 -> gain 15.
    request = req.build(
        sleeves=[req.sleeve("X", 0.5, "X"), req.sleeve("Y", 0.5, "Y")], prices={"X": 10, "Y": 10},
        lots=[req.lot("OLD", "X", 40, 320), req.lot("HI", "X", 40, 480), req.lot("MID", "X", 120, 1140),
              req.lot("Y1", "Y", 100, 1000)],
        region="CA", account_type="NON_REGISTERED",
    )
    sell = plan_orders(request).model_dump(mode="json")["orders"][0]
    assert sell["lots"] == [{"lot_id": "ACB", "quantity": 50, "realized_gain": 15.0}]
