"""The batches, audit and admin pages and their JSON API, on the real Redis with an in-process engine.

Pins: anyone signed in sees the batches, only an operator (with the CSRF token) closes one, and
the close is audited with its principal; lists are paged; the audit page is for operators and
admins, filtered by person and kind and paged by its cursor, and logins land in it; only an admin
manages users and tokens, each change audited with the admin as principal, a token's secret shown
once, and the last admin kept.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import APIRouter

from console.app import ConsolePlugin, create_app
from console.batches import BatchSection
from engine import Principal
from engine.definitions.validation import load_definition
from engine.service import ActionRegistry, Transition, action
from engine.testing import Driver
from tests.unit.console.conftest import PASSWORD, Site, csrf_of

ACTIONS = ActionRegistry()
OPERATOR = Principal("ops-bot", frozenset({"operator", "viewer"}))


@action("svc", "total", into=ACTIONS)
def total(payload: dict[str, Any]) -> dict[str, Any]:
    """Every member gets the batch's total."""
    whole = sum(m["input"]["amount"] for m in payload["members"])
    return {m["instance"]: Transition("ok", {"total": whole}) for m in payload["members"]}


MEET = {"name": "meet", "initial_data": {"type": "object", "required": ["amount"]}, "start": "hold",
        "nodes": {"hold": {"type": "await", "signals": {"go": "meet"}},
                  "meet": {"type": "gather", "service": "svc", "action": "total", "group": "instance.run",
                           "close": "timestamp('2999-01-01T00:00:00Z')", "input": {"amount": "data.amount"},
                           "transitions": {"ok": "done"}},
                  "done": {"type": "terminal", "status": "succeeded"}}}


@pytest.fixture
def meet(site: Site) -> Driver:
    site.ctx.engine.publish(load_definition(json.dumps(MEET)), alias="production")
    return Driver(site.ctx.engine, ACTIONS)


def q(batch_id: str) -> str:
    """A batch id in a URL path (ids carry '#')."""
    return quote(batch_id, safe="")


def open_batch(site: Site, driver: Driver, run: str, amounts: list[int], arrive: int) -> str:
    """A batch of ``run`` with ``arrive`` of the instances in it (the others could still come: it stays open)."""
    engine = site.ctx.engine
    ids = [engine.start("meet", {"amount": a}, run=run) for a in amounts]
    driver.run_until_idle()
    for iid in ids[:arrive]:
        engine.signal(iid, "go", by=OPERATOR)
    driver.run_until_idle()
    batch = engine.get(ids[0]).batch
    assert batch and engine.batch(batch).batch.status == "open"
    return batch


def test_anyone_signed_in_sees_the_batches_but_a_viewer_cannot_close_one(site: Site, meet: Driver) -> None:
    batch = open_batch(site, meet, "r1", [1, 2, 3], 2)
    viewer = site.login("vera", "viewer")
    listing = viewer.get("/batches")
    assert listing.status_code == 200 and batch in listing.text and "open" in listing.text
    page = viewer.get(f"/batches/{q(batch)}")
    assert page.status_code == 200 and "Accounts in this batch (2)" in page.text
    assert "Close now" not in page.text
    token = csrf_of(page.text)
    assert viewer.post(f"/batches/{q(batch)}/close", data={"csrf_token": token}).status_code == 403
    assert viewer.post(f"/api/batches/{q(batch)}/close", headers={"X-CSRF-Token": token}).status_code == 403
    assert viewer.get("/api/batches").json()["batches"][0]["id"] == batch
    assert site.ctx.engine.batch(batch).batch.status == "open"


