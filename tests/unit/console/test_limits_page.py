"""The Limits page and its JSON API, on the real Redis with an in-process engine.

Pins: anyone signed in sees every limit as ``tradeflow limits`` lists it (setting, free now,
parked, holders, times parked, override); only an admin sees the forms and changes a limit -- a
rate, a pool's size, clearing the override -- each with the CSRF token, through the engine's
``set_limit``/``clear_limit`` (the CLI's door), audited with the admin as principal; a pm,
operator or viewer gets 403 and no form; bad values come back as a message, nothing set.
"""

from __future__ import annotations

from engine.api import LimitState
from engine.clock import ManualClock
from engine.testing import store_of
from tests.unit.console.conftest import PASSWORD, Site, csrf_of


def used(site: Site) -> None:
    """Two limits as steps would leave them: a rate with one parked step, a pool with a holder.

    The buckets run on a clock of the test's (it does not move): at 5/s a token came back 0.2 s of
    Redis's clock after the calls, so a busy machine showed 1 token free where the test expects 0.
    """
    store = store_of(site.ctx.engine)
    store.limit_clock = ManualClock(1_750_000_000.0)
    store.limit_rate("brokerage", "i1", per_second=5, burst=1)
    store.limit_rate("brokerage", "i2", per_second=5, burst=1)  # parked
    store.limit_acquire("household:hh-1", "i3", 1, maximum=1)


def state(site: Site, name: str) -> LimitState:
    return {s.name: s for s in site.ctx.engine.limits()}[name]


def test_everyone_sees_the_limits_but_only_an_admin_changes_one(site: Site) -> None:
    used(site)
    for role in ("viewer", "operator", "pm"):
        client = site.login(f"not-{role}", role)
        page = client.get("/limits")
        assert page.status_code == 200 and 'href="/limits"' in page.text
        assert "brokerage" in page.text and "5/s, burst 1" in page.text and "at most 1 at once" in page.text
        assert "/limits/set" not in page.text and "Change a limit" not in page.text  # no form
        token = csrf_of(page.text)
        assert client.post("/limits/set", data={"csrf_token": token, "name": "brokerage",
                                                "per_second": "1"}).status_code == 403
        assert client.post("/limits/clear", data={"csrf_token": token, "name": "brokerage"}).status_code == 403
        assert client.put("/api/admin/limits/brokerage", json={"per_second": 1},
                          headers={"x-csrf-token": token}).status_code == 403
        assert client.get("/api/limits").status_code == 200
    narrowed = client.get("/limits?q=house").text
    assert 'data-limit="household:hh-1"' in narrowed and 'data-limit="brokerage"' not in narrowed
    assert not state(site, "brokerage").override
    assert [e.kind for e in site.ctx.engine.audit(kinds=["limit_set", "limit_cleared"]).events] == []


def test_an_admin_sets_a_rate_and_a_pool_size_and_clears_them_each_audited(site: Site) -> None:
    used(site)
    admin = site.login("ada", "admin")
    page = admin.get("/limits?name=brokerage").text
    assert "Change a limit" in page and 'value="brokerage"' in page
    token = csrf_of(page)
    form = {"name": "brokerage", "what": "rate", "per_second": "20", "burst": "40"}
    assert admin.post("/limits/set", data=form).status_code == 403  # no CSRF token
    assert not state(site, "brokerage").override
    assert admin.post("/limits/set", data={**form, "csrf_token": token}).status_code == 303
    now = state(site, "brokerage")
    assert (now.per_second, now.burst, now.override) == (20, 40, True)
    listing = admin.get("/limits").text
    assert "20/s, burst 40" in listing and "override" in listing and "set for every worker" in listing
    assert admin.post("/limits/set", data={"csrf_token": token, "name": "household:hh-1", "what": "max",
                                           "maximum": "3"}).status_code == 303
    assert state(site, "household:hh-1").max == 3
    assert admin.post("/limits/clear", data={"csrf_token": token, "name": "brokerage"}).status_code == 303
    now = state(site, "brokerage")
    assert (now.per_second, now.burst, now.override) == (5, 1, False)  # the definitions' setting again
    events = site.ctx.engine.audit(person="ada", kinds=["limit_set", "limit_cleared"]).events
    assert [(e.kind, e.detail["limit"]) for e in events] == [
        ("limit_cleared", "brokerage"), ("limit_set", "household:hh-1"), ("limit_set", "brokerage")]
    assert events[2].detail["per_second"] == 20 and events[2].detail["was"]["per_second"] == 5
    assert "admin" in events[0].roles


def test_bad_values_are_refused_with_a_message_and_nothing_is_set(site: Site) -> None:
    used(site)
    admin = site.login("ada", "admin")
    token = csrf_of(admin.get("/limits").text)
    for form, words in [({"per_second": "fast"}, "per second must be a number"),
                        ({"per_second": ""}, "give the calls a second"),
                        ({"per_second": "0"}, "greater than 0"),
                        ({"per_second": "0.001", "burst": "1000"}, "over a day"),
                        ({"what": "max", "maximum": "0"}, "greater than or equal to 1")]:
        answer = admin.post("/limits/set", data={"csrf_token": token, "name": "brokerage", "what": "rate", **form})
        assert answer.status_code == 303 and answer.headers["location"].startswith("/limits?name=brokerage")
        assert words in admin.get("/limits").text, words
    odd = admin.post("/limits/set", data={"csrf_token": token, "name": "desk #1 & co", "per_second": "x"})
    assert odd.headers["location"] == "/limits?name=desk%20%231%20%26%20co#change"  # the name comes back whole
    assert not state(site, "brokerage").override
    assert site.ctx.engine.audit(kinds=["limit_set"]).events == []


def test_the_limits_api_lists_sets_and_clears_with_an_admin_token(site: Site) -> None:
    used(site)
    site.ctx.users.add("root", "admin", PASSWORD)
    secret, _ = site.ctx.users.create_token("root", "ops")
    client, bearer = site.client(), {"Authorization": f"Bearer {secret}"}
    listed = {row["name"]: row for row in client.get("/api/limits", headers=bearer).json()["limits"]}
    assert listed["brokerage"]["parked"] == 1 and listed["household:hh-1"]["holders"] == 1
    changed = client.put("/api/admin/limits/brokerage", json={"per_second": 50}, headers=bearer)
    assert changed.status_code == 200 and (changed.json()["per_second"], changed.json()["burst"]) == (50, 50)
    assert client.put("/api/admin/limits/brokerage", json={}, headers=bearer).status_code == 409
    assert client.delete("/api/admin/limits/household:hh-1", headers=bearer).json()["override"] is False
    assert client.delete("/api/admin/limits/brokerage", headers=bearer).status_code == 200
    assert not state(site, "brokerage").override
    kinds = [e.kind for e in site.ctx.engine.audit(person="root", kinds=["limit_set", "limit_cleared"]).events]
    assert kinds == ["limit_cleared", "limit_cleared", "limit_set"]


def test_metrics_export_tokens_parked_and_waits_per_limit(site: Site) -> None:
    used(site)
    text = site.client().get("/metrics", headers={"Authorization": "Bearer metrics-secret-token"}).text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tradeflow_limit_")}
    assert samples['tradeflow_limit_tokens{kind="rate",limit="brokerage"}'] == 0
    assert samples['tradeflow_limit_parked{kind="rate",limit="brokerage"}'] == 1
    assert samples['tradeflow_limit_waits_total{kind="rate",limit="brokerage"}'] == 1
    assert samples['tradeflow_limit_tokens{kind="concurrency",limit="household:hh-1"}'] == 0
