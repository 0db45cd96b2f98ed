"""A seeded synthetic book: model portfolios, households of accounts, lots, trades, cash and prices.

``seed_book(source, count, seed, as_of)`` writes ``count`` accounts into any
:class:`~portfolio_manager.sources.BookSource` (one batch, so pipelines on Redis) and returns a
:class:`SeedSummary`. ``generate_book`` builds the same data in memory without writing it.
The same ``(count, seed, as_of, config)`` always gives the same book, byte for byte; the first
households of a larger book are those of a smaller one with the same seed.

What it looks like (shares are the defaults of :class:`GeneratorConfig`):

- ~60% CA / 40% US households of 1-3 accounts linked to each other (spouse, the client's
  registered accounts); CA types TFSA/RRSP/NON_REGISTERED, US IRA/ROTH_IRA/TAXABLE; TLH on
  for most taxable accounts and a few registered ones (which the calculation then skips).
- 3-4 model portfolios per region with 4-12 sleeves, each sleeve a primary ETF and 1-2
  alternates, with identical groups (VTI/ITOT, VCN/XIC, ...), see :mod:`portfolio_manager.universe`.
- Prices: a correlated random walk per asset class over ~3 years of business days, with a
  recent drawdown in a few asset classes, so lots bought before it carry harvestable losses.
- Holdings: up to ``max_lots`` lots per account bought over the past ~3 years; about half
  the accounts within the drift band, the rest drifted far; new deposits on some; a few
  brand-new all-cash accounts.
- Trades: a BUY for every lot bought within ``history_days``; recent BUYs (within 30 days)
  that block harvests on some accounts; recent harvests (a SELL with ``realized_loss`` and
  the alternate bought the same day) on others; some older sells.
- Broken accounts (``broken_share``, ~2%): half closed, half holding a symbol with no price.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
from pydantic import BaseModel, ConfigDict

from portfolio_manager.book import (
    ACCOUNT_TYPES,
    Account,
    AccountStatus,
    AccountType,
    ModelPortfolio,
    Region,
    Side,
    Sleeve,
    TaxLot,
    Trade,
)
from portfolio_manager.sources import BookSource
from portfolio_manager.universe import MODEL_TEMPLATES, UNIVERSE, UNPRICED, AssetClass

TRADING_DAYS_PER_YEAR = 252


@dataclass(frozen=True)
class GeneratorConfig:
    """Knobs of the synthetic book; the defaults give the mix described in the module docstring."""

    ca_share: float = 0.6
    broken_share: float = 0.02
    max_lots: int = 40
    years_of_lots: int = 3
    history_days: int = 400
    price_history_days: int = 30
    household_sizes: tuple[tuple[int, float], ...] = ((1, 0.55), (2, 0.30), (3, 0.15))
    taxable_share: float = 0.45
    tlh_taxable_share: float = 0.85
    tlh_registered_share: float = 0.15
    drifted_share: float = 0.45
    deposit_share: float = 0.20
    new_account_share: float = 0.03
    recent_buy_share: float = 0.20
    recent_harvest_share: float = 0.10
    old_sell_share: float = 0.25
    drawdown_classes: int = 1


class SeedSummary(BaseModel):
    """What ``seed_book`` wrote, and how long it took."""

    model_config = ConfigDict(frozen=True)

    count: int
    seed: int
    as_of: date
    households: int
    by_region: dict[str, int]
    by_type: dict[str, int]
    linked_accounts: int
    tlh_enabled: int
    models: list[str]
    lots: int
    trades: int
    with_deposit: int
    all_cash: int
    priced_symbols: int
    unpriced_symbols: list[str]
    closed_accounts: list[str]
    missing_price_accounts: list[str]
    generate_seconds: float = 0.0
    write_seconds: float = 0.0

    @property
    def broken_accounts(self) -> list[str]:
        """Closed accounts and accounts holding an unpriced symbol."""
        return sorted(self.closed_accounts + self.missing_price_accounts)


# --- prices -----------------------------------------------------------------------------------------


class PriceTable:
    """Deterministic daily closes (business days) of every priced symbol, ending on ``as_of``."""

    def __init__(self, seed: int, as_of: date, years: int, drawdown_classes: int = 1) -> None:
        rng = np.random.default_rng([seed % 2**63, 0x5EED])
        start = np.datetime64(as_of - timedelta(days=366 * years + 14), "D")
        days = np.arange(start, np.datetime64(as_of, "D") + 1)
        self.dates = days[np.is_busday(days)]
        self.pydates: list[date] = self.dates.astype(date).tolist()
        n = len(self.dates)
        dt = 1.0 / TRADING_DAYS_PER_YEAR
        self.closes: dict[str, list[float]] = {}
        for region in Region:
            classes = UNIVERSE[region]
            # Declines hit classes other than the core (first) one, so not every account has losses.
            hit = set(
                (1 + rng.choice(len(classes) - 1, size=min(drawdown_classes, len(classes) - 1), replace=False)).tolist()
            )
            for i, cls in enumerate(classes):
                shocks = rng.normal((cls.annual_drift - cls.annual_vol**2 / 2) * dt, cls.annual_vol * math.sqrt(dt), n)
                log_path = np.cumsum(shocks)
                # Tie the walk to a plausible total return over the window (a Brownian bridge),
                # so most old lots sit on gains as in real markets, with dips along the way.
                years_total = n / TRADING_DAYS_PER_YEAR
                target = cls.annual_drift * years_total * rng.uniform(0.6, 1.4)
                log_path -= np.linspace(0.0, 1.0, n) * (log_path[-1] - target)
                if i in hit:  # a decline over the last ~4 months: fresh losses to harvest
                    span = min(85, n)
                    depth = rng.uniform(0.10, 0.20)
                    log_path[-span:] += np.linspace(0.0, math.log(1 - depth), span)
                for symbol in cls.securities:
                    own = np.cumsum(rng.normal(0.0, 0.002, n))
                    level = cls.base_price * rng.uniform(0.6, 1.6)
                    walk = log_path + own
                    path = level * np.exp(walk - walk[-1])  # today's close is ``level``
                    self.closes[symbol] = np.maximum(np.round(path, 2), 0.5).tolist()
        self._ordinals = [d.toordinal() for d in self.pydates]

    def index_on(self, day: date) -> int:
        """Index of the last business day on or before ``day``."""
        return bisect.bisect_right(self._ordinals, day.toordinal()) - 1

    def price(self, symbol: str, day: date) -> float:
        """Close of ``symbol`` on the last business day on or before ``day``."""
        return self.closes[symbol][self.index_on(day)]

    def on(self, day: date) -> dict[str, float]:
        """Every symbol's close on ``day`` (the last business day on or before it)."""
        i = self.index_on(day)
        return {symbol: series[i] for symbol, series in self.closes.items()}


