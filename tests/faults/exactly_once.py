"""The brokerage side of the invariants: one order per approved order, one receipt per key."""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine.api import Engine
from engine.instance import Outcome
from engine.testing import store_of
from portfolio_manager.daily import instance_id_for
from portfolio_manager.proposals import ProposalStatus


def submit_seq(engine: Engine, run: str, account: str) -> int:
    """The seq of the applied submission step of ``account``'s instance in ``run`` (part of its orders' keys)."""
    history = store_of(engine).activities(instance_id_for(run, account))
    return next(a["seq"] for a in history if a["node"] == "submit" and a["outcome"] == Outcome.APPLIED.value)


def assert_exactly_once(svc: Any, run: str, accounts: list[str], seq: int = 1,
                        seqs: dict[str, int] | None = None) -> tuple[int, int]:
    """Every approved order of ``accounts`` in ``run`` reached the brokerage once; (accepted, received).

    ``svc.brokerage`` may be a wrapper with the SimulatedBrokerage as ``inner``. ``seq``: the
    seq of the submission step (1 in ``submit-orders``; later inside a rebalance); ``seqs``: the
    same per account, where it differs.
    """
    proposals = svc.proposals.get_many(run, accounts)
    expected = Counter((p.account_id, o.symbol, o.side, o.quantity) for p in proposals for o in p.orders)
    brokerage = getattr(svc.brokerage, "inner", svc.brokerage)
    mine = set(accounts)
    accepted = [r for r in brokerage.accepted_orders() if r.account_id in mine]
    assert Counter((r.account_id, r.symbol, r.side.value, r.quantity) for r in accepted) == expected
    assert len({r.idempotency_key for r in accepted}) == len(accepted) == sum(expected.values())
    for proposal in proposals:
        assert proposal.status is ProposalStatus.SUBMITTED, (proposal.account_id, proposal.status)
        assert [r["idempotency_key"] for r in proposal.receipts] == \
            [f"{proposal.submission}:submit:{(seqs or {}).get(proposal.account_id, seq)}:{o.index}"
             for o in proposal.orders]
    received = sum(1 for o in brokerage.received_orders() if o.account_id in mine)
    return len(accepted), received
