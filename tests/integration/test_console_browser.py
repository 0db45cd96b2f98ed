"""The web console in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright),
against a real console server process, real worker fleets and a real Redis under a prefix of its own.

The morning run of a seeded book is watched until it is planned (every account ended or awaits
its review), a failed account is fixed and retried, proposals are approved (their workflows
submit them) and their receipts read, a proposal over the four-eyes threshold waits for a
second approver (the same person twice is refused, on the page) until a second person approves
and it is submitted, and the gates are tried: a viewer's approve is refused (403), a POST
without the CSRF token is refused, and no page but /healthz and /login answers without a
session. Screenshots of the main pages go to docs/screenshots/ (shown in the README and the docs' console pages).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import portfolio_manager.actions  # noqa: F401  (registers market_open for the starts made here)
from console.config import ConsoleSettings
from console.console_keys import ConsoleKeys
from console.users import UserStore
from engine import Principal
from engine.api import Engine
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.ops.fleet import Fleet, FleetSpec
from engine.testing import delete_prefix
from portfolio_manager import review
from portfolio_manager.config import PMSettings
from portfolio_manager.daily import instance_id_for, start_daily_rebalance
from portfolio_manager.generator import SeedSummary
from portfolio_manager.proposals import Proposal, ProposalStatus
from portfolio_manager.services import Services
from tests.integration.browser import CHEAP_ARGON2_ENV, chromium_missing, launched_chromium
from tests.integration.conftest import ROOT, seed_pm_book
from tests.ports import reserve_port

pytestmark = pytest.mark.integration

#: Where screenshots go: docs/screenshots with `make screenshots`, else a scratch folder.
SHOTS = Path(os.environ.get("TRADEFLOW_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="tradeflow-shots-"))
ACCOUNTS = 80
PASSWORD = "a long test password"
WAIT_MS = 90_000
PAULA = Principal("paula", frozenset({"pm", "viewer"}))
REVIEW_HOURS = 24  # the review's cut-off of the runs started here: far away, whatever the time of day

if chromium_missing():
    pytest.skip(chromium_missing(), allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@dataclass
class Deployment:
    """Fleets, a console server, the engine and services of the test, and the morning run."""

    url: str
    engine: Engine
    svc: Services
    seeded: SeedSummary
    users: UserStore
    env: dict[str, str]
    run_date: Any
    run: str = ""


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the console exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the console did not answer: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def deployment(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    book = seed_pm_book(redis_url, "console", ACCOUNTS, 11, 0.1, 0.05)
    prefix, client, env, engine, svc = book.prefix, book.client, book.env, book.engine, book.svc
    run_date, seeded = book.run_date, book.seeded
    lease = reserve_port()  # held until the console is stopped
    port = lease.port
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("console") / "console.log"
    console_env = {**os.environ, **env, "TRADEFLOW_CONSOLE_SECRET": uuid.uuid4().hex * 2,
                   "TRADEFLOW_CONSOLE_SAMPLE_SECONDS": "1", "TRADEFLOW_METRICS_TOKEN": "scrape-token-for-tests",
                   **CHEAP_ARGON2_ENV}
    users = UserStore(client, ConsoleKeys.under(prefix), ConsoleSettings.from_env(console_env).password_hasher())
    # The admin comes through the CLI, as an operator would add one.
    added = subprocess.run([sys.executable, "-m", "engine.cli", "console", "users", "add", "ada", "--role", "admin",
                            "--password-stdin"], input=f"{PASSWORD}\n", env=console_env, capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
    assert added.returncode == 0, added.stderr
    for name, role in (("olivia", "operator"), ("paula", "pm"), ("victor", "viewer")):
        users.add(name, role, PASSWORD)
    fleets = [Fleet([FleetSpec("engine", "threads", 4), FleetSpec("order_calc", "prefork", 2)], beat=True, env=env,
                    loglevel="INFO"), Fleet([FleetSpec("portfolio_manager", "threads", 8)], beat=False, env=env)]
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "engine.cli", "console", "--port", str(port)],
                                  env=console_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        for fleet in fleets:
            fleet.__enter__()
        _wait_http(url, server, log)
        yield Deployment(url, engine, svc, seeded, users, console_env, run_date)
    finally:
        server.terminate()
        server.wait(15)
        lease.release()
        for fleet in fleets:
            fleet.stop()
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture(scope="module")
def browser(deployment: Deployment) -> Iterator[Any]:
    with launched_chromium() as chromium:
        yield chromium


def _login(browser: Any, deployment: Deployment, name: str, shot: str | None = None) -> Any:
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{deployment.url}/runs")
    assert "/login" in page.url
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    if shot:
        page.screenshot(path=str(SHOTS / shot))
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/runs$"))
    return page


@pytest.fixture(scope="module")
def watched(browser: Any, deployment: Deployment) -> Iterator[Any]:
    """An operator's runs page, open before the morning run starts; the run is then started."""
    page = _login(browser, deployment, "olivia", shot="login.png")
    run = f"morning-{uuid.uuid4().hex[:4]}"
    assert run not in page.inner_text("body")
    started = start_daily_rebalance(deployment.engine, deployment.svc.book, deployment.run_date, run=run,
                                    wait_for_open=False, deadline=datetime.now(UTC) + timedelta(minutes=2),
                                    review_until=datetime.now(UTC) + timedelta(hours=REVIEW_HOURS),
                                    block_orders=False)  # each approval submits at once (blocks: test_blocks.py)
    assert started.total and started.deadline is not None
    deployment.run = run
    yield page


