"""Named defaults and vocabularies of the contract, in one place."""

from __future__ import annotations

from typing import Final

REGIONS: Final = ("CA", "US")
ACCOUNT_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "CA": ("TFSA", "RRSP", "NON_REGISTERED"),
    "US": ("IRA", "ROTH_IRA", "TAXABLE"),
}
#: Account types whose sells realise taxable gains: TLH applies and sells carry ``lots``.
TAXABLE_TYPES: Final[dict[str, str]] = {"CA": "NON_REGISTERED", "US": "TAXABLE"}

LOT_METHODS: Final = ("TAX_MIN", "HIFO", "FIFO")
SOLVERS: Final = ("milp", "greedy")
SIDES: Final = ("BUY", "SELL")

DRIFT_BAND_ABS: Final = 0.05
DRIFT_BAND_REL: Final = None
MIN_TRADE_VALUE: Final = 100.0
CASH_RESERVE_PCT: Final = 0.0
FRACTIONAL: Final = False
LOT_METHOD: Final = "TAX_MIN"
WASH_DAYS: Final = 30
SOLVER: Final = "milp"
#: TLH thresholds by region: (minimum loss as a fraction of cost, minimum loss in money).
TLH_THRESHOLDS: Final[dict[str, tuple[float, float]]] = {"CA": (0.05, 500.0), "US": (0.05, 200.0)}

#: Target weights must sum to 1 within this tolerance.
WEIGHT_SUM_TOLERANCE: Final = 1e-6
#: Fractional quantities are truncated to this many decimals.
FRACTION_DECIMALS: Final = 4
#: Weight of the traded value in the MILP objective (tie-break towards less turnover).
MILP_TURNOVER_WEIGHT: Final = 1e-6
#: Wall-clock limit of one MILP solve, in seconds; greedy is used past it.
MILP_TIME_LIMIT: Final = 1.0
