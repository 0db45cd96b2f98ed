"""The synthetic book: deterministic, realistic in its mix, and written faithfully."""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, timedelta

import fakeredis
import pytest

from portfolio_manager.book import AccountStatus, Region, Side
from portfolio_manager.errors import AccountClosed, MissingPrice
from portfolio_manager.generator import GeneratorConfig, SyntheticBook, generate_book, seed_book
from portfolio_manager.order_request import build_plan_request
from portfolio_manager.redis_book import RedisBook
from portfolio_manager.universe import UNPRICED

AS_OF = date(2025, 6, 2)
WASH_DAYS = 30
TLH_THRESHOLDS = {Region.CA: (0.05, 500.0), Region.US: (0.05, 200.0)}


def fingerprint(book: SyntheticBook) -> list[str]:
    """Everything the generator decided, as JSON lines."""
    lines = [m.model_dump_json() for m in book.models]
    for b in book.bundles:
        lines.append(b.account.model_dump_json())
        lines.append(repr(b.cash))
        lines.extend(lot.model_dump_json() for lot in b.lots)
        lines.extend(t.model_dump_json() for t in b.trades)
    lines.extend(repr(sorted(book.prices.on(day).items())) for day in book.price_days)
    return lines


def redis_dump(client: fakeredis.FakeRedis) -> dict[bytes, object]:
    """Every key and its value, whatever its type."""
    out: dict[bytes, object] = {}
    for key in sorted(client.keys("*")):
        kind = client.type(key)
        if kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = client.get(key)
    return out


@pytest.fixture(scope="module")
def big() -> SyntheticBook:
    return generate_book(4000, 2025, AS_OF)


def test_same_seed_same_book() -> None:
    assert fingerprint(generate_book(300, 5, AS_OF)) == fingerprint(generate_book(300, 5, AS_OF))


def test_same_seed_same_redis_contents() -> None:
    one, two = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    seed_book(RedisBook(one), 200, 9, AS_OF)
    seed_book(RedisBook(two), 200, 9, AS_OF)
    assert redis_dump(one) == redis_dump(two)


def test_different_seed_different_book() -> None:
    a, b = generate_book(300, 5, AS_OF), generate_book(300, 6, AS_OF)
    assert fingerprint(a) != fingerprint(b)
    lots_a = [lot.model_dump_json() for x in a.bundles for lot in x.lots]
    lots_b = {lot.model_dump_json() for x in b.bundles for lot in x.lots}
    assert sum(1 for lot in lots_a if lot in lots_b) < len(lots_a) / 100
    assert a.prices.on(AS_OF) != b.prices.on(AS_OF)


def test_a_bigger_book_starts_with_the_smaller_one() -> None:
    small, large = generate_book(100, 5, AS_OF), generate_book(400, 5, AS_OF)
    # households have at most 3 accounts, so only the last one of the small book may be cut short
    for s, big_one in zip(small.bundles[:97], large.bundles[:97], strict=True):
        assert (s.account, s.lots, s.trades, s.cash) == (big_one.account, big_one.lots, big_one.trades, big_one.cash)


@pytest.mark.parametrize("count", [0, 1, 2, 7])
def test_exact_count_and_unique_ids(count: int) -> None:
    book = generate_book(count, 1, AS_OF)
    ids = [a.id for a in book.accounts]
    assert len(ids) == count == len(set(ids))
    for account in book.accounts:
        assert set(account.linked_account_ids) <= set(ids)


def test_models_look_like_model_portfolios(big: SyntheticBook) -> None:
    per_region = Counter(m.region for m in big.models)
    assert all(3 <= per_region[r] <= 4 for r in Region)
    for model in big.models:
        assert 4 <= len(model.sleeves) <= 12
        assert math.isclose(sum(s.target_weight for s in model.sleeves), 1.0, abs_tol=1e-9)
        assert all(2 <= len(s.securities) <= 3 for s in model.sleeves)
        assert model.identical_groups, model.id
        for group in model.identical_groups:  # identical securities are substitutes within one sleeve
            assert len({model.sleeve_of(symbol).id for symbol in group}) == 1
    assert {"VTI", "ITOT"} in [set(g) for m in big.models for g in m.identical_groups]


