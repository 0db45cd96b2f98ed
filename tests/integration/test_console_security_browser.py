"""The console's gates and run pages (issue 19) in a real headless Chromium against a real console
server process on the real Redis (no workers: the instances here park at an await or a gather,
or fail at their start).

An operator's signal to a pm-only await is refused and shown; twenty parallel logins are
throttled (429 with Retry-After); a saved session cookie is dead after logout and after a
password change; ``gathering`` shows in the run pages without a false "past the deadline"; a
run whose instances all failed is not green; a bad run label is refused naming the allowed
characters; a 20,000-instance run answers its pages and API a page at a time, and its page
updates its counts without a reload. Screenshots go to ``TRADEFLOW_SCREENSHOTS_DIR`` (else a
scratch folder).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from console.config import ConsoleSettings
from console.console_keys import ConsoleKeys
from console.users import UserStore
from engine.api import Engine
from engine.broker import CeleryEnqueuer
from engine.definitions.validation import load_definition
from engine.testing import delete_prefix, make_store
from tests.integration.browser import CHEAP_ARGON2_ENV, chromium_missing, launched_chromium
from tests.integration.conftest import ROOT, fleet_env, sender_app
from tests.integration.test_console_browser import _wait_http
from tests.ports import reserve_port

pytestmark = pytest.mark.integration

SHOTS = Path(os.environ.get("TRADEFLOW_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="tradeflow-shots-"))
PASSWORD = "a long test password"
WAIT_MS = 30_000
BAD_LABEL = "ops/desk?x=1#frag"

if chromium_missing():
    pytest.skip(chromium_missing(), allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

REVIEW = {"name": "sec-review", "initial_data": {"type": "object", "required": ["account"]}, "start": "review",
          "nodes": {"review": {"type": "await",
                               "signals": {"approve": {"next": "done", "roles": ["pm"]},
                                           "reject": {"next": "dropped", "roles": ["pm"], "requires": ["reason"]}}},
                    "done": {"type": "terminal", "status": "succeeded"},
                    "dropped": {"type": "terminal", "status": "succeeded"}}}
BLOCK = {"name": "sec-block", "initial_data": {"type": "object"}, "start": "meet",
         "nodes": {"meet": {"type": "gather", "service": "svc", "action": "total", "group": "instance.run",
                            "close": "timestamp('2099-06-15T16:00:00Z')", "input": {"amount": "1"},
                            "transitions": {"ok": "done"}},
                   "done": {"type": "terminal", "status": "succeeded"}}}


@dataclass
class Console:
    """The console server, its engine and users, and the environment it runs with."""

    url: str
    engine: Engine
    users: UserStore
    env: dict[str, str]


@pytest.fixture(scope="module")
def console(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    prefix = f"tfit-consec-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    engine = Engine(make_store(client, prefix, 600),
                    CeleryEnqueuer(sender_app(redis_url, prefix)))
    for document in (REVIEW, BLOCK):
        engine.publish(load_definition(json.dumps(document)), alias="production")
    env = {**os.environ, **fleet_env(redis_url, prefix), "TRADEFLOW_CONSOLE_SECRET": uuid.uuid4().hex * 2,
           "TRADEFLOW_CONSOLE_SAMPLE_SECONDS": "1", "TRADEFLOW_CONSOLE_LOGIN_DELAY": "120", **CHEAP_ARGON2_ENV}
    users = UserStore(client, ConsoleKeys.under(prefix), ConsoleSettings.from_env(env).password_hasher())
    for name, role in (("olga", "operator"), ("paula", "pm"), ("sam", "viewer"), ("tara", "viewer")):
        users.add(name, role, PASSWORD)
    lease = reserve_port()  # held until the console is stopped
    port = lease.port
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("consec") / "console.log"
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "engine.cli", "console", "--port", str(port)],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_http(url, server, log)
        yield Console(url, engine, users, env)
    finally:
        server.terminate()
        server.wait(15)
        lease.release()
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture(scope="module")
def browser(console: Console) -> Iterator[Any]:
    with launched_chromium() as chromium:
        yield chromium


def _login(browser: Any, console: Console, name: str) -> Any:
    page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{console.url}/runs")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/runs$"))
    return page


def _cookie_client(console: Console, page: Any) -> httpx.Client:
    """An HTTP client holding a saved copy of the browser page's session cookie."""
    saved = {c["name"]: c["value"] for c in page.context.cookies()}
    return httpx.Client(base_url=console.url, cookies=saved, follow_redirects=False, timeout=30)