@pytest.fixture(scope="module")
def finished(deployment: Deployment, watched: Any) -> str:
    """The morning run, planned: every account ended (the broken ones failed) or awaits its review."""
    progress = deployment.engine.wait_for_run(deployment.run, timeout=180, settled=True)
    assert progress.settled and progress.awaiting, progress.counts
    return deployment.run


def test_no_page_but_healthz_and_login_answers_without_a_session(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, follow_redirects=False) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/login").status_code == 200
        for path in ("/", "/runs", "/runs/adhoc", "/instances/x", "/definitions", "/definitions/validate", "/pm/runs",
                     "/pm/runs/adhoc", "/pm/runs/adhoc/receipts", "/pm/runs/adhoc/CA-1"):
            answer = client.get(path)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), path
        for path in ("/api/runs", "/api/pm/runs", "/metrics"):
            assert client.get(path).status_code == 401, path
        assert client.post("/pm/runs/adhoc/submit").status_code in {303, 401, 403}


def test_an_operator_logs_in_and_watches_the_morning_run_finish(watched: Any, deployment: Deployment) -> None:
    page = watched
    row = page.locator("tr", has_text=deployment.run)
    row.wait_for()  # the run started after the page was loaded: it appears by the page's own refresh
    row.get_by_text("planned").wait_for()  # ... which goes on until the workers' part is done
    progress = deployment.engine.progress(deployment.run)
    assert progress.settled and f"{progress.finished} / {progress.total}" in row.inner_text()
    assert f"{progress.awaiting} await review" in row.inner_text()
    page.screenshot(path=str(SHOTS / "runs.png"))
    page.click(f"text={deployment.run}")
    page.get_by_text("Failures by reason").wait_for()
    assert "no price for" in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "run.png"))