def test_regions_types_and_households(big: SyntheticBook) -> None:
    accounts = big.accounts
    ca_share = sum(a.region is Region.CA for a in accounts) / len(accounts)
    assert 0.55 <= ca_share <= 0.65
    by_id = {a.id: a for a in accounts}
    models = {m.id: m for m in big.models}
    for a in accounts:
        assert models[a.model_id].region is a.region
        for other in a.linked_account_ids:
            assert a.id in by_id[other].linked_account_ids  # households link both ways
            assert by_id[other].region is a.region
    linked = sum(bool(a.linked_account_ids) for a in accounts) / len(accounts)
    assert 0.4 <= linked <= 0.8
    types = Counter(a.type for a in accounts)
    assert len(types) == 6
    taxable = [a for a in accounts if a.type.taxable]
    assert 0.35 <= len(taxable) / len(accounts) <= 0.55
    assert sum(a.tlh_enabled for a in taxable) / len(taxable) > 0.75
    assert sum(a.tlh_enabled for a in accounts if not a.type.taxable) > 0  # some, to exercise the skip


def test_broken_share_is_about_two_percent(big: SyntheticBook) -> None:
    closed = [b for b in big.bundles if b.account.status is AccountStatus.CLOSED]
    unpriced = {s for symbols in UNPRICED.values() for s in symbols}
    missing = [b for b in big.bundles if any(lot.symbol in unpriced for lot in b.lots)]
    share = (len(closed) + len(missing)) / len(big.bundles)
    assert 0.012 <= share <= 0.028, share
    assert closed and missing
    assert all(b.broken == "closed" for b in closed) and all(b.broken == "missing_price" for b in missing)


def test_broken_share_is_configurable() -> None:
    book = generate_book(1000, 3, AS_OF, GeneratorConfig(broken_share=0.2))
    share = sum(bool(b.broken) for b in book.bundles) / 1000
    assert 0.16 <= share <= 0.24


def test_lots_and_trades(big: SyntheticBook) -> None:
    three_years = AS_OF - timedelta(days=3 * 366)
    for b in big.bundles:
        assert len(b.lots) <= 40
        for lot in b.lots:
            assert three_years <= lot.acquired_date <= AS_OF
        for trade in b.trades:
            assert trade.date <= AS_OF and trade.account_id == b.account.id
        # every lot bought within the recorded history has its BUY
        buys = {(t.date, t.symbol, t.quantity) for t in b.trades if t.side is Side.BUY}
        for lot in b.lots:
            if (AS_OF - lot.acquired_date).days <= 400 and lot.symbol in big.prices.closes:
                assert (lot.acquired_date, lot.symbol, lot.quantity) in buys
    active = [b for b in big.bundles if b.account.active]
    assert sum(1 for b in active if len(b.lots) >= 30) > 0
    recent = AS_OF - timedelta(days=WASH_DAYS)
    recent_buys = sum(any(t.side is Side.BUY and t.date >= recent for t in b.trades) for b in active)
    recent_losses = sum(any(t.realized_loss and t.date >= recent for t in b.trades) for b in active)
    assert 0.1 <= recent_buys / len(active) <= 0.4
    assert 0.04 <= recent_losses / len(active) <= 0.2
    deposits = sum(b.cash >= 1000 for b in active) / len(active)
    assert 0.1 <= deposits <= 0.35
    assert any(not b.lots and b.cash > 0 for b in active)  # brand-new, all-cash accounts


def drift(bundle, model, prices) -> float:  # type: ignore[no-untyped-def]
    """Largest |sleeve weight - target| (step 3 of ORDER_CALC.md)."""
    value = {s.id: 0.0 for s in model.sleeves}
    for lot in bundle.lots:
        value[model.sleeve_of(lot.symbol).id] += lot.quantity * prices[lot.symbol]
    total = sum(value.values()) + bundle.cash
    return max(abs(value[s.id] - s.target_weight * total) / total for s in model.sleeves)


