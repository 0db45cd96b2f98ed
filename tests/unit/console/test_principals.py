"""The console acts as the signed-in user's Principal (issue 19): the instance page's generic
signal form cannot do what the await node's roles and quorum forbid, and says so; logins and
operator actions land in the engine's audit log under the user's name and roles."""

from __future__ import annotations

import json
from html import unescape

from fastapi.testclient import TestClient

from engine.definitions.validation import load_definition
from tests.unit.console.conftest import PASSWORD, Site, csrf_of

REVIEW = {"name": "decide", "initial_data": {"type": "object"}, "start": "review",
          "nodes": {"review": {"type": "await",
                               "signals": {"approve": {"next": "done", "roles": ["pm"]},
                                           "reject": {"next": "dropped", "roles": ["pm"], "requires": ["reason"]}},
                               "quorum": {"signal": "approve", "count": 2}},
                    "done": {"type": "terminal", "status": "succeeded"},
                    "dropped": {"type": "terminal", "status": "failed"}}}


def _signal(site: Site, client: TestClient, iid: str, name: str, data: dict) -> str:
    token = csrf_of(client.get(f"/instances/{iid}").text)
    answer = client.post(f"/instances/{iid}/signal", data={"csrf_token": token, "signal": name,
                                                            "payload": json.dumps(data)})
    assert answer.status_code == 303 and answer.headers["location"] == f"/instances/{iid}"
    return unescape(client.get(f"/instances/{iid}").text)


def test_an_operators_signal_to_a_pm_only_await_is_refused_and_shown(site: Site) -> None:
    site.ctx.engine.publish(load_definition(json.dumps(REVIEW)))
    iid = site.ctx.engine.start("decide", {}, run="review-run")
    operator = site.login("olga", "operator")
    page = _signal(site, operator, iid, "reject", {"by": "paula", "reason": "client on hold"})
    assert "signal 'reject' refused" in page and "pm" in page and 'class="flash error"' in page
    page = _signal(site, operator, iid, "approve", {"approvals": [1, 2]})  # a forged count changes nothing
    assert "signal 'approve' refused" in page
    assert site.ctx.engine.get(iid).status.value == "awaiting"
    refused = [a for a in site.ctx.engine.activities(iid) if a.get("outcome") == "refused"]
    assert len(refused) == 2 and {a.get("by") for a in refused} == {"olga"}
    events = site.ctx.engine.audit(person="olga").events
    assert [e.kind for e in events if e.instance == iid] and all("operator" in e.roles for e in events)


def test_a_pm_needs_a_second_person_for_the_quorum(site: Site) -> None:
    site.ctx.engine.publish(load_definition(json.dumps(REVIEW)))
    iid = site.ctx.engine.start("decide", {}, run="review-run")
    paula = site.login("paula", "pm")
    page = _signal(site, paula, iid, "approve", {"note": "fine"})
    assert "counted, 1 of 2 distinct senders" in page
    page = _signal(site, paula, iid, "approve", {"note": "again"})
    assert "refused" in page and "paula sent it already" in page
    assert site.ctx.engine.get(iid).status.value == "awaiting"
    peter = site.login("peter", "pm")
    page = _signal(site, peter, iid, "approve", {})
    assert "signal approve: applied" in page
    assert site.ctx.engine.get(iid).status.value == "succeeded"


def test_a_viewer_cannot_send_a_signal_at_all(site: Site) -> None:
    site.ctx.engine.publish(load_definition(json.dumps(REVIEW)))
    iid = site.ctx.engine.start("decide", {}, run="review-run")
    viewer = site.login("vera", "viewer")
    page = viewer.get(f"/instances/{iid}").text
    assert 'id="signal-form"' not in page
    token = csrf_of(page)
    assert viewer.post(f"/instances/{iid}/signal", data={"csrf_token": token, "signal": "approve"}).status_code == 403


def test_the_signal_form_says_who_may_send_what(site: Site) -> None:
    site.ctx.engine.publish(load_definition(json.dumps(REVIEW)))
    iid = site.ctx.engine.start("decide", {}, run="review-run")
    page = site.login("olga", "operator").get(f"/instances/{iid}").text
    assert "<td>reject</td><td>dropped</td><td>pm</td><td>reason</td>" in page
    assert "2 distinct senders of approve" in page


def test_logins_logouts_and_actions_are_audited_with_the_users_principal(site: Site) -> None:
    client = site.login("otto", "operator")
    bad = site.client()
    bad.post("/login", data={"username": "otto", "password": "not it", "csrf_token": csrf_of(bad.get("/login").text)})
    iid = site.ctx.engine.start("flow", {"account": "good"})
    token = csrf_of(client.get("/runs").text)
    assert client.post(f"/instances/{iid}/pause", data={"csrf_token": token, "reason": "look"}).status_code == 303
    client.post("/logout", data={"csrf_token": token})
    kinds = [(e.kind, e.by, e.roles) for e in reversed(site.ctx.engine.audit(person="otto").events)]
    assert kinds[0] == ("login", "otto", ["operator", "viewer"])
    assert ("login_failed", "otto", []) in kinds and kinds[-1][0] == "logout"
    assert any(kind == "pause" and roles == ["operator", "viewer"] for kind, _, roles in kinds), kinds
    assert PASSWORD not in json.dumps([e.detail for e in site.ctx.engine.audit().events])
