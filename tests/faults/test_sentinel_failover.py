"""Scenario 12: Redis Sentinel failover in the middle of a morning.

A primary, a replica and three sentinels on loopback (``tests/faults/sentinel.py``; the
primary is judged down after 1 s). The production fleets (``engine`` threads,
``portfolio_manager`` threads, ``order_calc`` prefork) and beat reach Redis only through
``TRADEFLOW_REDIS_URL=sentinel://...`` with ``TRADEFLOW_REDIS_WAIT_REPLICAS=1``. A morning of
``ACCOUNTS`` accounts runs (review cut-off a day away, each account submitting its own orders on
approval: ``block_orders=False``); once a fifth of it has settled (ended, or awaiting review)
the primary is killed with ``kill -9``. Once the run has settled, every proposal is approved
with the CLI by two people (four-eyes proposals need both) and each instance submits its orders.

Pass criteria:

- the sentinels promote the replica; every worker node and beat carries on by itself (same
  pids, none restarted, no ``Unrecoverable error`` logged) and no process reports
  ``DataSetLost``: the epoch key replicated, so the promoted replica is the same data set;
- the CLI (``tradeflow runs`` / ``pm approve``, fresh processes given only the sentinel URL)
  works against the new master;
- the old primary, started again, rejoins as a replica of the new master;
- every instance of the morning ends terminal with one applied transition per step
  (``check_invariants``), and the brokerage holds exactly one order per approved order, keyed
  by the seq of each instance's submission step (``assert_exactly_once``).

Run: ``.venv/bin/pytest -s -m faults tests/faults/test_sentinel_failover.py``
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.api import Engine
from engine.broker import CeleryEnqueuer
from engine.clock import OffsetFileClock
from engine.config import Settings
from engine.connections import broker_for, client_for
from engine.ops.fleet import FleetSpec
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import store_of
from portfolio_manager.actions import build_services
from portfolio_manager.cli import last_session
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import start_daily_rebalance
from portfolio_manager.generator import GeneratorConfig, seed_book
from tests.faults.chaos import publish_short_timeouts
from tests.faults.exactly_once import assert_exactly_once, submit_seq
from tests.faults.harness import RETENTION_SECONDS, FaultLab, lab_env
from tests.faults.invariants import check_invariants
from tests.faults.sentinel import MASTER, SentinelGroup
from tests.integration.conftest import sender_app

ACCOUNTS = 300
NODES = {"engine": FleetSpec("engine", "threads", 4), "portfolio_manager": FleetSpec("portfolio_manager", "threads", 8),
         "order_calc": FleetSpec("order_calc", "prefork", 2)}
PM_PREFIX = "sentinel:pm:"
REVIEWERS = ("sentinel-test", "sentinel-test2")  # four-eyes: a second, different person
FOUR_EYES_OVER = 100_000.0  # lower than production's, so that part of the proposals need two people


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``tradeflow ARGS`` in a fresh process with the lab's environment."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env={**os.environ, **env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_morning_survives_the_loss_of_the_primary(tmp_path: Path) -> None:
    with SentinelGroup(tmp_path / "redis") as group:
        prefix = f"tfsent-{uuid.uuid4().hex[:8]}"
        env = lab_env(tmp_path, group.url, prefix, **group.env(),
                      TRADEFLOW_SERVICE_MODULES="portfolio_manager.actions,order_calc.actions",
                      TRADEFLOW_PM_PREFIX=PM_PREFIX, TRADEFLOW_TIMER_INTERVAL="1", TRADEFLOW_SWEEP_INTERVAL="2",
                      TRADEFLOW_REDIS_WAIT_REPLICAS="1", TRADEFLOW_REDIS_WAIT_MS="100")
        settings = Settings.from_env(env)
        client = client_for(settings, socket_timeout=10)
        broker_url, options = broker_for(settings)
        sender = sender_app(broker_url, prefix)
        sender.conf.broker_transport_options = {**sender.conf.broker_transport_options, **options}
        engine = Engine(RedisStore(client, Keys(prefix), RETENTION_SECONDS), CeleryEnqueuer(sender),
                        OffsetFileClock(tmp_path / "clock-offset"))
        lab = FaultLab(tmp_path, group.primary, prefix, env, engine, client, dict(NODES))
        try:
            for name in [*NODES, "beat"]:
                lab.start_node(name)
            svc = build_services(PMSettings.from_env(env), client=client)
            run_date = last_session()
            seeded = seed_book(svc.book, ACCOUNTS, 12, run_date, GeneratorConfig())
            publish_short_timeouts(lab, 30.0, four_eyes_over=FOUR_EYES_OVER)
            epoch = store_of(engine).ensure_epoch()
            run = "sentinel-morning"
            until = datetime.now(UTC) + timedelta(days=1)  # the review never closes during the test
            # each approved account submits its own orders (blocks under faults: test_block_faults)
            started = start_daily_rebalance(engine, svc.book, run_date, run=run, review_until=until,
                                            block_orders=False)
            total = sum(started.started.values())

            def settled_count() -> int:
                progress = engine.progress(run)
                return progress.finished + progress.awaiting

            lab.wait_until(lambda: settled_count() >= total // 5, 300, "a fifth of the morning")
            pids = {name: lab.node_pid(name) for name in lab.nodes}
            settled_at_kill = settled_count()

            group.primary.kill()  # kill -9: no shutdown
            failover_seconds = group.wait_failover()
            group.rejoin_old_primary()

            # The CLI, in fresh processes given only the sentinel URL, works on the new master.
            listed = _cli(env, "runs")
            assert listed.returncode == 0 and run in listed.stdout, listed.stderr
            lab.wait_until(lambda: engine.progress(run).settled, 300, lambda: f"the morning: {engine.progress(run)}")
            for who in REVIEWERS:  # every proposal once, then the four-eyes ones a second time
                approved = _cli({**env, "TRADEFLOW_PRINCIPAL": who, "TRADEFLOW_PRINCIPAL_ROLES": "pm"},
                                "pm", "approve", run, "--all")
                assert approved.returncode == 0, approved.stderr
            lab.wait_until(lambda: engine.progress(run).done, 300, lambda: f"the submissions: {engine.progress(run)}")

            assert {name: lab.node_pid(name) for name in lab.nodes} == pids  # nobody was restarted
            assert all(fleet.procs[0].poll() is None for fleet in lab.nodes.values())
            assert store_of(engine).ensure_epoch() == epoch  # the promoted replica is the same data set
            logs = lab.log_text()
            assert "Redis lost tradeflow's data" not in logs and "DataSetLost" not in logs
            assert "Unrecoverable error" not in logs  # no consumer gave up at the failover (engine/broker/kombu_fix.py)
            assert group.master_port() == group.replica.port

            ids = store_of(engine).run_ids(run)
            figures = check_invariants(store_of(engine), ids, run, expect=None)
            failed = {i.data["account_id"] for i in engine.list(run, ["failed"])}
            assert failed == set(seeded.missing_price_accounts)  # only the book's broken accounts
            accounts = svc.proposals.account_ids(run)
            proposed = set(accounts)
            outcomes = Counter((i.result or {}).get("outcome") for i in store_of(engine).load_many(ids)
                               if i.data["account_id"] in proposed)
            assert set(outcomes) <= {"filled", "partly_rejected"}, outcomes  # every proposal submitted
            seqs = {a: submit_seq(engine, run, a) for a in accounts}
            accepted, received = assert_exactly_once(svc, run, accounts, seqs=seqs)
            two = sum(p.approvals_required > 1 for p in svc.proposals.get_many(run, accounts))
            print(f"\nscenario 12: {len(ids)} instances ({settled_at_kill} settled at the kill); failover "
                  f"{failover_seconds:.1f} s after kill -9 (down-after 1 s); rebalance {dict(figures.statuses)}, "
                  f"{figures.applied} applied, {figures.noops} no-ops, {figures.sweeper_resends} sweeper re-sends; "
                  f"submissions {dict(outcomes)} ({two} approved by two people); {accepted} orders accepted once "
                  f"({received} deliveries); master {MASTER} now on port {group.master_port()}")
        finally:
            lab.stop_nodes()
            client.close()