def test_some_accounts_within_band_and_some_far(big: SyntheticBook) -> None:
    prices = big.prices.on(AS_OF)
    models = {m.id: m for m in big.models}
    healthy = [b for b in big.bundles if not b.broken and b.lots]
    drifts = [drift(b, models[b.account.model_id], prices) for b in healthy]
    within = sum(d <= 0.05 for d in drifts) / len(drifts)
    far = sum(d > 0.10 for d in drifts) / len(drifts)
    assert 0.3 <= within <= 0.8 and far >= 0.1


def harvest_candidates(bundle, household_trades, model, prices) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(harvestable symbols, of which blocked by a recent BUY) by ORDER_CALC.md step 2, roughly."""
    min_pct, min_value = TLH_THRESHOLDS[bundle.account.region]
    group_of = {s: set(g) for g in model.identical_groups for s in g}
    found = blocked = 0
    for symbol in {lot.symbol for lot in bundle.lots}:
        sleeve = model.sleeve_of(symbol)
        if sleeve is None or len(sleeve.securities) < 2:
            continue
        price = prices[symbol]
        lots = [lot for lot in bundle.lots if lot.symbol == symbol]
        if bundle.account.region is Region.US:
            losing = [lot for lot in lots if lot.cost_per_share > price]
            cost = sum(lot.cost_basis for lot in losing)
            loss = cost - sum(lot.quantity * price for lot in losing)
        else:
            cost = sum(lot.cost_basis for lot in lots)
            loss = cost - sum(lot.quantity for lot in lots) * price
        if not (loss >= min_value and cost and loss / cost >= min_pct):
            continue
        found += 1
        identical = group_of.get(symbol, {symbol})
        if any(
            t.side is Side.BUY and t.symbol in identical and (AS_OF - t.date).days <= WASH_DAYS
            for t in household_trades
        ):
            blocked += 1
    return found, blocked


def test_some_accounts_have_losses_worth_harvesting(big: SyntheticBook) -> None:
    prices = big.prices.on(AS_OF)
    models = {m.id: m for m in big.models}
    trades_of = {b.account.id: b.trades for b in big.bundles}
    eligible = [b for b in big.bundles if not b.broken and b.account.tlh_enabled and b.account.type.taxable]
    harvestable = blocked = 0
    for b in eligible:
        household = [t for x in (b.account.id, *b.account.linked_account_ids) for t in trades_of[x]]
        found, held_back = harvest_candidates(b, household, models[b.account.model_id], prices)
        harvestable += found > held_back
        blocked += held_back > 0
    assert 0.05 <= harvestable / len(eligible) <= 0.9
    assert blocked > 0  # recent buys (own or a linked account's) block some harvests


def test_seeded_book_reads_back_and_broken_accounts_fail_clearly() -> None:
    book = RedisBook(fakeredis.FakeRedis())
    summary = seed_book(book, 300, 4, AS_OF, GeneratorConfig(broken_share=0.05))  # 15 closed, 10 unpriced
    assert summary.count == 300 and sum(summary.by_region.values()) == 300
    assert len(book.list_accounts(active_only=False)) == 300
    assert len(book.list_accounts()) == 300 - len(summary.closed_accounts)
    assert summary.generate_seconds > 0 and summary.write_seconds > 0
    assert set(summary.unpriced_symbols) <= {s for v in UNPRICED.values() for s in v}

    def request_for(account_id: str) -> dict:
        holdings = book.get_holdings(account_id, AS_OF, 30)
        model = book.get_model(holdings.account.model_id)
        prices = book.get_prices([*holdings.positions(), *model.securities], AS_OF)
        return build_plan_request(holdings, model, prices, AS_OF, {})

    for account_id in summary.missing_price_accounts:
        with pytest.raises(MissingPrice) as info:
            request_for(account_id)
        assert info.value.symbol in summary.unpriced_symbols
    for account_id in summary.closed_accounts:
        with pytest.raises(AccountClosed):
            request_for(account_id)
    broken = set(summary.broken_accounts)
    healthy = [a.id for a in book.list_accounts() if a.id not in broken]
    for account_id in healthy:
        request = request_for(account_id)
        assert request["account"]["id"] == account_id
        assert set(request["prices"]) >= {lot["symbol"] for lot in request["lots"]}