def test_an_operator_fixes_a_failed_account_and_retries_it(browser: Any, deployment: Deployment, finished: str) -> None:
    failed = deployment.engine.list(deployment.run, ["failed"])
    broken = [i for i in failed if "no price for" in (i.error or {}).get("reason", "")]
    assert broken, [i.error for i in failed]
    instance = broken[0]
    symbol = re.search(r"no price for '([^']+)'", instance.error["reason"]).group(1)
    page = _login(browser, deployment, "olivia")
    page.goto(f"{deployment.url}/runs/{deployment.run}?status=failed")
    page.click(f"a[href='/instances/{instance.id}'] >> nth=-1")
    page.get_by_text("Retry from").wait_for()
    page.screenshot(path=str(SHOTS / "instance-failed.png"), full_page=True)
    # Fix the data: the account's lots of the unpriced symbol are taken out of what fetch_target reads.
    page.evaluate("""(symbol) => {
        const box = document.getElementById('context-json');
        const context = JSON.parse(box.value);
        const holdings = context.fetch_holdings.holdings;
        holdings.lots = holdings.lots.filter(lot => lot.symbol !== symbol);
        box.value = JSON.stringify(context, null, 2);
    }""", symbol)
    page.fill("#retry-form input[name=reason]", f"sold {symbol} outside: dropped its lots")
    page.click("#retry-form button[type=submit]")
    # Fixed, it goes on like the healthy accounts: to its review, or it ends when its plan has no orders.
    page.locator("h1 .badge").filter(has_text=re.compile("awaiting|succeeded")).wait_for()
    history = page.inner_text("#history")
    assert f"by olivia: sold {symbol} outside" in history
    fixed = deployment.engine.get(instance.id)
    if fixed.status is InstanceStatus.AWAITING:
        assert fixed.node == "review"
        assert page.locator("#signal-form select[name=signal] option").all_inner_texts() == ["approve", "reject"]
    else:
        assert fixed.status is InstanceStatus.SUCCEEDED and fixed.node == "nothing_to_do", (fixed.status, fixed.node)
    retry = [a for a in deployment.engine.activities(instance.id) if a.get("control") == "retry"]
    assert retry and retry[-1]["edited"] == ["fetch_holdings"]
    page.screenshot(path=str(SHOTS / "instance.png"), full_page=True)


def _proposed(deployment: Deployment, count: int) -> list[Proposal]:
    found = [p for p in deployment.svc.proposals.list(deployment.run, ["proposed"])
             if p.orders and p.in_workflow and p.approvals_required == 1]
    chosen = sorted(found, key=lambda p: -p.tlh_harvests)[:count]  # lots sold with gains: a fuller page
    assert len(chosen) == count
    return chosen


def test_a_viewer_gets_403_on_approve(browser: Any, deployment: Deployment, finished: str) -> None:
    target = _proposed(deployment, 1)[0]
    page = _login(browser, deployment, "victor")
    page.goto(f"{deployment.url}/pm/runs/{deployment.run}/{target.account_id}")
    assert page.locator("button", has_text="Approve").count() == 0  # no button for a viewer...
    status = page.evaluate("""async ([run, account]) => {            // ...and the request itself is refused
        const token = document.querySelector('meta[name=csrf-token]').content;
        const body = new URLSearchParams({csrf_token: token, decision: 'approve', accounts: account});
        const answer = await fetch(`/pm/runs/${run}/decide`, {method: 'POST', body, credentials: 'same-origin'});
        return answer.status;
    }""", [deployment.run, target.account_id])
    assert status == 403
    assert deployment.svc.proposals.get(deployment.run, target.account_id).status is ProposalStatus.PROPOSED


def test_a_post_without_the_csrf_token_is_refused(browser: Any, deployment: Deployment, finished: str) -> None:
    target = _proposed(deployment, 1)[0]
    page = _login(browser, deployment, "paula")
    status = page.evaluate("""async ([run, account]) => {
        const body = new URLSearchParams({decision: 'approve', accounts: account});
        const answer = await fetch(`/pm/runs/${run}/decide`, {method: 'POST', body, credentials: 'same-origin'});
        return answer.status;
    }""", [deployment.run, target.account_id])
    assert status == 403
    assert deployment.svc.proposals.get(deployment.run, target.account_id).status is ProposalStatus.PROPOSED


def shown(deployment: Deployment, run: str, account_id: str) -> Proposal:
    """A proposal as the review shows it (its approvals so far are counted by the engine's quorum)."""
    return review.proposal(deployment.engine, deployment.svc.proposals, run, account_id)


def _receipts_shown(page: Any, deployment: Deployment, run: str, accounts: list[str]) -> None:
    """Open the run's receipts page and wait (it refreshes itself) until each account has a FILLED order."""
    page.goto(f"{deployment.url}/pm/runs/{run}/receipts")
    for account in accounts:
        page.locator("tr", has_text=account).get_by_text("FILLED").first.wait_for()


