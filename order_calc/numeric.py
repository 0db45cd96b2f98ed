"""Quantity and money rounding rules of the contract.

Floor, truncation and half-down rounding absorb binary floating-point noise: a ratio that
is mathematically whole (``0.7 / 0.1``) but computes a hair below (``6.999999999999999``)
counts as whole. The tolerance is relative, ``1e-12``, far below a cent or a 1e-4 share
and far above the rounding error of a few float operations. Where a quantity is limited by
the cash available, :func:`affordable` makes sure the tolerance never buys more than the
cash (beyond ``1e-9``).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

_EPS = 1e-12
_CASH_TOL = 1e-9
_CENT = Decimal("0.01")
_SCALE = 10_000  # 4 decimals for fractional shares


def _nudge(x: float) -> float:
    return _EPS * max(1.0, abs(x))


def floor_units(x: float) -> int:
    """``floor(x)`` for a ratio of money amounts, tolerant of float noise."""
    return math.floor(x + _nudge(x))


def truncate4(x: float) -> float:
    """Truncate (never round) to 4 decimals, tolerant of float noise; ``truncate4(1.23459) == 1.2345``."""
    scaled = x * _SCALE
    return math.floor(scaled + _nudge(scaled)) / _SCALE


def quantity_down(x: float, fractional: bool) -> float:
    """Whole shares below ``x`` (floor), or ``x`` truncated to 4 decimals when fractional."""
    return truncate4(x) if fractional else float(floor_units(x))


def affordable(cash: float, price: float, fractional: bool) -> float:
    """The most shares (or 1e-4 shares) of ``price`` that ``cash`` pays for; 0 when cash <= 0."""
    if cash <= 0:
        return 0.0
    q = quantity_down(cash / price, fractional)
    step = 1e-4 if fractional else 1.0
    while q > 0 and q * price > cash + _CASH_TOL:
        q = truncate4(q - step) if fractional else q - step
    return max(q, 0.0)


def round_half_down(x: float) -> int:
    """Round to the nearest whole number, halves down: 2.5 -> 2, 2.51 -> 3, -0.5 -> -1."""
    return math.ceil(x - 0.5 - _nudge(x))


def cents(x: float) -> float:
    """Money for output: the float's shortest decimal form rounded to cents, halves away from zero."""
    value = float(Decimal(repr(x)).quantize(_CENT, rounding=ROUND_HALF_UP))
    return value + 0.0  # no "-0.0" in the output


def out_quantity(q: float) -> int | float:
    """A quantity for output: an ``int`` when whole, else rounded to 4 decimals."""
    r = round(q, 4)
    return int(r) if r == int(r) else r
