"""Sessions, roles, CSRF, the login slowdown, tokens: the console's gates, on the real Redis."""

from __future__ import annotations

import json

from tests.unit.console.conftest import PASSWORD, Site, csrf_of


def test_only_healthz_and_login_answer_without_a_session(site: Site) -> None:
    client = site.client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/login").status_code == 200
    for path in ("/", "/runs", "/runs/adhoc", "/instances/x", "/definitions", "/definitions/flow",
                 "/definitions/validate"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), path
    for path in ("/api/runs", "/api/instances/x", "/metrics"):
        assert client.get(path).status_code == 401, path
    assert client.post("/runs/adhoc/bulk", data={"verb": "cancel"}).status_code in {303, 401}


def test_a_session_cookie_is_signed_httponly_and_samesite(site: Site) -> None:
    client = site.login("ann", "viewer")
    cookie = client.cookies.jar
    header = site.client().get("/login").headers["set-cookie"]
    assert "httponly" in header.lower() and "samesite=strict" in header.lower()
    assert any(c.name == "tradeflow_console" for c in cookie)
    forged = site.client()
    forged.cookies.set("tradeflow_console", "eyJ1c2VyIjogImFubiJ9.forged.sig")
    assert forged.get("/runs").status_code == 303


def test_passwords_are_stored_hashed_and_checked(site: Site) -> None:
    site.ctx.users.add("bob", "pm", PASSWORD)
    raw = site.ctx.users.client.hget(site.ctx.users.keys.users, "bob")
    assert PASSWORD.encode() not in raw and json.loads(raw)["hash"].startswith("$argon2id$")
    assert site.ctx.users.verify("bob", PASSWORD).role.value == "pm"
    assert site.ctx.users.verify("bob", "wrong password!") is None
    assert site.ctx.users.verify("nobody", PASSWORD) is None


def test_failed_logins_are_slowed_down_per_user_and_address(site: Site) -> None:
    site.ctx.users.add("carl", "viewer", PASSWORD)
    client = site.client()
    token = csrf_of(client.get("/login").text)

    def attempt(password: str) -> int:
        return client.post("/login", data={"username": "carl", "password": password, "csrf_token": token}).status_code

    assert [attempt("nope") for _ in range(3)] == [401, 401, 401]
    assert attempt(PASSWORD) == 429  # locked for 2 s after the third failure: not even checked
    site.clock.now += 2.5
    assert attempt("nope") == 401  # fourth failure: the next wait doubles
    site.clock.now += 2.5
    assert attempt(PASSWORD) == 429
    site.clock.now += 2.0
    assert attempt(PASSWORD) == 303  # 4.5 s after: allowed, and the record is cleared
    assert site.ctx.throttle.client.exists(site.ctx.throttle.keys.login_user("carl")) == 0


def test_a_post_without_the_csrf_token_is_refused(site: Site) -> None:
    client = site.login("olga", "operator")
    iid = site.ctx.engine.start("flow", {"account": "good"})
    assert client.post(f"/instances/{iid}/pause", data={"reason": "x"}).status_code == 403
    assert client.post(f"/instances/{iid}/pause", data={"reason": "x", "csrf_token": "wrong"}).status_code == 403
    assert client.post("/logout").status_code == 403
    assert site.ctx.engine.get(iid).status.value == "running"
    token = csrf_of(client.get("/runs").text)
    assert client.post(f"/instances/{iid}/pause", data={"reason": "x", "csrf_token": token}).status_code == 303
    assert site.ctx.engine.get(iid).status.value == "paused"
    fetched = client.post(f"/instances/{iid}/resume", headers={"X-CSRF-Token": token})
    assert fetched.status_code == 303 and site.ctx.engine.get(iid).status.value == "running"


def test_a_role_that_may_not_act_gets_403_and_actions_record_the_user(site: Site) -> None:
    iid = site.ctx.engine.start("flow", {"account": "bad"})
    site.driver.run_until_idle()
    assert site.ctx.engine.get(iid).status.value == "failed"
    viewer = site.login("vera", "viewer")
    token = csrf_of(viewer.get(f"/instances/{iid}").text)
    assert viewer.post(f"/instances/{iid}/retry", data={"csrf_token": token}).status_code == 403
    pm = site.login("pat", "pm")
    token = csrf_of(pm.get(f"/instances/{iid}").text)
    assert pm.post(f"/instances/{iid}/cancel", data={"csrf_token": token}).status_code == 403
    operator = site.login("otto", "operator")
    token = csrf_of(operator.get(f"/instances/{iid}").text)
    edited = json.dumps({"check": {"checked": "fixed by hand"}})
    answer = operator.post(f"/instances/{iid}/retry", data={"csrf_token": token, "reason": "data fixed",
                                                            "context_json": edited})
    assert answer.status_code == 303
    control = [a for a in site.ctx.engine.activities(iid) if a.get("control") == "retry"]
    assert control and control[-1]["reason"] == "by otto: data fixed" and control[-1]["edited"] == ["check"]
    assert site.ctx.engine.get(iid).context["check"] == {"checked": "fixed by hand"}


def test_api_tokens_act_with_their_users_role_without_csrf(site: Site) -> None:
    site.ctx.users.add("bot", "operator", PASSWORD)
    token, token_id = site.ctx.users.create_token("bot", "ci")
    assert token.encode() not in b"".join(site.ctx.users.client.hgetall(site.ctx.users.keys.tokens).values())
    iid = site.ctx.engine.start("flow", {"account": "good"})
    client = site.client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/instances/{iid}", headers=headers).json()["status"] == "running"
    answer = client.post(f"/api/instances/{iid}/pause", json={"reason": "api"}, headers=headers)
    assert answer.status_code == 200 and answer.json()["status"] == "paused"
    assert client.get("/api/runs", headers={"Authorization": "Bearer tfc_nope"}).status_code == 401
    site.ctx.users.add("watcher", "viewer", PASSWORD)
    viewer_token, _ = site.ctx.users.create_token("watcher")
    refused = client.post(f"/api/instances/{iid}/resume", json={}, headers={"Authorization": f"Bearer {viewer_token}"})
    assert refused.status_code == 403
    site.ctx.users.revoke_token(token_id)
    assert client.get("/api/runs", headers=headers).status_code == 401


def test_removing_a_user_ends_their_session(site: Site) -> None:
    client = site.login("gone", "admin")
    assert client.get("/runs").status_code == 200
    site.ctx.users.remove("gone")
    assert client.get("/runs").status_code == 303


def test_login_redirects_only_within_the_site(site: Site) -> None:
    site.ctx.users.add("eve", "viewer", PASSWORD)

    def after_login(target: str) -> str:
        client = site.client()
        token = csrf_of(client.get("/login").text)
        answer = client.post("/login", data={"username": "eve", "password": PASSWORD, "csrf_token": token,
                                             "next": target})
        return answer.headers["location"]

    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/"):
        assert after_login(target) == "/runs", target
    assert after_login("/definitions") == "/definitions"
