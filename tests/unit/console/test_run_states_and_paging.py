"""Run pages and API (issue 19): ``gathering`` shown wherever statuses are, a run whose instances
all failed is not green, no false "past the deadline" while instances await or gather, and every
list answers a page at a time, even for a 20,000-instance run."""

from __future__ import annotations

import json

from console.burndown import BurndownStore
from console.views import STATUS_ORDER, run_state
from engine.api import RunProgress
from engine.definitions.validation import load_definition
from tests.unit.console.conftest import Site

GATHER = {"name": "blocky", "initial_data": {"type": "object"}, "start": "meet",
          "nodes": {"meet": {"type": "gather", "service": "svc", "action": "total", "group": "instance.run",
                             "close": "timestamp('2099-06-15T16:00:00Z')", "input": {"amount": "1"},
                             "transitions": {"ok": "done"}},
                    "done": {"type": "terminal", "status": "succeeded"}}}
PARK = {"name": "park", "initial_data": {"type": "object"}, "start": "hold",
        "nodes": {"hold": {"type": "await", "signals": {"go": "done"}},
                  "done": {"type": "terminal", "status": "succeeded"}}}


def _progress(**counts: int) -> RunProgress:
    return RunProgress("r", counts, sum(counts.values()), 0.0, None)


def test_run_state_is_never_green_when_every_instance_failed() -> None:
    assert run_state(_progress(failed=3)).tone == "bad" and run_state(_progress(failed=3)).label == "failed"
    mixed = run_state(_progress(failed=1, succeeded=2))
    assert mixed.key == "done_with_failures" and mixed.tone == "warn"
    assert run_state(_progress(succeeded=2)).tone == "ok"
    assert run_state(_progress(cancelled=2)).key == "cancelled"
    assert run_state(_progress(awaiting=2, succeeded=1)).key == "planned"
    assert run_state(_progress(awaiting=1, gathering=1)).key == "gathering"
    assert run_state(_progress(running=1, gathering=1)).key == "running"
    assert "gathering" in STATUS_ORDER


def test_gathering_and_awaiting_instances_are_not_late_for_the_workers(site: Site) -> None:
    for definition in (GATHER, PARK):
        site.ctx.engine.publish(load_definition(json.dumps(definition)))
    site.ctx.engine.start_many("blocky", [{}, {}], run="blocks")
    site.ctx.engine.start_many("park", [{}], run="blocks")
    site.ctx.engine.set_run_deadline("blocks", 1.0)  # long past
    progress = site.ctx.engine.progress("blocks")
    assert progress.counts["gathering"] == 2 and progress.counts["awaiting"] == 1
    chart = BurndownStore(site.ctx.burndown.client, site.ctx.burndown.keys).burndown(progress)
    assert chart.remaining == 0 and not chart.late
    client = site.login("gus", "viewer")
    page = client.get("/runs/blocks").text
    assert "⚠" not in page
    assert 'data-s="gathering"' in page and '<a href="?status=gathering">gathering</a>' in page
    assert '<option value="gathering"' in page and "2 gathering in blocks" in page
    assert 'class="state info" data-k="state_label">gathering<' in page
    runs = client.get("/runs").text
    assert "past the deadline" not in runs and "gathering in blocks" in runs
    api = client.get("/api/runs/blocks").json()
    assert api["counts"]["gathering"] == 2 and api["gathering"] == 2 and api["state"] == "gathering"
    assert not api["late"]
    listed = client.get("/api/runs/blocks/instances?status=gathering").json()["items"]
    assert [i["status"] for i in listed] == ["gathering", "gathering"]


def test_a_run_whose_instances_all_failed_is_shown_failed_not_done(site: Site) -> None:
    site.ctx.engine.start_many("flow", [{"account": "bad"}, {"account": "bad"}], run="broken")
    site.driver.run_until_idle()
    client = site.login("fay", "viewer")
    page = client.get("/runs/broken").text
    assert 'class="state bad" data-k="state_label">failed<' in page and 'class="ok-note"' not in page
    runs = client.get("/runs").text
    assert '<span class="state bad">failed</span>' in runs and '<span class="ok-note">done</span>' not in runs
    assert client.get("/api/runs/broken").json()["state"] == "failed"


def test_a_polled_run_answers_304_while_nothing_changed(site: Site) -> None:
    site.ctx.engine.publish(load_definition(json.dumps(PARK)))
    site.ctx.engine.start_many("park", [{}, {}], run="quiet")
    client = site.login("pol", "viewer")
    first = client.get("/api/runs/quiet")
    tag = first.headers["etag"]
    again = client.get("/api/runs/quiet", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    site.ctx.engine.start_many("park", [{}], run="quiet")
    changed = client.get("/api/runs/quiet", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.json()["total"] == 3 and changed.headers["etag"] != tag


def test_runs_are_listed_a_page_at_a_time(site: Site) -> None:
    site.ctx.engine.publish(load_definition(json.dumps(PARK)))
    for n in range(25):
        site.ctx.engine.start_many("park", [{}], run=f"r{n:02d}")
    client = site.login("pia", "viewer")
    first = client.get("/api/runs").json()
    assert len(first["items"]) == 20 and first["next"] == "20"
    rest = client.get(f"/api/runs?offset={first['next']}").json()
    assert len(rest["items"]) == 5 and rest["next"] is None
    assert {r["run"] for r in first["items"] + rest["items"]} == {f"r{n:02d}" for n in range(25)}
    page = client.get("/runs").text
    assert 'href="?offset=20" rel="next"' in page
    assert 'href="?offset=0"' in client.get("/runs?offset=20").text


def test_a_20000_instance_run_answers_its_pages_and_api_in_pages(site: Site) -> None:
    site.ctx.engine.publish(load_definition(json.dumps(PARK)))
    ids = site.ctx.engine.start_many("park", ({"account": f"A{n:05d}", "note": "x" * 40} for n in range(20_000)),
                                     run="huge", batch=2000)
    assert len(ids) == 20_000
    client = site.login("hal", "viewer")
    seen: list[str] = []
    after = ""
    sizes = []
    for _ in range(3):
        answer = client.get(f"/api/runs/huge/instances?after={after}")
        sizes.append(len(answer.content))
        body = answer.json()
        assert len(body["items"]) == 100 and body["limit"] == 100
        seen += [i["id"] for i in body["items"]]
        after = body["next"]
    assert seen == sorted(ids)[:300]  # by id, no gap, no repeat across pages
    assert max(sizes) < 60_000  # a page, not the run (20,000 instances)
    big = client.get("/api/runs/huge/instances?limit=100000").json()
    assert len(big["items"]) == 500  # the maximum page
    found = client.get("/api/runs/huge/instances?q=a1").json()  # 10,000 accounts match: a page of them
    assert len(found["items"]) == 100 and all(
        "a1" in i["id"] or i["data"]["account"].startswith("A1") for i in found["items"])
    nothing = client.get("/api/runs/huge/instances?q=no-such-account").json()
    assert nothing["items"] == [] and nothing["next"]  # a search reads a bounded slice, then says where to go on
    rest = client.get(f"/api/runs/huge/instances?q=no-such-account&after={nothing['next']}").json()
    assert rest["items"] == [] and rest["next"] > nothing["next"]
    page = client.get("/runs/huge")
    assert page.status_code == 200 and len(page.content) < 200_000
    assert page.text.count('<td class="id">') == 100 and 'rel="next"' in page.text
    activities = client.get(f"/api/instances/{ids[0]}/activities").json()
    assert set(activities) == {"items", "next", "limit"}