def _submitted_instances_end(deployment: Deployment, ids: list[str]) -> None:
    """Wait until the instances whose receipts are shown have ended: the submit step records the
    receipts before the engine applies its transition, so on a busy machine the page can show
    them while the instance is still at ``submit``."""
    _wait(lambda: all(deployment.engine.get(i).status.is_terminal for i in ids), "the submitting instances to end")


def test_a_pm_approves_and_the_workflows_submit(browser: Any, deployment: Deployment, finished: str) -> None:
    chosen = _proposed(deployment, 2)
    page = _login(browser, deployment, "paula")
    page.click("nav >> text=Proposals")
    page.click(f"text={deployment.run}")
    page.select_option("select[name=status]", "proposed")
    page.click("form.filters button[type=submit]")
    assert "Once approved, the orders are sent to the brokerage for you" in page.inner_text(".howto")
    assert page.locator("button", has_text="Submit approved").count() == 0  # the workflows submit
    page.screenshot(path=str(SHOTS / "proposals.png"))
    for proposal in chosen:
        page.check(f"input[name=accounts][value='{proposal.account_id}']")
    page.click("button:has-text('Approve selected')")
    page.get_by_text("approved: 2").wait_for()
    for proposal in chosen:
        stored = deployment.svc.proposals.get(deployment.run, proposal.account_id)
        assert stored.decided_by == "paula" and [a["by"] for a in stored.approvals] == ["paula"]
    _receipts_shown(page, deployment, deployment.run, [p.account_id for p in chosen])
    assert "its workflow, approved by paula" in page.inner_text("#receipts")
    page.screenshot(path=str(SHOTS / "receipts.png"), full_page=True)
    _submitted_instances_end(deployment, [p.instance_id for p in chosen])
    for proposal in chosen:
        stored = deployment.svc.proposals.get(deployment.run, proposal.account_id)
        assert stored.status is ProposalStatus.SUBMITTED and len(stored.receipts) == len(stored.orders)
        assert deployment.engine.get(proposal.instance_id).status is InstanceStatus.SUCCEEDED
    page.goto(f"{deployment.url}/pm/runs/{deployment.run}/{chosen[0].account_id}")
    review = page.inner_text("#review")
    assert "Sent to the brokerage (approved by paula)" in review and page.locator("#decide-form").count() == 0
    page.screenshot(path=str(SHOTS / "proposal.png"), full_page=True)


def test_a_second_approver_is_needed_over_the_threshold(browser: Any, deployment: Deployment,
                                                        finished: str) -> None:
    # A version of rebalance-ca whose four-eyes threshold is 0: every proposal needs two people.
    document = json.loads((PMSettings().definitions_dir / "rebalance-ca.json").read_text())
    document["parameters"]["four_eyes_over"] = 0
    version = deployment.engine.publish(load_definition(json.dumps(document)))
    run = f"four-eyes-{uuid.uuid4().hex[:4]}"
    start_daily_rebalance(deployment.engine, deployment.svc.book, deployment.run_date, run=run, regions=["CA"],
                          wait_for_open=False, limit=6, version=version,
                          review_until=datetime.now(UTC) + timedelta(hours=REVIEW_HOURS),
                          block_orders=False)  # the second approval submits at once (blocks: test_blocks.py)
    deployment.engine.wait_for_run(run, timeout=180, settled=True)
    waiting = [p for p in deployment.svc.proposals.list(run, ["proposed"]) if p.orders]
    assert waiting and all(p.approvals_required == 2 for p in waiting), [p.approvals_required for p in waiting]
    target = waiting[0]
    iid = instance_id_for(run, target.account_id)
    page = _login(browser, deployment, "paula")
    page.goto(f"{deployment.url}/pm/runs/{run}/{target.account_id}")
    assert "two approvals by different people are needed" in page.inner_text("#review")
    page.click("#decide-form button:has-text('Approve')")
    page.get_by_text("waiting for a second approver").first.wait_for()
    review = page.inner_text("#review")
    assert "1 of 2" in review and "first: paula" in review and "first approval by paula" in review
    assert [a["by"] for a in shown(deployment, run, target.account_id).approvals] == ["paula"]
    assert deployment.engine.get(iid).status is InstanceStatus.AWAITING  # one approval does not submit
    page.click("#decide-form button:has-text('Add the second approval')")  # the same person again: refused
    page.locator(".flash.error").wait_for()
    refusal = page.inner_text(".flash.error")  # the engine's quorum says why
    assert "paula sent it already (1 of 2)" in refusal and "2 different principals" in refusal
    assert [a["by"] for a in shown(deployment, run, target.account_id).approvals] == ["paula"]
    page.screenshot(path=str(SHOTS / "proposal-four-eyes.png"), full_page=True)
    second = _login(browser, deployment, "ada")
    second.goto(f"{deployment.url}/pm/runs/{run}/{target.account_id}")
    second.click("#decide-form button:has-text('Add the second approval')")
    second.get_by_text("approved: 1").wait_for()
    _receipts_shown(second, deployment, run, [target.account_id])
    assert "its workflow, approved by paula, ada" in second.inner_text("#receipts")
    _submitted_instances_end(deployment, [iid])
    stored = deployment.svc.proposals.get(run, target.account_id)
    assert stored.status is ProposalStatus.SUBMITTED and [a["by"] for a in stored.approvals] == ["paula", "ada"]
    assert len(stored.receipts) == len(stored.orders)
    assert deployment.engine.get(iid).status is InstanceStatus.SUCCEEDED


