"""One contract test suite for every BookSource (huey style): subclass it and provide ``book``.

The ``book`` fixture must return an empty source; each test fills it with :mod:`.data` through
the source's own write API (``batch()``), then reads it back.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from portfolio_manager.book import Holdings, TaxLot, Trade
from portfolio_manager.errors import AccountNotFound, ModelNotFound
from portfolio_manager.sources import BookReader, BookSource, BookWriter
from tests.unit.portfolio_manager import data


class BookContract:
    """Tests every BookSource must pass."""

    @pytest.fixture
    def filled(self, book: BookSource) -> BookSource:
        with book.batch() as writer:
            data.populate(writer)
        return book

    def ids(self, holdings: Holdings) -> list[str]:
        return [t.trade_id for t in holdings.trade_history]

    def test_satisfies_the_protocols(self, book: BookSource) -> None:
        assert isinstance(book, BookSource)
        assert isinstance(book, BookReader)
        assert isinstance(book, BookWriter)

    def test_get_account_round_trips(self, filled: BookSource) -> None:
        for account in data.ACCOUNTS:
            assert filled.get_account(account.id) == account

    def test_unknown_account_names_it(self, filled: BookSource) -> None:
        with pytest.raises(AccountNotFound, match="'NOPE'") as info:
            filled.get_account("NOPE")
        assert info.value.account_id == "NOPE"
        with pytest.raises(AccountNotFound):
            filled.get_holdings("NOPE", data.AS_OF, 30)

    def test_list_accounts_active_only_by_default(self, filled: BookSource) -> None:
        assert [a.id for a in filled.list_accounts()] == ["A1", "A2", "A3", "B1"]
        assert [a.id for a in filled.list_accounts(active_only=False)] == ["A1", "A2", "A3", "B1", "C1"]

    def test_holdings_window_includes_both_ends_and_linked_accounts(self, filled: BookSource) -> None:
        h = filled.get_holdings("A1", data.AS_OF, 30)
        assert self.ids(h) == ["t-edge-in", "t-spouse", "t-today"]  # oldest first
        assert h.account == data.ACCOUNTS[0]
        assert h.as_of == data.AS_OF and h.lookback_days == 30
        assert list(h.lots) == data.LOTS_A1
        assert h.cash == pytest.approx(119.50)

    def test_longer_lookback_reaches_older_linked_trades(self, filled: BookSource) -> None:
        h = filled.get_holdings("A1", data.AS_OF, 365)
        assert self.ids(h) == ["t-rrsp-old", "t-edge-out", "t-edge-in", "t-spouse", "t-today"]

    def test_zero_lookback_keeps_only_as_of(self, filled: BookSource) -> None:
        assert self.ids(filled.get_holdings("A1", data.AS_OF, 0)) == ["t-today"]

    def test_links_are_one_way_as_recorded(self, filled: BookSource) -> None:
        # A2 links only A1: it sees A1's trades, not those of A3 (A1's other link).
        h = filled.get_holdings("A2", data.AS_OF, 365)
        assert {t.account_id for t in h.trade_history} == {"A1", "A2"}
        assert "t-rrsp-old" not in self.ids(h)

    def test_stranger_sees_only_itself_and_defaults(self, filled: BookSource) -> None:
        h = filled.get_holdings("B1", data.AS_OF, 30)
        assert self.ids(h) == ["t-stranger"]
        assert h.lots == () and h.cash == 0.0

    def test_holdings_as_of_the_past_excludes_later_trades(self, filled: BookSource) -> None:
        h = filled.get_holdings("A1", data.AS_OF - timedelta(days=1), 30)
        assert self.ids(h) == ["t-edge-out", "t-edge-in", "t-spouse"]

    def test_holdings_round_trip_json(self, filled: BookSource) -> None:
        h = filled.get_holdings("A1", data.AS_OF, 365)
        assert Holdings.model_validate_json(h.model_dump_json()) == h

    def test_prices_are_the_last_on_or_before(self, filled: BookSource) -> None:
        assert filled.get_prices(["VCN", "ZAG", "ZCN", "XIC", "XBB"], data.AS_OF) == {
            "VCN": 47.30,
            "ZAG": 14.15,
            "ZCN": 30.10,
        }
        assert filled.get_prices(["VCN", "ZCN"], date(2025, 6, 1)) == {"VCN": 47.00}
        assert filled.get_prices(["XBB"], date(2025, 6, 3)) == {"XBB": 29.00}
        assert filled.get_prices(["VCN"], date(2025, 1, 1)) == {}
        assert filled.get_prices([], data.AS_OF) == {}

    def test_prices_of_a_day_can_be_corrected(self, filled: BookSource) -> None:
        filled.put_prices({"VCN": 48.00}, data.AS_OF)
        assert filled.get_prices(["VCN"], data.AS_OF) == {"VCN": 48.00}

    def test_models(self, filled: BookSource) -> None:
        assert filled.get_model("CA-M") == data.MODELS[0]
        with pytest.raises(ModelNotFound, match="'NOPE'"):
            filled.get_model("NOPE")

    def test_put_lots_replaces_and_empty_clears(self, filled: BookSource) -> None:
        new = TaxLot(lot_id="N1", symbol="ZCN", quantity=3, cost_basis=90.3, acquired_date=data.AS_OF)
        filled.put_lots("A1", [new])
        assert filled.get_holdings("A1", data.AS_OF, 0).lots == (new,)
        filled.put_lots("A1", [])
        assert filled.get_holdings("A1", data.AS_OF, 0).lots == ()

    def test_same_trade_twice_is_kept_once(self, filled: BookSource) -> None:
        filled.put_trades([data.TRADES[0], data.TRADES[0]])
        assert self.ids(filled.get_holdings("A1", data.AS_OF, 30)).count("t-edge-in") == 1

    def test_new_trade_and_cash(self, filled: BookSource) -> None:
        trade = Trade(
            trade_id="t-new", date=data.AS_OF, account_id="A3", symbol="ZAG", side="BUY", quantity=1.5, price=14.1
        )
        filled.put_trades([trade])
        filled.set_cash("A1", 5000.25)
        h = filled.get_holdings("A1", data.AS_OF, 0)
        assert trade in h.trade_history
        assert h.cash == pytest.approx(5000.25)
