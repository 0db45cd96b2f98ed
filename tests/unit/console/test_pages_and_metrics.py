"""Pages render what the engine holds; /metrics renders the flushed step metrics; the burn-down projects."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

from console.burndown import Burndown, BurndownStore, burndown_svg
from console.config import ConsoleSettings
from engine.api import RunProgress
from engine.config import Settings
from engine.definitions.validation import load_definition
from engine.testing import StepMetrics, store_of
from tests.unit.console.conftest import Site, csrf_of


def test_runs_run_instance_and_definition_pages_show_the_engine_state(site: Site) -> None:
    good = site.ctx.engine.start("flow", {"account": "good"}, run="r1")
    bad = site.ctx.engine.start("flow", {"account": "bad"}, run="r1")
    site.ctx.engine.set_run_deadline("r1", 2_000_000_000)
    site.driver.run_until_idle()
    client = site.login("vic", "viewer")
    runs = client.get("/runs").text
    assert "r1" in runs and "2 / 2" in runs
    run = client.get("/runs/r1").text
    assert "check: account data is broken" in run and bad in run and "Retry these" not in run  # viewer: no button
    assert [i["id"] for i in client.get("/api/runs/r1/instances?q=good").json()["items"]] == [good]
    assert [i["id"] for i in client.get("/api/runs/r1/instances?status=failed").json()["items"]] == [bad]
    page = client.get(f"/instances/{bad}").text
    assert "account data is broken" in page and 'class="node visited failed"' in page and "Retry" not in page
    assert client.get(f"/instances/{good}").status_code == 200
    assert "production" in client.get("/definitions").text
    assert "<svg" in client.get("/definitions/flow?version=1").text
    assert client.get("/instances/nope").status_code == 404


def test_the_instance_page_names_the_nodes_a_step_passed_on_the_way(site: Site) -> None:
    opens = {"name": "opens", "initial_data": {"type": "object"}, "start": "opened", "nodes": {
        "opened": {"type": "wait", "until": "timestamp('1970-01-01T00:00:00Z')", "next": "check"},
        "check": {"type": "service", "service": "svc", "action": "check", "input": {"account": "data.account"},
                  "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"}}}
    site.ctx.engine.publish(load_definition(json.dumps(opens)))
    iid = site.ctx.engine.start("opens", {"account": "good"})  # the wait's time has come: passed at once
    page = site.login("vic", "viewer").get(f"/instances/{iid}").text
    assert "→ check <span class=\"small muted\">(via opened)</span>" in page


def test_a_run_deadline_is_set_from_the_run_page(site: Site) -> None:
    site.ctx.engine.start("flow", {"account": "good"}, run="r2")
    client = site.login("opal", "operator")
    token = csrf_of(client.get("/runs/r2").text)
    answer = client.post("/runs/r2/deadline", data={"deadline": "2030-01-02T15:30", "csrf_token": token})
    assert answer.status_code == 303
    assert site.ctx.engine.progress("r2").deadline == 1893598200.0  # 15:30 UTC (the console's zone)


def test_validation_before_publishing(site: Site) -> None:
    client = site.login("ola", "operator")
    token = csrf_of(client.get("/definitions/validate").text)
    bad = client.post("/definitions/validate", data={"text": '{"name": "x", "start": "nowhere", "nodes": {}}',
                                                    "csrf_token": token}).text
    assert "problem" in bad and "nowhere" in bad
    document = json.dumps({**json.loads(json.dumps(__import__("tests.unit.console.conftest", fromlist=["FLOW"]).FLOW)),
                           "description": "second"})
    answer = client.post("/definitions/validate", data={"text": document, "action": "publish", "alias": "canary",
                                                       "csrf_token": token})
    assert answer.status_code == 303 and site.ctx.engine.definition("flow", "canary").version == 2
    diff = client.get("/definitions/flow?version=2&compare=1").text
    assert "+  &#34;description&#34;: &#34;second&#34;" in diff or "second" in diff


def test_step_metrics_flush_in_one_batch_and_render_at_metrics(site: Site) -> None:
    store = store_of(site.ctx.engine)
    ticks = [0.0]
    metrics = StepMetrics(store.add_step_metrics, interval=5.0, clock=lambda: ticks[0])
    metrics.step("flow", "check", "applied", 0.02)
    metrics.step("flow", "check", "failed", 0.3)
    assert site.ctx.engine.step_metrics().steps == {}  # not flushed yet: the interval has not passed
    ticks[0] = 5.0
    metrics.step("flow", "check", "applied", 7.0)
    stats = site.ctx.engine.step_metrics()
    assert stats.steps == {("applied", "flow", "check"): 2, ("failed", "flow", "check"): 1}
    buckets, total, count = stats.durations["check"]
    assert count == 3 and abs(total - 7.32) < 1e-9 and dict(buckets)["0.025"] == 1 and dict(buckets)["+Inf"] == 3
    site.ctx.engine.start("flow", {"account": "good"}, run="m1")
    client = site.client()
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    text = client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-token"}).text
    assert 'tradeflow_steps_total{node="check",outcome="applied",workflow="flow"} 2.0' in text
    assert 'tradeflow_step_duration_seconds_bucket{le="0.025",node="check"} 1.0' in text
    assert 'tradeflow_step_duration_seconds_count{node="check"} 3.0' in text
    assert 'tradeflow_instances{run="m1",status="running"} 1.0' in text
    assert "tradeflow_timers_due 0.0" in text


def test_the_burndown_projects_at_the_recent_rate_and_warns_past_the_deadline(site: Site) -> None:
    now = [1000.0]
    store = BurndownStore(site.ctx.users.client, site.ctx.users.keys, clock=lambda: now[0])
    progress = RunProgress("b1", {"succeeded": 0}, 100, 1000.0, deadline=1100.0)
    for t, done in ((1000.0, 0), (1010.0, 10), (1020.0, 20)):
        now[0] = t
        store.sample(RunProgress("b1", {"succeeded": done}, 100, 1000.0, deadline=1100.0))
    now[0] = 1020.0
    chart = store.burndown(RunProgress("b1", {"succeeded": 20}, 100, 1000.0, deadline=1100.0))
    assert chart.rate == 1.0 and chart.projected == 1100.0 and not chart.late
    late = store.burndown(RunProgress("b1", {"succeeded": 20}, 100, 1000.0, deadline=1090.0))
    assert late.late
    svg = burndown_svg(chart, ZoneInfo("UTC"))
    assert svg.startswith("<svg") and "deadline" in svg and "stroke-dasharray" in svg
    assert not Burndown([(0, 0)], 10, 0, None, None, 5.0, 10.0).late  # done: never late
    assert progress.total == 100


def test_the_run_page_warns_while_the_projection_passes_the_deadline(site: Site) -> None:
    site.ctx.engine.start("flow", {"account": "good"}, run="late")
    site.ctx.engine.set_run_deadline("late", 1_000_000.0)  # long gone, one instance still running
    client = site.login("lena", "viewer")
    assert "⚠ Past its deadline" in client.get("/runs/late").text  # the deadline passed with work left
    assert "past the deadline" in client.get("/runs").text
    site.driver.run_until_idle()
    assert "⚠" not in client.get("/runs/late").text  # finished: no warning


def test_the_demo_user_gets_a_generated_password_unless_one_is_given(site: Site, monkeypatch: Any) -> None:
    import console.demo as demo

    class Ctx:
        users = site.ctx.users

    monkeypatch.setattr("console.app.build_context", lambda *_, **__: Ctx)
    user, password, generated = demo.ensure_demo_user(ConsoleSettings.from_env({}), Settings())
    assert generated and len(password) >= 12 and site.ctx.users.verify(user, password) is not None
    chosen = ConsoleSettings.from_env({"TRADEFLOW_DEMO_PASSWORD": "chosen by the operator"})
    user, password, generated = demo.ensure_demo_user(chosen, Settings())
    assert not generated and site.ctx.users.verify(user, "chosen by the operator") is not None


def test_the_sampler_records_live_runs_and_a_last_sample_when_they_finish(site: Site) -> None:
    from console.burndown import Sampler

    site.ctx.engine.start("flow", {"account": "good"}, run="s1")
    sampler = Sampler(site.ctx.engine, site.ctx.burndown, interval=60)
    sampler.sample_once()
    key = site.ctx.burndown.keys.burndown("s1")
    assert [json.loads(x)[1:] for x in site.ctx.burndown.client.lrange(key, 0, -1)] == [[1, 0]]
    site.driver.run_until_idle()
    sampler.sample_once()
    sampler.sample_once()  # done: not sampled again
    assert [json.loads(x)[1:] for x in site.ctx.burndown.client.lrange(key, 0, -1)] == [[1, 0], [0, 1]]
    assert site.ctx.burndown.client.llen(site.ctx.burndown.keys.steps_samples) == 3


def test_a_runs_burndown_samples_expire_with_the_engines_retention(site: Site) -> None:
    store = BurndownStore(site.ctx.users.client, site.ctx.users.keys, retention_seconds=120)
    store.sample(RunProgress("b2", {"succeeded": 0}, 10, 1000.0))
    assert 0 < site.ctx.users.client.ttl(site.ctx.users.keys.burndown("b2")) <= 120
