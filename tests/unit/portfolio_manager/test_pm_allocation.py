"""Allocation of a block's fill (pro rata, largest remainder): property tests and the example of docs/blocks.md."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio_manager.allocation import Request, allocate

accounts = st.lists(st.tuples(st.integers(1, 5000), st.booleans()), min_size=1, max_size=40)


def _requests(raw: list[tuple[int, bool]], fractional_allowed: bool) -> list[Request]:
    return [Request((f"A{i:03d}", 0), float(q), fractional_allowed and frac) for i, (q, frac) in enumerate(raw)]


@settings(max_examples=150, deadline=None)
@given(raw=accounts, ratio=st.floats(0, 1), data=st.data())
def test_whole_share_allocations_sum_to_the_fill_and_never_exceed_a_request(raw, ratio, data) -> None:
    requests = _requests(raw, fractional_allowed=False)
    total = sum(r.quantity for r in requests)
    fill = float(int(total * ratio))
    result = allocate(fill, requests)
    assert result.unallocated == 0
    assert sum(result.quantities) == fill
    for request, quantity in zip(requests, result.quantities, strict=True):
        assert 0 <= quantity <= request.quantity and quantity == int(quantity)
    # deterministic and stable under the order of the contributions
    assert allocate(fill, requests).quantities == result.quantities
    shuffled = data.draw(st.permutations(range(len(requests))))
    again = allocate(fill, [requests[i] for i in shuffled])
    assert {requests[i].key: q for i, q in zip(shuffled, again.quantities, strict=True)} == \
        {r.key: q for r, q in zip(requests, result.quantities, strict=True)}


@settings(max_examples=150, deadline=None)
@given(raw=accounts, ratio=st.floats(0, 1))
def test_fractional_accounts_take_fractions_and_the_sum_is_exact(raw, ratio) -> None:
    requests = _requests(raw, fractional_allowed=True)
    total = sum(r.quantity for r in requests)
    fill = round(total * ratio, 6)
    result = allocate(fill, requests)
    if fill == int(fill):
        assert result.unallocated == 0
    assert 0 <= result.unallocated < 1
    if result.unallocated:  # only a fraction no fractional account had room for
        assert all(q == r.quantity for r, q in zip(requests, result.quantities, strict=True) if r.fractional)
    assert round(sum(result.quantities) + result.unallocated, 6) == fill
    for request, quantity in zip(requests, result.quantities, strict=True):
        assert 0 <= quantity <= request.quantity
        if not request.fractional:
            assert quantity == int(quantity)


@settings(max_examples=200, deadline=None)
@given(raw=accounts)
def test_a_full_fill_gives_every_order_what_it_asked(raw) -> None:
    requests = _requests(raw, fractional_allowed=True)
    total = sum(r.quantity for r in requests)
    assert allocate(total, requests).quantities == [r.quantity for r in requests]


def test_pro_rata_is_close_to_exact_shares() -> None:
    rng = random.Random(7)
    requests = [Request((f"A{i}", 0), float(rng.randint(1, 300))) for i in range(50)]
    total = sum(r.quantity for r in requests)
    fill = float(int(total * 0.6))
    for request, quantity in zip(requests, allocate(fill, requests).quantities, strict=True):
        assert abs(quantity - fill * request.quantity / total) < 1  # at most one share from the exact share


def test_the_readme_example() -> None:
    # A block of 2,000 + 1,000 + 1,000 + 500 = 4,500 filled 1,000: exact shares 444.44, 222.22, 222.22, 111.11.
    requests = [Request(("A", 0), 2000), Request(("B", 0), 1000), Request(("C", 0), 1000), Request(("D", 0), 500)]
    assert allocate(1000, requests).quantities == [445, 222, 222, 111]
    # 7 shares over three equal requests: 2.33 each; the tie on the remainder goes to the smaller key.
    equal = [Request(("C", 0), 10), Request(("A", 0), 10), Request(("B", 0), 10)]
    assert allocate(7, equal).quantities == [2, 3, 2]


def test_a_fill_above_the_requests_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be allocated"):
        allocate(11, [Request(("A", 0), 10)])
