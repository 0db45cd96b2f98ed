"""A shadow of the morning beside production, and the diff of 20,000 accounts.

In a sandbox of its own on the shared Redis (:mod:`bench.sandbox`), on the fleets the plugin
declares (with beat):

1. seed N accounts (default 2,000), publish the definitions and a ``canary`` of both rebalances
   with a tighter drift band (0.01 against 0.05), warm the fleets up;
2. the production morning alone (until every account awaits review or ended), then its
   ``canary`` shadow alone on the same fleets (until every shadow stopped): shadow time ÷
   production time;
3. the pm diff of the two runs, then of 20,000 accounts against 20,000: the two runs' instance
   hashes copied under new ids (x10, account ids suffixed) into two more runs, and diffed.

    python -m bench.shadow [--accounts 2000] [--diff-accounts 20000]

Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.sandbox import Sandbox
from engine.definitions.validation import load_definition
from engine.ops.fleet import Fleet, default_fleets


def _settle(engine: Any, run: str, timeout: float = 1800) -> Any:
    progress = engine.wait_for_run(run, timeout=timeout, poll=0.2, settled=True)
    if not progress.settled:
        raise RuntimeError(f"run {run} not settled after {timeout} s: {progress.counts}")
    return progress


def _copy_run(sandbox: Sandbox, source: str, target: str, times: int) -> int:
    """Copy every instance hash of ``source`` ``times`` times into run ``target`` (new ids, account ids suffixed)."""
    client, keys = sandbox.client, sandbox.store.keys  # the sandbox's own store: the bench fabricates a run
    ids = sandbox.store.run_ids(source)
    raw = {iid: client.hgetall(keys.instance(iid)) for iid in ids}
    made = 0
    for copy in range(times):
        pipe = client.pipeline(transaction=False)
        for iid, fields in raw.items():
            data = json.loads(fields[b"data"])
            data["account_id"] = f"{data['account_id']}-{copy}"
            new = f"{target}-{copy}-{iid}"
            pipe.hset(keys.instance(new), mapping={**fields, b"id": new, b"run": target, b"data": json.dumps(data)})
            pipe.sadd(keys.run_status(target, fields[b"status"].decode()), new)
            made += 1
        pipe.execute()
    sandbox.store.touch_run(target, {"total": made})
    return made


def run(redis_url: str, accounts: int, diff_accounts: int) -> dict[str, Any]:
    """The figures of one measurement (see the module docstring)."""
    from portfolio_manager.cli import last_session
    from portfolio_manager.config import DEFAULT_DEFINITIONS_DIR
    from portfolio_manager.daily import ensure_definitions, start_daily_rebalance
    from portfolio_manager.diff import diff_runs
    from portfolio_manager.generator import seed_book
    from portfolio_manager.shadow import start_shadow

    review = datetime.now(UTC) + timedelta(days=1)
    with Sandbox(redis_url) as sandbox:
        engine, services = sandbox.engine, sandbox.services()
        run_date = last_session()
        seed_book(services.book, accounts, 7, run_date)
        ensure_definitions(engine, DEFAULT_DEFINITIONS_DIR)
        for name in ("rebalance-ca", "rebalance-us"):
            document = json.loads(engine.definition(name, "production").to_json())
            document.pop("version", None)
            document["parameters"]["plan"]["drift_band_abs"] = 0.01
            engine.publish(load_definition(json.dumps(document)), alias="canary")
        figures: dict[str, Any] = {"accounts": accounts, "fleets": [str(s) for s in default_fleets()]}
        with Fleet(default_fleets(), beat=True, env=sandbox.env()):
            warm = start_daily_rebalance(engine, services.book, run_date, run="bench-warmup", limit=50,
                                         wait_for_open=False, review_until=review)
            _settle(engine, warm.run, 300)
            began = time.monotonic()
            prod = start_daily_rebalance(engine, services.book, run_date, run="bench-prod", wait_for_open=False,
                                         review_until=review)
            _settle(engine, prod.run)
            figures["production_seconds"] = round(time.monotonic() - began, 1)
            began = time.monotonic()
            shadow = start_shadow(engine, services.book, run_date, version="canary", run="bench-shadow",
                                  review_until=review)
            _settle(engine, shadow.run)
            figures["shadow_seconds"] = round(time.monotonic() - began, 1)
        figures["shadow_over_production"] = round(figures["shadow_seconds"] / figures["production_seconds"], 2)
        began = time.monotonic()
        small = diff_runs(engine, prod.run, shadow.run)
        figures["diff_seconds"] = round(time.monotonic() - began, 2)
        figures["diff_summary"] = small.summary()
        times = max(diff_accounts // max(accounts, 1), 1)
        _copy_run(sandbox, prod.run, "bench-diff-a", times)
        _copy_run(sandbox, shadow.run, "bench-diff-b", times)
        began = time.monotonic()
        big = diff_runs(engine, "bench-diff-a", "bench-diff-b")
        figures["big_diff_seconds"] = round(time.monotonic() - began, 2)
        figures["big_diff_summary"] = big.summary()
        began = time.monotonic()
        json.dumps(big.to_dict())
        figures["big_diff_json_seconds"] = round(time.monotonic() - began, 2)
    return figures


def main() -> None:
    """``python -m bench.shadow``: print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--diff-accounts", type=int, default=20_000)
    args = parser.parse_args()
    url = os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/14")
    print(json.dumps(run(url, args.accounts, args.diff_accounts), indent=2))


if __name__ == "__main__":
    main()
