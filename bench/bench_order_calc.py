"""Benchmark of order_calc: median time per plan, greedy vs MILP, on realistic accounts.

Run ``.venv/bin/python bench/bench_order_calc.py [N_ACCOUNTS] [SEED]``; prints a table and writes
``bench/results/order_calc.json``. ``run(n_accounts, seed)`` returns the same figures as a
dict for a master ``make bench``.

Accounts (seeded): 4 to 12 sleeves of 1 to 3 securities, up to 40 lots, both regions and
every account type, TLH on, drifted holdings, some new cash, a few linked-account trades in
the last 40 days, one account in five fractional. Each plan is timed end to end from the
plain-dict request (validation included), one core, after one warm-up plan per solver.
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from order_calc import plan_orders  # noqa: E402
from order_calc.defaults import ACCOUNT_TYPES  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "order_calc.json"
AS_OF = date(2025, 6, 2)
TARGETS_MS = {"greedy": 1.0, "milp": 20.0}


def make_account(rng: random.Random, i: int) -> dict[str, Any]:
    """One realistic request (plain JSON form)."""
    region = rng.choice(["CA", "US"])
    account_type = rng.choice(ACCOUNT_TYPES[region])
    n_sleeves = rng.randint(4, 12)
    raw = [rng.uniform(0.5, 3.0) for _ in range(n_sleeves)]
    weights = [w / sum(raw) for w in raw]
    sleeves, prices = [], {}
    for k in range(n_sleeves):
        secs = [f"S{i}K{k}N{j}" for j in range(rng.choice([1, 2, 2, 3]))]
        for s in secs:
            prices[s] = round(rng.uniform(10, 400), 2)
        sleeves.append({"id": f"K{k}", "target_weight": weights[k], "securities": secs})
    value = rng.choice([20_000, 80_000, 250_000, 1_000_000]) * rng.uniform(0.8, 1.2)
    fractional = rng.random() < 0.2
    lots: list[dict[str, Any]] = []
    n_lots = rng.randint(n_sleeves, 40)
    for n in range(n_lots):
        sleeve = sleeves[n % n_sleeves] if n < n_sleeves else rng.choice(sleeves)
        sym = sleeve["securities"][0] if rng.random() < 0.7 else rng.choice(sleeve["securities"])
        share = sleeve["target_weight"] * value * rng.uniform(0.5, 1.5) / max(1, n_lots // n_sleeves)
        qty = share / prices[sym]
        qty = round(qty, 4) if fractional else max(1, round(qty))
        acquired = AS_OF - timedelta(days=rng.randint(1, 1500))
        if rng.random() < 0.03:
            acquired = date(2024, 2, 29)
        lots.append({"lot_id": f"L{n}", "symbol": sym, "quantity": qty,
                     "cost_basis": round(qty * prices[sym] * rng.uniform(0.6, 1.4), 2),
                     "acquired_date": acquired.isoformat()})
    symbols = list(prices)
    history = [
        {"date": (AS_OF - timedelta(days=rng.randint(0, 40))).isoformat(),
         "account_id": rng.choice([f"A{i}", f"A{i}-SPOUSE", f"A{i}-RRSP"]), "symbol": rng.choice(symbols),
         "side": rng.choice(["BUY", "SELL"]), "quantity": rng.randint(1, 50), "realized_loss": rng.random() < 0.5}
        for _ in range(rng.randint(0, 4))
    ]
    groups = [[s["securities"][0], f"TWIN{i}K{k}"] for k, s in enumerate(sleeves) if rng.random() < 0.3]
    return {
        "as_of": AS_OF.isoformat(),
        "account": {"id": f"A{i}", "region": region, "type": account_type, "tlh_enabled": True},
        "cash": round(value * rng.choice([0.0, 0.005, 0.02, 0.1]), 2),
        "lots": lots,
        "prices": prices,
        "sleeves": sleeves,
        "identical_groups": groups,
        "trade_history": history,
        "parameters": {"fractional": fractional, "cash_reserve_pct": rng.choice([0.0, 0.0, 0.01]),
                       "min_trade_value": rng.choice([50, 100, 250])},
    }


def _time(requests: list[dict[str, Any]], solver: str) -> tuple[list[float], dict[str, int]]:
    timings: list[float] = []
    outcome: dict[str, int] = {}
    plan_orders({**requests[0], "parameters": {**requests[0]["parameters"], "solver": solver}})  # warm-up
    for req in requests:
        req = {**req, "parameters": {**req["parameters"], "solver": solver}}
        t0 = time.perf_counter()
        plan = plan_orders(req)
        timings.append(time.perf_counter() - t0)
        key = f"{plan.mode}/{plan.solver_used or '-'}"
        outcome[key] = outcome.get(key, 0) + 1
    return timings, outcome


def run(n_accounts: int = 500, seed: int = 1) -> dict[str, Any]:
    """Time ``n_accounts`` seeded accounts with each solver; write and return the results."""
    rng = random.Random(seed)
    requests = [make_account(rng, i) for i in range(n_accounts)]
    result: dict[str, Any] = {
        "benchmark": "order_calc",
        "n_accounts": n_accounts,
        "seed": seed,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "solvers": {},
    }
    for solver in ("greedy", "milp"):
        timings, outcome = _time(requests, solver)
        median = statistics.median(timings)
        result["solvers"][solver] = {
            "median_ms": round(median * 1e3, 3),
            "p95_ms": round(sorted(timings)[int(0.95 * (len(timings) - 1))] * 1e3, 3),
            "max_ms": round(max(timings) * 1e3, 3),
            "plans_per_s": round(len(timings) / sum(timings), 1),
            "target_ms": TARGETS_MS[solver],
            "within_target": median * 1e3 < TARGETS_MS[solver],
            "outcomes": dict(sorted(outcome.items())),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _table(result: dict[str, Any]) -> str:
    head = f"{'solver':<8} {'median ms':>10} {'p95 ms':>9} {'max ms':>9} {'plans/s':>9} {'target':>8}"
    lines = [f"order_calc: {result['n_accounts']} accounts, seed {result['seed']}, one core", head, "-" * len(head)]
    for name, s in result["solvers"].items():
        ok = "ok" if s["within_target"] else "MISSED"
        lines.append(f"{name:<8} {s['median_ms']:>10.3f} {s['p95_ms']:>9.3f} {s['max_ms']:>9.3f} "
                     f"{s['plans_per_s']:>9.1f} {'<' + str(s['target_ms']):>6} {ok}")
    for name, s in result["solvers"].items():
        lines.append(f"{name} outcomes (mode/solver used): {s['outcomes']}")
    return "\n".join(lines)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(_table(run(n, seed)))
    print(f"written to {RESULTS.relative_to(ROOT)}")
