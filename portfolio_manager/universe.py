"""The synthetic investment universe: asset classes per region, their ETFs, and model templates.

Tickers look like real ones (and some are) but the book built from them is synthetic: prices,
weights and holdings come from :mod:`portfolio_manager.generator`, not from any market.
Each asset class lists its securities primary first, then 1-2 alternates; where two of them
track the same index they form an *identical group* (a purchase of one blocks the harvest of
the other, and one is never the other's replacement).
"""

from __future__ import annotations

from dataclasses import dataclass

from portfolio_manager.book import Region


@dataclass(frozen=True)
class AssetClass:
    """One asset class: its ETFs (primary first), identical pair, and price behaviour."""

    id: str
    securities: tuple[str, ...]
    identical: tuple[str, ...] = ()
    equity: bool = True
    annual_drift: float = 0.07
    annual_vol: float = 0.16
    base_price: float = 40.0


def _eq(id: str, secs: tuple[str, ...], ident: tuple[str, ...] = (), vol: float = 0.14, px: float = 40.0) -> AssetClass:
    return AssetClass(id, secs, ident, True, 0.08, vol, px)


def _fi(id: str, secs: tuple[str, ...], ident: tuple[str, ...] = (), vol: float = 0.05, px: float = 20.0) -> AssetClass:
    return AssetClass(id, secs, ident, False, 0.03, vol, px)


UNIVERSE: dict[Region, tuple[AssetClass, ...]] = {
    Region.CA: (
        _eq("CA_EQ", ("VCN", "ZCN", "XIC"), ("VCN", "XIC"), px=45.0),
        _eq("US_EQ", ("VUN", "XUU", "VUS"), ("VUN", "VUS"), px=90.0),
        _eq("US_LC", ("ZSP", "XUS", "VFV"), ("ZSP", "VFV"), px=80.0),
        _eq("INTL_EQ", ("XEF", "VIU", "ZEA"), ("XEF", "ZEA"), px=35.0),
        _eq("EM_EQ", ("XEC", "VEE", "ZEM"), ("XEC", "ZEM"), vol=0.18, px=30.0),
        _eq("CA_DIV", ("VDY", "XEI"), px=45.0),
        _eq("CA_SC", ("XCS", "VCE"), vol=0.18, px=25.0),
        _eq("REIT", ("ZRE", "XRE", "VRE"), ("ZRE", "VRE"), vol=0.18, px=20.0),
        _eq("GLOBAL_EQ", ("XAW", "VXC"), px=38.0),
        _fi("CA_AGG", ("ZAG", "XBB", "VAB"), ("XBB", "VAB"), px=14.0),
        _fi("CA_SHORT", ("VSB", "XSB", "ZSB"), ("VSB", "ZSB"), vol=0.03, px=23.0),
        _fi("CA_CORP", ("XCB", "ZCB"), px=20.0),
        _fi("US_AGG", ("VBU", "ZUAG"), px=24.0),
        _fi("CA_RRB", ("XRB", "ZRR"), vol=0.07, px=22.0),
    ),
    Region.US: (
        _eq("US_TOTAL", ("VTI", "SCHB", "ITOT"), ("VTI", "ITOT"), px=250.0),
        _eq("US_LC", ("VOO", "SCHX", "IVV"), ("VOO", "IVV"), px=480.0),
        _eq("US_SC", ("VB", "SCHA", "IJR"), vol=0.18, px=210.0),
        _eq("US_VALUE", ("VTV", "SCHV", "IWD"), px=160.0),
        _eq("DEV_INTL", ("VEA", "IEFA", "SCHF"), ("VEA", "SCHF"), px=50.0),
        _eq("EM", ("VWO", "IEMG", "SCHE"), ("VWO", "SCHE"), vol=0.18, px=44.0),
        _eq("REIT", ("VNQ", "SCHH", "USRT"), vol=0.18, px=85.0),
        _eq("US_DIV", ("VIG", "DGRO", "SCHD"), px=180.0),
        _eq("INTL_SC", ("VSS", "SCZ"), vol=0.17, px=115.0),
        _fi("US_AGG", ("BND", "SCHZ", "AGG"), ("BND", "AGG"), px=72.0),
        _fi("US_SHORT", ("VGSH", "SCHO"), vol=0.02, px=58.0),
        _fi("TIPS", ("SCHP", "VTIP", "TIP"), vol=0.06, px=26.0),
        _fi("MUNI", ("VTEB", "MUB"), vol=0.05, px=50.0),
        _fi("INTL_BOND", ("BNDX", "IAGG"), vol=0.05, px=49.0),
    ),
}

# Symbols that broken accounts hold and that are never priced (delisted / halted).
UNPRICED: dict[Region, tuple[str, ...]] = {Region.CA: ("XDLS", "ZHLT"), Region.US: ("DLSTQ", "HLTDX")}


@dataclass(frozen=True)
class ModelTemplate:
    """The shape of a model portfolio: equity share and range of sleeve counts."""

    suffix: str
    name: str
    equity_share: float
    min_sleeves: int
    max_sleeves: int


MODEL_TEMPLATES: tuple[ModelTemplate, ...] = (
    ModelTemplate("CONSERVATIVE", "Conservative", 0.35, 4, 6),
    ModelTemplate("BALANCED", "Balanced", 0.60, 6, 8),
    ModelTemplate("GROWTH", "Growth", 0.80, 8, 10),
    ModelTemplate("EQUITY", "All equity (plus a little cash-like bonds)", 0.92, 10, 12),
)


def asset_class_of(region: Region, symbol: str) -> AssetClass | None:
    """The asset class listing ``symbol`` in ``region``, or None."""
    return next((c for c in UNIVERSE[region] if symbol in c.securities), None)


__all__ = ["AssetClass", "UNIVERSE", "UNPRICED", "ModelTemplate", "MODEL_TEMPLATES", "asset_class_of"]
