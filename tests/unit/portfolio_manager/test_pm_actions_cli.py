"""``tradeflow pm`` and ``tradeflow accounts`` on fakeredis: the engine runs in-process (Driver)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner

import order_calc.actions  # noqa: F401  (registers order_calc.plan_orders)
import portfolio_manager.actions as pm_actions
import portfolio_manager.cli as pm_cli
from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.testing import Driver, make_store
from portfolio_manager.actions import build_services
from portfolio_manager.config import PMSettings

DAY = date(2026, 11, 20)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CliRunner, Driver]]:
    client = fakeredis.FakeRedis()
    svc = build_services(PMSettings(prefix="pm:"), client=client)
    engine = Engine(make_store(client, "wf"), MemoryEnqueuer(),
                    ManualClock(datetime(2026, 11, 20, 16, 0, tzinfo=UTC).timestamp()))
    monkeypatch.setattr(pm_cli, "_context", lambda: (engine, svc))
    monkeypatch.setattr(pm_cli, "last_session", lambda: DAY)
    monkeypatch.setenv("TRADEFLOW_PRINCIPAL", "ana")  # who the CLI acts as
    monkeypatch.setenv("TRADEFLOW_PRINCIPAL_ROLES", "pm")
    with pm_actions.services_in_use(svc):
        yield CliRunner(), Driver(engine)


def _ok(runner: CliRunner, group: Any, args: list[str]) -> str:
    result = runner.invoke(group, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_seed_run_review_and_submit_from_the_command_line(cli: tuple[CliRunner, Driver]) -> None:
    runner, driver = cli
    seeded = _ok(runner, pm_cli.accounts, ["seed", "--count", "30", "--seed", "3"])
    assert "seeded 30 accounts" in seeded and "next: tradeflow pm run --date 2026-11-20" in seeded
    started = _ok(runner, pm_cli.pm, ["run", "--date", "2026-11-20", "--no-watch"])
    assert "run rebalance-2026-11-20: started" in started
    driver.run_until_idle()
    listed = json.loads(_ok(runner, pm_cli.pm, ["proposals", "rebalance-2026-11-20", "--json"]))
    accounts = [p["account_id"] for p in listed]
    assert len(accounts) >= 3 and all(p["status"] == "proposed" for p in listed)
    table = _ok(runner, pm_cli.pm, ["proposals", "rebalance-2026-11-20", "--limit", "0"])
    assert f"{len(accounts)} proposals" in table
    review = _ok(runner, pm_cli.pm, ["review", "rebalance-2026-11-20", "--limit", "0"])
    assert f"{len(accounts)} awaiting review" in review
    cutoff = datetime(2026, 11, 20, 20, 30, tzinfo=UTC).timestamp()  # the close (21:00 UTC) minus 30 minutes
    assert all(p["cutoff"] == cutoff and p["in_workflow"] and p["approvals"] == [] for p in listed)
    approved = _ok(runner, pm_cli.pm, ["approve", "rebalance-2026-11-20", *accounts[:2], "--by", "ana"])
    assert "approved by ana: 2" in approved and "tradeflow pm review rebalance-2026-11-20" in " ".join(approved.split())
    rejected = _ok(runner, pm_cli.pm, ["reject", "rebalance-2026-11-20", accounts[2], "--reason", "hold"])
    assert "rejected by ana: 1" in rejected
    driver.run_until_idle()  # the approved accounts' own instances gather at the block
    engine = driver.engine
    assert engine.get(f"rebalance-2026-11-20-{accounts[0]}").status.value == "gathering"
    engine.clock.advance(cutoff - engine.clock())  # the block closes at the cut-off; the rest expire
    driver.run_until_idle()
    nothing = _ok(runner, pm_cli.pm, ["submit", "rebalance-2026-11-20", "--no-watch"])
    assert "submitting 0 proposals" in nothing  # nothing is submitted separately
    detail = _ok(runner, pm_cli.pm, ["proposals", "rebalance-2026-11-20", "--account", accounts[0]])
    assert "status submitted" in detail and "receipt SIMB-" in detail and "approved by ana at" in detail
    iid = f"rebalance-2026-11-20-{accounts[0]}"
    assert "blockportfolio_manager.trade_blocks:rebalance-2026-11-20:" in "".join(detail.split())
    late = runner.invoke(pm_cli.pm, ["reject", "rebalance-2026-11-20", accounts[0], "--reason", "too late"])
    assert late.exit_code == 1 and "awaits no signal" in late.stderr
    assert engine.get(iid).result["outcome"] in ("filled", "partly_rejected")
    assert engine.get(f"rebalance-2026-11-20-{accounts[2]}").result["outcome"] == "rejected"
    assert engine.get(f"rebalance-2026-11-20-{accounts[3]}").result["outcome"] == "expired"


def test_review_commands_say_what_is_wrong(cli: tuple[CliRunner, Driver]) -> None:
    runner, _ = cli
    both = runner.invoke(pm_cli.pm, ["approve", "r", "A1", "--all"])
    assert both.exit_code == 2 and "name ACCOUNT_IDS, or --all (not both)" in both.output
    missing = runner.invoke(pm_cli.pm, ["proposals", "r", "--account", "A1"])
    assert missing.exit_code == 1 and "no proposal for account A1 in run r" in missing.output
    bad_date = runner.invoke(pm_cli.pm, ["run", "--date", "20/11/2026", "--no-watch"])
    assert bad_date.exit_code == 2 and "use YYYY-MM-DD" in bad_date.output