# --- model portfolios -------------------------------------------------------------------------------


def _split(rng: random.Random, total_bp: int, parts: int, floor_bp: int = 200) -> list[int]:
    """Split ``total_bp`` basis points into ``parts`` random integers, each at least ``floor_bp``."""
    floor_bp = min(floor_bp, total_bp // parts)
    raw = [rng.gammavariate(2.0, 1.0) for _ in range(parts)]
    spare = total_bp - floor_bp * parts
    out = [floor_bp + int(spare * r / sum(raw)) for r in raw]
    out[0] += total_bp - sum(out)
    return out


def generate_models(seed: int) -> list[ModelPortfolio]:
    """3-4 model portfolios per region, deterministic for ``seed``."""
    models: list[ModelPortfolio] = []
    for region in Region:
        rng = random.Random(f"tradeflow:{seed}:models:{region.value}")
        pool = UNIVERSE[region]
        equity = [c for c in pool if c.equity]
        fixed = [c for c in pool if not c.equity]
        templates = MODEL_TEMPLATES if rng.random() < 0.5 else MODEL_TEMPLATES[:3]
        for template in templates:
            n = rng.randint(template.min_sleeves, template.max_sleeves)
            n_fi = min(len(fixed), max(1, round(n * (1 - template.equity_share)), n - len(equity)))
            # The region's core equity class (first listed) is in every model.
            chosen: list[AssetClass] = [equity[0], *rng.sample(equity[1:], n - n_fi - 1), *rng.sample(fixed, n_fi)]
            eq_bp = round(10_000 * template.equity_share)
            weights = _split(rng, eq_bp, n - n_fi) + _split(rng, 10_000 - eq_bp, n_fi)
            sleeves = tuple(
                Sleeve(id=c.id, target_weight=bp / 10_000, securities=c.securities)
                for c, bp in zip(chosen, weights, strict=True)
            )
            models.append(
                ModelPortfolio(
                    id=f"{region.value}-{template.suffix}",
                    region=region,
                    name=f"{region.value} {template.name}",
                    sleeves=sleeves,
                    identical_groups=tuple(c.identical for c in chosen if c.identical),
                )
            )
    return models


# --- accounts ---------------------------------------------------------------------------------------


@dataclass
class _Bundle:
    """One generated account and everything it holds."""

    account: Account
    cash: float = 0.0
    lots: list[TaxLot] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    broken: str = ""
    deposit: bool = False


@dataclass
class SyntheticBook:
    """A generated book in memory: what ``seed_book`` writes."""

    seed: int
    as_of: date
    models: list[ModelPortfolio]
    bundles: list[_Bundle]
    prices: PriceTable
    price_days: list[date]
    households: int

    @property
    def accounts(self) -> list[Account]:
        """Every account, in generation order."""
        return [b.account for b in self.bundles]


class _AccountMaker:
    """Builds the accounts of one household; all randomness comes from the household's own rng."""

    def __init__(self, rng: random.Random, cfg: GeneratorConfig, prices: PriceTable, as_of: date) -> None:
        self.rng, self.cfg, self.prices, self.as_of = rng, cfg, prices, as_of
        self.last = prices.index_on(as_of)
        first = prices.index_on(as_of - timedelta(days=365 * cfg.years_of_lots))
        self.old_range = (max(first, 0), prices.index_on(as_of - timedelta(days=31)))
        self.recent_range = (prices.index_on(as_of - timedelta(days=28)), prices.index_on(as_of - timedelta(days=1)))

    def account_type(self, region: Region) -> AccountType:
        types = ACCOUNT_TYPES[region]
        taxable = next(t for t in types if t.taxable)
        if self.rng.random() < self.cfg.taxable_share:
            return taxable
        return self.rng.choice([t for t in types if not t.taxable])

    def fill(self, bundle: _Bundle, model: ModelPortfolio) -> None:
        """Give the account cash, lots and trades around its model."""
        rng, cfg = self.rng, self.cfg
        value = min(max(rng.lognormvariate(math.log(60_000), 1.0), 2_000), 3_000_000)
        if rng.random() < cfg.new_account_share:
            bundle.cash, bundle.deposit = round(value, 2), True
            return
        if rng.random() < cfg.deposit_share:
            bundle.cash, bundle.deposit = round(value * rng.uniform(0.02, 0.15), 2), True
        else:
            bundle.cash = round(rng.uniform(0, 80), 2)
        spread = 0.35 if rng.random() < cfg.drifted_share else 0.04
        raw = [s.target_weight * math.exp(rng.gauss(0, spread)) for s in model.sleeves]
        invested = value - bundle.cash
        harvested = rng.choice(model.sleeves) if rng.random() < cfg.recent_harvest_share else None
        positions: list[tuple[str, float, int | None]] = []  # symbol, value, forced lot day index
        for sleeve, w in zip(model.sleeves, raw, strict=True):
            v = invested * w / sum(raw)
            if sleeve is harvested and len(sleeve.securities) > 1:
                day = rng.randint(*self.recent_range)
                alt = sleeve.securities[1]
                self._harvest_sell(bundle, sleeve.primary, v, day)
                positions.append((alt, v, day))
                continue
            u = rng.random()
            if u < 0.75 or len(sleeve.securities) == 1:
                positions.append((sleeve.primary, v, None))
            elif u < 0.90:
                positions.append((rng.choice(sleeve.alternates), v, None))
            else:
                share = rng.uniform(0.3, 0.7)
                positions.append((sleeve.primary, v * share, None))
                positions.append((sleeve.alternates[0], v * (1 - share), None))
        self._lots(bundle, positions)
        if bundle.lots and rng.random() < cfg.recent_buy_share:
            self._recent_buy(bundle)
        if bundle.lots and rng.random() < cfg.old_sell_share:
            self._old_sell(bundle)

    def _trade(self, bundle: _Bundle, day: date, symbol: str, side: Side, qty: float, price: float, loss: bool) -> None:
        bundle.trades.append(
            Trade(
                trade_id=f"{bundle.account.id}-T{len(bundle.trades) + 1:03d}",
                date=day,
                account_id=bundle.account.id,
                symbol=symbol,
                side=side,
                quantity=float(qty),
                price=price,
                realized_loss=loss,
            )
        )

    def _harvest_sell(self, bundle: _Bundle, sold: str, value: float, day: int) -> None:
        when = self.prices.pydates[day]
        px = self.prices.price(sold, when)
        qty = max(1, int(value / px))
        self._trade(bundle, when, sold, Side.SELL, qty, px, True)

    def _lots(self, bundle: _Bundle, positions: Sequence[tuple[str, float, int | None]]) -> None:
        rng, prices = self.rng, self.prices
        budget = self.cfg.max_lots - 2  # spares for a recent buy and an unpriced holding
        for n_pos, (symbol, value, forced_day) in enumerate(positions):
            shares = int(value / prices.price(symbol, self.as_of))
            if shares < 1:
                continue
            if budget <= 0:
                break
            left_positions = len(positions) - n_pos - 1
            n_lots = min(rng.choice((1, 1, 1, 2, 2, 3, 4, 6)), shares, max(1, budget - left_positions))
            budget -= n_lots
            cuts = sorted(rng.sample(range(1, shares), n_lots - 1)) if n_lots > 1 else []
            sizes = [b - a for a, b in zip([0, *cuts], [*cuts, shares], strict=True)]
            for j, qty in enumerate(sizes):
                day = forced_day if forced_day is not None and j == 0 else rng.randint(*self.old_range)
                self._add_lot(bundle, symbol, qty, day)

    def _add_lot(self, bundle: _Bundle, symbol: str, qty: int, day: int) -> None:
        when = self.prices.pydates[day]
        unit = self.prices.closes[symbol][day] * (1 + self.rng.gauss(0, 0.004))
        cost = round(qty * unit, 2)
        bundle.lots.append(
            TaxLot(
                lot_id=f"{bundle.account.id}-L{len(bundle.lots) + 1:02d}",
                symbol=symbol,
                quantity=float(qty),
                cost_basis=cost,
                acquired_date=when,
            )
        )
        if (self.as_of - when).days <= self.cfg.history_days:
            self._trade(bundle, when, symbol, Side.BUY, qty, round(cost / qty, 4), False)

    def _recent_buy(self, bundle: _Bundle) -> None:
        symbol = self.rng.choice(bundle.lots).symbol
        px = self.prices.price(symbol, self.as_of)
        qty = max(1, int(self.rng.uniform(500, 5_000) / px))
        self._add_lot(bundle, symbol, qty, self.rng.randint(*self.recent_range))

    def _old_sell(self, bundle: _Bundle) -> None:
        lot = self.rng.choice(bundle.lots)
        day = self.rng.randint(self.prices.index_on(self.as_of - timedelta(days=300)), self.old_range[1])
        when = self.prices.pydates[day]
        px = self.prices.closes[lot.symbol][day]
        self._trade(bundle, when, lot.symbol, Side.SELL, max(1, int(lot.quantity // 3)), px, self.rng.random() < 0.4)

    def break_account(self, bundle: _Bundle, region: Region) -> None:
        """Make the account fail the daily run: closed, or holding a symbol nobody prices."""
        if self.rng.random() < 0.5:
            bundle.broken = "closed"
            bundle.account = bundle.account.model_copy(update={"status": AccountStatus.CLOSED})
            bundle.lots, bundle.cash = [], 0.0
            return
        bundle.broken = "missing_price"
        symbol = self.rng.choice(UNPRICED[region])
        cost = round(self.rng.uniform(1_000, 20_000), 2)
        bundle.lots.append(
            TaxLot(
                lot_id=f"{bundle.account.id}-L{len(bundle.lots) + 1:02d}",
                symbol=symbol,
                quantity=self.rng.randint(10, 400),
                cost_basis=cost,
                acquired_date=self.prices.pydates[self.rng.randint(*self.old_range)],
            )
        )


def generate_book(count: int, seed: int, as_of: date, config: GeneratorConfig | None = None) -> SyntheticBook:
    """Build a synthetic book of ``count`` accounts in memory (deterministic for the arguments)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    cfg = config or GeneratorConfig()
    prices = PriceTable(seed, as_of, cfg.years_of_lots + 1, cfg.drawdown_classes)
    models = generate_models(seed)
    by_region = {r: [m for m in models if m.region is r] for r in Region}
    sizes, size_weights = zip(*cfg.household_sizes, strict=True)
    bundles: list[_Bundle] = []
    household = 0
    while len(bundles) < count:
        rng = random.Random(f"tradeflow:{seed}:household:{household}")
        household += 1
        region = Region.CA if rng.random() < cfg.ca_share else Region.US
        size = min(rng.choices(sizes, size_weights)[0], count - len(bundles))
        ids = [f"{region.value}-{len(bundles) + k + 1:07d}" for k in range(size)]
        maker = _AccountMaker(rng, cfg, prices, as_of)
        family_model = rng.choice(by_region[region])
        for account_id in ids:
            kind = maker.account_type(region)
            model = family_model if rng.random() < 0.7 else rng.choice(by_region[region])
            tlh_share = cfg.tlh_taxable_share if kind.taxable else cfg.tlh_registered_share
            account = Account(
                id=account_id,
                region=region,
                type=kind,
                linked_account_ids=tuple(x for x in ids if x != account_id),
                model_id=model.id,
                tlh_enabled=rng.random() < tlh_share,
            )
            bundle = _Bundle(account)
            maker.fill(bundle, model)
            if rng.random() < cfg.broken_share:
                maker.break_account(bundle, region)
            bundles.append(bundle)
    price_days = [d for d in prices.pydates if (as_of - d).days <= cfg.price_history_days]
    return SyntheticBook(seed, as_of, models, bundles, prices, price_days, household)


def summarize(book: SyntheticBook) -> SeedSummary:
    """Counts describing a generated book."""
    accounts = book.accounts
    unpriced = sorted({lot.symbol for b in book.bundles for lot in b.lots if lot.symbol not in book.prices.closes})
    return SeedSummary(
        count=len(accounts),
        seed=book.seed,
        as_of=book.as_of,
        households=book.households,
        by_region=dict(sorted(Counter(a.region.value for a in accounts).items())),
        by_type=dict(sorted(Counter(a.type.value for a in accounts).items())),
        linked_accounts=sum(1 for a in accounts if a.linked_account_ids),
        tlh_enabled=sum(1 for a in accounts if a.tlh_enabled),
        models=[m.id for m in book.models],
        lots=sum(len(b.lots) for b in book.bundles),
        trades=sum(len(b.trades) for b in book.bundles),
        with_deposit=sum(1 for b in book.bundles if b.deposit),
        all_cash=sum(1 for b in book.bundles if not b.lots and b.account.active),
        priced_symbols=len(book.prices.closes),
        unpriced_symbols=unpriced,
        closed_accounts=[b.account.id for b in book.bundles if b.broken == "closed"],
        missing_price_accounts=[b.account.id for b in book.bundles if b.broken == "missing_price"],
    )


def write_book(source: BookSource, book: SyntheticBook) -> None:
    """Write a generated book into ``source`` in one batch."""
    with source.batch() as w:
        for day in book.price_days:
            w.put_prices(book.prices.on(day), day)
        for model in book.models:
            w.put_model(model)
        for b in book.bundles:
            w.put_account(b.account)
            w.put_lots(b.account.id, b.lots)
            w.set_cash(b.account.id, b.cash)
            if b.trades:
                w.put_trades(b.trades)


def seed_book(
    source: BookSource, count: int, seed: int, as_of: date, config: GeneratorConfig | None = None
) -> SeedSummary:
    """Generate ``count`` accounts (deterministic for ``seed``) and write them into ``source``."""
    began = time.perf_counter()
    book = generate_book(count, seed, as_of, config)
    generated = time.perf_counter()
    write_book(source, book)
    written = time.perf_counter()
    return summarize(book).model_copy(
        update={"generate_seconds": round(generated - began, 3), "write_seconds": round(written - generated, 3)}
    )


__all__ = [
    "GeneratorConfig",
    "SeedSummary",
    "SyntheticBook",
    "PriceTable",
    "generate_models",
    "generate_book",
    "summarize",
    "write_book",
    "seed_book",
]