def test_an_operator_closes_an_open_batch_with_the_csrf_token_and_it_is_audited(site: Site, meet: Driver) -> None:
    batch = open_batch(site, meet, "r2", [1, 2, 3], 2)
    operator = site.login("olga", "operator")
    page = operator.get(f"/batches/{q(batch)}")
    assert "Close now and trade 2 accounts" in page.text and "data-confirm" in page.text
    assert operator.post(f"/batches/{q(batch)}/close").status_code == 403  # no CSRF token
    assert operator.post(f"/batches/{q(batch)}/close", data={"csrf_token": "forged"}).status_code == 403
    assert site.ctx.engine.batch(batch).batch.status == "open"
    answer = operator.post(f"/batches/{q(batch)}/close", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 303 and answer.headers["location"] == f"/batches/{q(batch)}"
    assert site.ctx.engine.batch(batch).batch.status == "closed"
    shown = operator.get(answer.headers["location"]).text
    assert f"closed {batch}" in shown and "Close now" not in shown
    meet.run_until_idle()
    view = site.ctx.engine.batch(batch)
    assert view.batch.status == "applied"
    again = operator.post(f"/api/batches/{q(batch)}/close", headers={"X-CSRF-Token": csrf_of(shown)})
    assert again.status_code == 200 and again.json()["closed"] is False and again.json()["status"] == "applied"
    events = site.ctx.engine.audit(person="olga").events
    closes = [e for e in events if e.kind == "close_batch"]
    assert closes and "operator" in closes[-1].roles  # the first close, as the operator


def test_the_batch_list_and_members_are_paged_and_filtered(site: Site, meet: Driver) -> None:
    first = open_batch(site, meet, "p1", [1, 2, 3], 2)
    second = open_batch(site, meet, "p2", [1, 2, 3, 4], 3)
    site.ctx.engine.close_batch(first, by=OPERATOR)
    meet.run_until_idle()
    viewer = site.login("vic", "viewer")
    one = viewer.get("/api/batches?limit=1").json()
    assert [b["id"] for b in one["batches"]] == [second] and one["next"] == 1
    rest = viewer.get("/api/batches?limit=1&offset=1").json()
    assert [b["id"] for b in rest["batches"]] == [first] and rest["next"] is None
    assert [b["id"] for b in viewer.get("/api/batches?status=applied").json()["batches"]] == [first]
    assert [b["id"] for b in viewer.get("/api/batches?q=p2").json()["batches"]] == [second]
    assert viewer.get("/api/batches?status=bogus").status_code == 409
    assert viewer.get("/api/batches?limit=0").status_code == 409
    members = viewer.get(f"/api/batches/{q(second)}?limit=2").json()
    assert members["total"] == 3 and len(members["members"]) == 2 and members["next"] == 2
    page = viewer.get(f"/batches/{q(second)}?limit=2").text
    assert "1\N{EN DASH}2 of 3" in page and "offset=2" in page
    assert "Older →" in viewer.get("/batches?limit=1").text
    applied = viewer.get(f"/batches/{q(first)}").text
    assert "Applied" in applied and ">ok<" in applied
    assert viewer.get("/batches/nope%231").status_code == 404


def test_a_plugin_adds_its_tables_to_the_batch_page(site: Site, meet: Driver) -> None:
    def detail(view: Any) -> list[BatchSection]:
        return [BatchSection("Block orders and fills", ["Symbol", "Quantity"], [["XYZ", 1234.5]], "a note",
                             frozenset({"Quantity"}))]

    site.app = create_app(site.ctx, plugins=[ConsolePlugin("p", APIRouter(), batch_detail=detail)], sample=False)
    batch = open_batch(site, meet, "r3", [1, 2], 1)
    viewer = site.login("val", "viewer")
    page = viewer.get(f"/batches/{q(batch)}").text
    assert "Block orders and fills" in page and "1,234.5" in page and "a note" in page
    sections = viewer.get(f"/api/batches/{q(batch)}").json()["sections"]
    assert sections == [{"title": "Block orders and fills", "note": "a note",
                         "rows": [{"Symbol": "XYZ", "Quantity": 1234.5}]}]


def test_the_audit_page_is_for_operators_and_admins_filtered_and_paged(site: Site, meet: Driver) -> None:
    open_batch(site, meet, "a1", [1, 2, 3], 2)  # two signals sent by ops-bot
    site.login("paula", "pm")  # the sign-in route records it
    failed = site.client()
    assert failed.post("/login", data={"username": "paula", "password": "not her password",
                                       "csrf_token": csrf_of(failed.get("/login").text)}).status_code == 401
    viewer = site.login("vince", "viewer")
    assert viewer.get("/audit").status_code == 403
    assert viewer.get("/api/audit").status_code == 403
    pm = site.login("pam", "pm")
    assert pm.get("/audit").status_code == 403
    operator = site.login("oscar", "operator")
    page = operator.get("/audit?person=paula").text
    assert "login failed" in page and "testclient" in page and "ops-bot" not in page
    signals = operator.get("/api/audit?person=ops-bot&kind=decisions+and+signals").json()
    assert len(signals["events"]) == 2 and {e["kind"] for e in signals["events"]} == {"signal"}
    logins = operator.get("/api/audit?kind=logins&person=paula").json()["events"]
    assert [e["kind"] for e in logins] == ["login_failed", "login"]  # newest first
    assert logins[1]["roles"] == ["pm", "viewer"] and logins[1]["detail"]["address"] == "testclient"
    first = operator.get("/api/audit?person=paula&limit=1").json()
    assert len(first["events"]) == 1 and first["next"]
    second = operator.get(f"/api/audit?person=paula&limit=1&before={first['next']}").json()
    assert [e["kind"] for e in second["events"]] == ["login"]
    html = operator.get("/audit?person=paula&limit=1").text
    assert "Older →" in html and "before=" in html
    assert operator.get("/api/audit?since=not-a-date").status_code == 409
    assert operator.get("/api/audit?since=2999-01-01").json()["events"] == []
    admin = site.login("ada", "admin")
    assert admin.get("/audit").status_code == 200


def test_only_an_admin_sees_and_uses_the_admin_pages(site: Site) -> None:
    for role in ("viewer", "operator", "pm"):
        client = site.login(f"not-{role}", role)
        for path in ("/admin/users", "/admin/tokens", "/api/admin/users", "/api/admin/tokens"):
            assert client.get(path).status_code == 403, (role, path)
        token = csrf_of(client.get("/runs").text)
        answer = client.post("/admin/users", data={"csrf_token": token, "name": "x", "role": "admin",
                                                   "password": PASSWORD})
        assert answer.status_code == 403 and site.ctx.users.get("x") is None
        assert "/admin/users" not in client.get("/runs").text  # no navigation entry either
    admin = site.login("ada", "admin")
    assert admin.get("/admin/users").status_code == 200 and 'href="/admin/users"' in admin.get("/runs").text


def test_an_admin_adds_changes_and_removes_a_user_each_change_audited(site: Site) -> None:
    admin = site.login("ada", "admin")
    token = csrf_of(admin.get("/admin/users").text)
    form = {"name": "newbie", "role": "pm", "password": "long enough pw"}
    assert admin.post("/admin/users", data=form).status_code == 403  # no CSRF token
    assert site.ctx.users.get("newbie") is None
    assert admin.post("/admin/users", data={**form, "password": "short", "csrf_token": token}).status_code == 303
    assert "password too short" in admin.get("/admin/users").text and site.ctx.users.get("newbie") is None
    assert admin.post("/admin/users", data={**form, "csrf_token": token}).status_code == 303
    assert "user newbie added as pm" in admin.get("/admin/users").text
    assert site.ctx.users.verify("newbie", "long enough pw").role.value == "pm"
    assert admin.post("/admin/users", data={**form, "csrf_token": token}).status_code == 303
    assert "exists already" in admin.get("/admin/users").text
    assert admin.post("/admin/users/newbie/role", data={"role": "operator", "csrf_token": token}).status_code == 303
    assert site.ctx.users.get("newbie").role.value == "operator"
    assert admin.post("/admin/users/newbie/password", data={"password": "another long one",
                                                            "csrf_token": token}).status_code == 303
    assert site.ctx.users.verify("newbie", "long enough pw") is None
    assert site.ctx.users.verify("newbie", "another long one") is not None
    assert site.ctx.users.list()[-1][0].name == "newbie"
    page = admin.get("/admin/users").text
    assert "newbie" in page and "another long one" not in page
    assert admin.post("/admin/users/newbie/remove", data={"csrf_token": token}).status_code == 303
    assert site.ctx.users.get("newbie") is None and "user newbie removed" in admin.get("/admin/users").text
    kinds = [(e.kind, e.detail.get("user")) for e in site.ctx.engine.audit(person="ada").events]
    assert kinds[:4] == [("user_removed", "newbie"), ("user_password_changed", "newbie"),
                         ("user_role_changed", "newbie"), ("user_added", "newbie")]
    assert all("another long one" not in json.dumps(e.detail) for e in site.ctx.engine.audit().events)
    assert admin.post("/admin/users/ada/remove", data={"csrf_token": token}).status_code == 303
    assert "only admin" in admin.get("/admin/users").text and site.ctx.users.get("ada") is not None
    assert admin.post("/admin/users/ada/role", data={"role": "viewer", "csrf_token": token}).status_code == 303
    assert site.ctx.users.get("ada").role.value == "admin"


def test_an_admin_creates_a_token_shown_once_and_revokes_it(site: Site) -> None:
    admin = site.login("ada", "admin")
    site.ctx.users.add("bot", "operator", PASSWORD)
    token = csrf_of(admin.get("/admin/tokens").text)
    created = admin.post("/admin/tokens", data={"user": "bot", "label": "nightly", "csrf_token": token})
    assert created.status_code == 200 and "copy it now" in created.text
    secret = created.text.split("<pre>")[1].split("</pre>")[0]
    assert secret.startswith("tfc_")
    listing = admin.get("/admin/tokens").text
    assert secret not in listing and "nightly" in listing
    bearer = {"Authorization": f"Bearer {secret}"}
    assert site.client().get("/api/batches", headers=bearer).status_code == 200
    assert site.client().get("/api/admin/users", headers=bearer).status_code == 403  # an operator's token
    token_id = site.ctx.users.tokens()[0][0]
    assert admin.post(f"/admin/tokens/{token_id}/revoke").status_code == 403  # no CSRF token
    assert admin.post(f"/admin/tokens/{token_id}/revoke", data={"csrf_token": token}).status_code == 303
    assert site.client().get("/api/batches", headers=bearer).status_code == 401
    events = site.ctx.engine.audit(person="ada", kinds=["token_created", "token_revoked"]).events
    assert [(e.kind, e.detail["token"]) for e in events] == [("token_revoked", token_id), ("token_created", token_id)]
    assert all(secret not in json.dumps(e.detail) for e in events)


def test_the_admin_api_with_an_admin_token(site: Site) -> None:
    site.ctx.users.add("root", "admin", PASSWORD)
    secret, _ = site.ctx.users.create_token("root", "ops")
    client = site.client()
    bearer = {"Authorization": f"Bearer {secret}"}
    added = client.post("/api/admin/users", json={"name": "api-user", "role": "viewer", "password": PASSWORD},
                        headers=bearer)
    assert added.status_code == 201 and added.json() == {"name": "api-user", "role": "viewer"}
    assert client.post("/api/admin/users", json={"name": "bad name!", "role": "viewer", "password": PASSWORD},
                       headers=bearer).status_code == 400
    assert client.post("/api/admin/users/api-user/role", json={"role": "pm"}, headers=bearer).json()["role"] == "pm"
    listed = client.get("/api/admin/users?limit=1", headers=bearer).json()
    assert [u["name"] for u in listed["users"]] == ["api-user"] and listed["next"] == 1
    made = client.post("/api/admin/tokens", json={"user": "api-user"}, headers=bearer).json()
    assert made["token"].startswith("tfc_")
    tokens = client.get("/api/admin/tokens", headers=bearer).json()["tokens"]
    assert made["token"] not in json.dumps(tokens) and {t["user"] for t in tokens} == {"root", "api-user"}
    assert client.delete(f"/api/admin/tokens/{made['id']}", headers=bearer).json()["revoked"] is True
    assert client.delete("/api/admin/users/api-user", headers=bearer).json()["removed"] is True
    assert site.ctx.users.get("api-user") is None
    assert [e.kind for e in site.ctx.engine.audit(person="root").events][:2] == ["user_removed", "token_revoked"]