def test_definitions_page_and_metrics_scrape(browser: Any, deployment: Deployment, finished: str) -> None:
    page = _login(browser, deployment, "ada")
    page.goto(f"{deployment.url}/definitions/validate")
    document = (ROOT / "definitions" / "rebalance-us.json").read_text().replace('"lookback_days": 365',
                                                                               '"lookback_days": 400')
    assert '"lookback_days": 400' in document
    page.fill("textarea[name=text]", document)
    page.click("button:has-text('Validate and publish')")
    page.get_by_text("published rebalance-us version 2").wait_for()
    page.select_option("select[name=compare]", "1")
    page.click("button:has-text('Show difference')")
    page.locator(".diff").wait_for()
    assert '+    "lookback_days": 400' in page.inner_text(".diff")
    page.screenshot(path=str(SHOTS / "definition.png"))
    names = ("tradeflow_instances", "tradeflow_steps_total", "tradeflow_step_duration_seconds_bucket",
             "tradeflow_queue_depth", "tradeflow_queue_oldest_age_seconds", "tradeflow_timers_due")
    headers = {"Authorization": "Bearer scrape-token-for-tests"}
    end = time.monotonic() + 60
    while True:  # workers flush their step counts every 5 s
        text = httpx.get(f"{deployment.url}/metrics", headers=headers, timeout=10).text
        if 'tradeflow_steps_total{node="calculate",outcome="applied",workflow="rebalance-us"}' in text:
            break
        assert time.monotonic() < end, text[:3000]
        time.sleep(0.5)
    for name in names:
        assert f"\n{name}" in text, name
    assert f'tradeflow_instances{{run="{deployment.run}",status="succeeded"}}' in text
    assert 'tradeflow_queue_depth{queue="portfolio_manager"}' in text