def test_an_operators_signal_to_a_pm_only_await_is_refused_and_shown(browser: Any, console: Console) -> None:
    iid = console.engine.start("sec-review", {"account": "A1"}, run=f"review-{uuid.uuid4().hex[:4]}")
    page = _login(browser, console, "olga")
    page.goto(f"{console.url}/instances/{iid}")
    page.select_option("#signal-form select[name=signal]", "reject")
    page.fill("#signal-form input[name=payload]", json.dumps({"by": "paula", "reason": "client on hold"}))
    page.click("#signal-form button[type=submit]")
    error = page.locator(".flash.error")
    error.wait_for()
    assert "signal 'reject' refused" in error.inner_text() and "pm" in error.inner_text()
    page.screenshot(path=str(SHOTS / "instance-signal-refused.png"), full_page=True)
    assert console.engine.get(iid).status.value == "awaiting"
    assert any(a.get("outcome") == "refused" and a.get("by") == "olga" for a in console.engine.activities(iid))
    pm = _login(browser, console, "paula")
    pm.goto(f"{console.url}/instances/{iid}")
    pm.select_option("#signal-form select[name=signal]", "approve")
    pm.click("#signal-form button[type=submit]")
    pm.get_by_text("signal approve: applied").wait_for()
    assert console.engine.get(iid).status.value == "succeeded"


def test_twenty_parallel_logins_are_throttled(browser: Any, console: Console) -> None:
    clients = []
    for _ in range(20):
        client = httpx.Client(base_url=console.url, follow_redirects=False, timeout=60)
        token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").text).group(1)
        clients.append((client, token))
    barrier = threading.Barrier(20)

    def attempt(pair: tuple[httpx.Client, str]) -> tuple[int, str | None]:
        client, token = pair
        barrier.wait()
        answer = client.post("/login", data={"username": "tara", "password": "a wrong guess", "csrf_token": token})
        return answer.status_code, answer.headers.get("retry-after")

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(attempt, clients))
    codes = [code for code, _ in answers]
    assert codes.count(401) <= 3 and codes.count(429) == 20 - codes.count(401), codes
    assert all(after and int(after) >= 1 for code, after in answers if code == 429)
    for client, _ in clients:
        client.close()
    page = browser.new_context().new_page()
    page.goto(f"{console.url}/login")
    page.fill("#username", "tara")
    page.fill("#password", PASSWORD)  # the right password: refused unchecked while the wait lasts
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as posted:
        page.click("button[type=submit]")
    assert posted.value.status == 429 and int(posted.value.headers["retry-after"]) >= 1
    assert "too many login attempts" in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "login-throttled.png"))


def test_a_saved_cookie_is_dead_after_logout_and_after_a_password_change(browser: Any, console: Console) -> None:
    page = _login(browser, console, "sam")
    with _cookie_client(console, page) as saved:
        assert saved.get("/runs").status_code == 200 and saved.get("/api/runs").status_code == 200
        page.click("header button:has-text('Sign out')")
        page.wait_for_url(re.compile(r".*/login$"))
        assert saved.get("/runs").status_code == 303 and saved.get("/api/runs").status_code == 401
    page = _login(browser, console, "sam")
    with _cookie_client(console, page) as saved:
        assert saved.get("/api/runs").status_code == 200
        console.users.add("sam", "viewer", PASSWORD)  # a password change: the user re-added
        assert saved.get("/runs").status_code == 303 and saved.get("/api/runs").status_code == 401
    page.goto(f"{console.url}/runs")
    assert "/login" in page.url


