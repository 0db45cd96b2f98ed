"""Allocating a block's fill back to the orders it was made of: pro rata, largest remainder.

Pure functions, no I/O. Quantities are counted in integer micro-shares (1e-6) so the sum is
exact. The rule (docs/blocks.md):

1. Each order's exact share is ``fill * requested / total requested``.
2. It gets that share rounded down -- to a whole share, or to a micro-share when its account
   trades fractional shares.
3. What is left is handed out a share at a time (to a fractional account: up to a share, as much
   as is left), in order of largest remainder; ties go to the larger request, then to the smaller
   key (account id, then order index) -- a deterministic order that does not depend on the order
   in which the orders arrived. Passes repeat until nothing is left.
4. Never more than an order asked: a unit goes only to an order below its request.

A whole-share fill always allocates exactly (the sum of the requests is at least the fill, so
there is room). A fraction of a share that no fractional order has room for is ``unallocated``
(it stays with the firm's error account); the simulated brokerage fills a block with no
fractional order in whole shares only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MICRO = 1_000_000


def to_units(quantity: float) -> int:
    """A quantity in micro-shares (rounded to the nearest)."""
    return round(quantity * MICRO)


def from_units(units: int) -> float:
    """Micro-shares back to a quantity (whole numbers stay whole)."""
    return units // MICRO if units % MICRO == 0 else units / MICRO


@dataclass(frozen=True)
class Request:
    """One order's claim on a block: who, how much, and whether its account takes fractional shares."""

    key: tuple[str, int]  # (account id, order index): identifies the order, and breaks the last tie
    quantity: float
    fractional: bool = False


@dataclass(frozen=True)
class Allocation:
    """What a block's fill gives each order (same order as the requests), and any remainder."""

    quantities: list[float]
    unallocated: float


def allocate(fill: float, requests: Sequence[Request]) -> Allocation:
    """Allocate ``fill`` shares among ``requests`` (see the module docstring for the rule)."""
    wanted = [to_units(r.quantity) for r in requests]
    total = sum(wanted)
    left = to_units(fill)
    if left < 0 or left > total:
        raise ValueError(f"a fill of {fill:g} cannot be allocated to requests totalling {from_units(total):g}")
    if left == total:
        return Allocation([from_units(w) for w in wanted], 0)
    steps = [1 if r.fractional else MICRO for r in requests]
    given: list[int] = []
    remainders: list[int] = []
    for w, step in zip(wanted, steps, strict=True):
        exact = left * w  # the share is exact / total units
        units = exact // (total * step) * step if total else 0
        given.append(units)
        remainders.append(exact - units * total)
    left -= sum(given)
    order = sorted(range(len(requests)),
                   key=lambda i: (-remainders[i], -wanted[i], requests[i].key))
    while left > 0:
        progressed = False
        for i in order:
            # a whole share; or, for a fractional account, up to a share (what is left of the fill, its room)
            take = min(MICRO, left, wanted[i] - given[i]) if steps[i] == 1 else MICRO
            if take > 0 and left >= take and given[i] + take <= wanted[i]:
                given[i] += take
                left -= take
                progressed = True
                if left == 0:
                    break
        if not progressed:
            break
    return Allocation([from_units(g) for g in given], from_units(left))