def test_a_viewer_reads_a_shadow_diff_biggest_change_first_and_sorts_it(browser: Any, deployment: Deployment,
                                                                         finished: str) -> None:
    from portfolio_manager.diff import diff_runs
    from portfolio_manager.shadow import start_shadow

    for name in ("rebalance-ca", "rebalance-us"):  # the canary: a tighter drift band
        document = json.loads(deployment.engine.definition(name, "production").to_json())
        document.pop("version", None)
        document["parameters"]["plan"]["drift_band_abs"] = 0.01
        deployment.engine.publish(load_definition(json.dumps(document)), alias="canary")
    shadow = start_shadow(deployment.engine, deployment.svc.book, deployment.run_date, version="canary",
                          run=f"shadow-{uuid.uuid4().hex[:4]}",
                          review_until=datetime.now(UTC) + timedelta(hours=REVIEW_HOURS))
    assert deployment.engine.wait_for_run(shadow.run, timeout=180, settled=True).done
    expected = [i for i in diff_runs(deployment.engine, finished, shadow.run).accounts if i.change != "equal"]
    assert expected
    page = _login(browser, deployment, "victor")
    page.goto(f"{deployment.url}/pm/diff")
    assert f"{shadow.run} (shadow)" in page.inner_text("select[name=b]")
    page.select_option("select[name=a]", finished)
    page.select_option("select[name=b]", shadow.run)
    page.click("main form button[type=submit]")
    page.locator("#diff tbody tr").first.wait_for()
    rows = page.locator("#diff tbody tr")
    assert rows.count() == len(expected)
    assert rows.first.inner_text().startswith(expected[0].account_id)  # biggest change first
    page.screenshot(path=str(SHOTS / "pm-diff.png"), full_page=False)
    page.click("#diff th >> text=Account")
    page.locator("#diff th", has_text="Account ▼").wait_for()
    ids = [rows.nth(k).locator("td").first.inner_text() for k in range(rows.count())]
    assert ids == sorted(ids, reverse=True)


def _wait(condition: Any, what: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_an_operator_closes_a_block_from_its_page(browser: Any, deployment: Deployment, finished: str) -> None:
    engine, proposals = deployment.engine, deployment.svc.proposals
    run = f"blocks-{uuid.uuid4().hex[:4]}"
    start_daily_rebalance(engine, deployment.svc.book, deployment.run_date, run=run, regions=["US"], limit=10,
                          wait_for_open=False, review_until=datetime.now(UTC) + timedelta(hours=REVIEW_HOURS))
    engine.wait_for_run(run, timeout=180, settled=True)
    waiting = [p for p in proposals.list(run, ["proposed"]) if p.orders and p.approvals_required == 1]
    assert len(waiting) >= 3, [(p.account_id, p.approvals_required) for p in proposals.list(run)]
    chosen = waiting[:2]
    review.approve(engine, proposals, run, [p.account_id for p in chosen], by=PAULA)
    _wait(lambda: all(engine.get(p.instance_id).status is InstanceStatus.GATHERING for p in chosen), "the block")
    batch_id = engine.get(chosen[0].instance_id).batch
    assert engine.batch(batch_id).batch.status == "open"  # the others are still to decide: it stays open
    page = _login(browser, deployment, "olivia")
    page.click("nav >> text=Batches")
    page.locator("tr", has_text=batch_id).get_by_text("open").wait_for()
    page.screenshot(path=str(SHOTS / "batches.png"))
    page.click(f"text={batch_id}")
    page.get_by_text("Block orders and fills").wait_for()
    assert "to send" in page.inner_text("#summary") and "Accounts in this batch (2)" in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "batch-open.png"), full_page=True)
    page.click("#close-form button[type=submit]")  # its confirmation is accepted (see _login)
    page.get_by_text(f"closed {batch_id}").wait_for()
    page.get_by_text("every account has its answer").wait_for()  # the page refreshes itself
    assert engine.batch(batch_id).batch.status == "applied"
    assert "to send" not in page.inner_text("#summary") and "FILLED" in page.inner_text("#summary")
    page.screenshot(path=str(SHOTS / "batch.png"), full_page=True)
    for p in chosen:
        assert proposals.get(run, p.account_id).status is ProposalStatus.SUBMITTED
    closes = engine.audit(person="olivia", kinds=["close_batch"]).events
    assert closes and "operator" in closes[0].roles


def test_the_audit_page_filtered_by_person_shows_a_signal_and_a_login(browser: Any, deployment: Deployment,
                                                                      finished: str) -> None:
    target = _proposed(deployment, 1)[0]
    _login(browser, deployment, "paula")
    review.approve(deployment.engine, deployment.svc.proposals, deployment.run, [target.account_id], by=PAULA)
    page = _login(browser, deployment, "olivia")
    page.click("nav >> text=Audit")
    page.fill("#audit-filters input[name=person]", "paula")
    page.click("#audit-filters button[type=submit]")
    table = page.locator("#audit")
    table.locator("tr", has_text=target.instance_id).locator(".badge", has_text="signal").first.wait_for()
    text = table.inner_text()
    assert "login" in text and "olivia" not in text
    page.screenshot(path=str(SHOTS / "audit.png"))
    viewer = _login(browser, deployment, "victor")
    assert viewer.locator("nav >> text=Audit").count() == 0
    assert viewer.goto(f"{deployment.url}/audit").status == 403