def test_gathering_shows_in_the_run_pages_without_a_false_deadline_warning(browser: Any, console: Console) -> None:
    run = f"blocks-{uuid.uuid4().hex[:4]}"
    console.engine.start_many("sec-block", [{}, {}, {}], run=run)
    console.engine.start_many("sec-review", [{"account": "A1"}, {"account": "A2"}], run=run)
    console.engine.set_run_deadline(run, 1_000_000.0)  # long past
    page = _login(browser, console, "olga")
    row = page.locator("tr", has_text=run)
    assert "gathering" in row.inner_text() and "3 gathering in blocks" in row.inner_text()
    assert "past the deadline" not in row.inner_text()
    page.goto(f"{console.url}/runs/{run}")
    assert page.locator("h1 .state").inner_text() == "gathering"
    assert page.locator("[data-k='counts.gathering']").inner_text() == "3"
    assert page.locator("svg.bar rect[data-s='gathering']").get_attribute("width") != "0.0"
    assert page.locator(".warning").count() == 0
    assert "gathering" in page.locator("select[name=status] option").all_inner_texts()
    page.screenshot(path=str(SHOTS / "run-gathering.png"), full_page=True)
    page.select_option("select[name=status]", "gathering")
    page.click("form.filters button[type=submit]")
    assert page.locator("#instances .badge.s-gathering").count() == 3


def test_a_run_whose_instances_all_failed_is_not_green(browser: Any, console: Console) -> None:
    run = f"broken-{uuid.uuid4().hex[:4]}"
    console.engine.start_many("sec-review", [{"no_account": 1}, {"no_account": 2}], run=run)  # invalid: fail at once
    assert console.engine.progress(run).counts["failed"] == 2
    page = _login(browser, console, "olga")
    row = page.locator("tr", has_text=run)
    badge = row.locator(".state")
    assert badge.inner_text() == "failed" and "bad" in badge.get_attribute("class")
    assert row.locator(".ok-note").count() == 0
    colour = badge.evaluate("e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(254, 226, 226)", colour  # red, not green
    page.screenshot(path=str(SHOTS / "runs-states.png"))


def test_a_bad_run_label_is_refused_naming_the_allowed_characters(console: Console) -> None:
    for command in (["start", "sec-review", "--data", '{"account": "A1"}', "--run", BAD_LABEL],
                    ["pm", "run", "--run", BAD_LABEL, "--no-watch"]):
        done = subprocess.run([sys.executable, "-m", "engine.cli", *command], env=console.env, capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
        assert done.returncode != 0, done
        assert BAD_LABEL in done.stderr and "letters A-Z a-z, digits 0-9 and '-', '_', '.', ':'" in done.stderr, \
            done.stderr
    assert BAD_LABEL not in console.engine.runs(limit=1000)


def test_a_20000_instance_run_answers_in_pages_and_updates_its_counts_live(browser: Any, console: Console) -> None:
    run = f"huge-{uuid.uuid4().hex[:4]}"
    console.engine.start_many("sec-review", ({"account": f"A{n:05d}"} for n in range(20_000)), run=run, batch=2000)
    page = _login(browser, console, "olga")
    with _cookie_client(console, page) as client:
        first = client.get(f"/api/runs/{run}/instances")
        body = first.json()
        assert len(body["items"]) == 100 and body["next"] and len(first.content) < 60_000
        second = client.get(f"/api/runs/{run}/instances", params={"after": body["next"]}).json()
        assert second["items"][0]["id"] > body["items"][-1]["id"]
        assert len(client.get(f"/api/runs/{run}/instances", params={"limit": 100_000}).json()["items"]) == 500
    page.goto(f"{console.url}/runs/{run}")
    assert page.locator("#instances td.id").count() == 100
    first_id = page.locator("#instances td.id").first.inner_text()
    page.click("#instances a[rel=next]")
    page.wait_for_url(re.compile(r".*after=.*"))
    assert page.locator("#instances td.id").count() == 100
    assert page.locator("#instances td.id").first.inner_text() > first_id
    total = page.locator("[data-k='total']")
    assert total.inner_text() == "20000"
    console.engine.start_many("sec-review", [{"account": "late-1"}, {"account": "late-2"}], run=run)
    page.wait_for_function("() => document.querySelector(\"[data-k='total']\").textContent === '20002'")
    page.screenshot(path=str(SHOTS / "run-paged.png"))
