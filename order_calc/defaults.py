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
#: Work bound of one MILP solve: branch-and-bound nodes (HiGHS ``mip_max_nodes``). Past it the
#: best plan found so far is used (or greedy, when it is not better): the same plan on any
#: machine at any load. Measured: 9 in 10 generated accounts stop at the root node, the
#: hardest of 3,500 needed 6,294 nodes (about 0.4 s on a quiet core).
MILP_NODE_LIMIT: Final = 10_000
#: HiGHS threads for a MILP solve: one, so that nothing depends on how threads interleave.
MILP_THREADS: Final = 1