def test_an_admin_adds_a_user_who_signs_in_and_removes_them(browser: Any, deployment: Deployment) -> None:
    page = _login(browser, deployment, "ada")
    page.click("nav >> text=Users")
    page.fill("#add-user input[name=name]", "newcomer")
    page.select_option("#add-user select[name=role]", "pm")
    page.fill("#add-user input[name=password]", PASSWORD)
    page.click("#add-user button[type=submit]")
    page.get_by_text("user newcomer added as pm").wait_for()
    page.screenshot(path=str(SHOTS / "users.png"))
    newcomer = _login(browser, deployment, "newcomer")
    assert "newcomer · pm" in newcomer.inner_text("header")
    assert newcomer.locator("nav >> text=Users").count() == 0
    page.click("text=API tokens")
    page.select_option("#create-token select[name=user]", "newcomer")
    page.fill("#create-token input[name=label]", "nightly report")
    page.click("#create-token button[type=submit]")
    secret = page.inner_text("#new-token pre").strip()
    assert secret.startswith("tfc_")
    assert httpx.get(f"{deployment.url}/api/runs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    page.screenshot(path=str(SHOTS / "tokens.png"))
    page.goto(f"{deployment.url}/admin/users")
    page.click("tr[data-user=newcomer] button:has-text('Remove')")  # its confirmation is accepted
    page.get_by_text("user newcomer removed").wait_for()
    assert deployment.users.get("newcomer") is None
    newcomer.goto(f"{deployment.url}/runs")
    assert "/login" in newcomer.url  # signed out at once
    assert httpx.get(f"{deployment.url}/api/runs", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    kinds = [e.kind for e in deployment.engine.audit(person="ada").events]
    assert {"user_added", "token_created", "user_removed"} <= set(kinds)


def test_an_admin_changes_the_brokerage_limit_from_the_limits_page(browser: Any, deployment: Deployment) -> None:
    page = _login(browser, deployment, "ada")
    page.click("nav >> text=Limits")
    page.get_by_text("Change a limit").wait_for()
    page.fill("#set-limit input[name=name]", "brokerage")
    page.fill("#set-limit input[name=per_second]", "150")
    page.fill("#set-limit input[name=burst]", "300")
    page.click("#set-limit button:has-text('Set rate')")
    page.get_by_text("brokerage set for every worker").wait_for()
    row = page.locator("tr[data-limit=brokerage]")
    assert "150/s, burst 300" in row.inner_text() and "override" in row.inner_text()
    state = {s.name: s for s in deployment.engine.limits()}["brokerage"]
    assert (state.per_second, state.burst, state.override) == (150, 300, True)
    page.screenshot(path=str(SHOTS / "limits.png"), full_page=True)
    viewer = _login(browser, deployment, "victor")
    viewer.click("nav >> text=Limits")
    viewer.locator("tr[data-limit=brokerage]").wait_for()
    assert viewer.locator("#set-limit").count() == 0 and viewer.locator("text=Clear override").count() == 0
    token = viewer.locator("meta[name=csrf-token]").get_attribute("content")
    refused = viewer.request.post(f"{deployment.url}/limits/clear", form={"name": "brokerage", "csrf_token": token})
    assert refused.status == 403 and {s.name: s for s in deployment.engine.limits()}["brokerage"].override
    row.locator("button:has-text('Clear override')").click()  # its confirmation is accepted (see _login)
    page.get_by_text("override cleared").wait_for()
    assert not {s.name: s for s in deployment.engine.limits()}["brokerage"].override
    kinds = [e.kind for e in deployment.engine.audit(person="ada", kinds=["limit_set", "limit_cleared"]).events]
    assert kinds == ["limit_cleared", "limit_set"]
