"""The login throttle under parallel attempts, and sessions that die at logout, password change
and removal (issue 19): on the real Redis, through the real app."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from tests.unit.console.conftest import PASSWORD, Site, csrf_of


def test_twenty_parallel_attempts_reach_the_password_check_at_most_free_times(site: Site) -> None:
    site.ctx.users.add("carl", "viewer", PASSWORD)
    checked: list[str] = []
    verify = site.ctx.users.verify

    def counting_verify(name: str, password: str) -> object:
        checked.append(name)
        return verify(name, password)

    site.ctx.users.verify = counting_verify  # type: ignore[method-assign]
    clients: list[tuple[TestClient, str]] = []
    for _ in range(20):
        client = site.client()
        clients.append((client, csrf_of(client.get("/login").text)))
    barrier = threading.Barrier(20)

    def attempt(pair: tuple[TestClient, str]) -> tuple[int, str | None]:
        client, token = pair
        barrier.wait()
        answer = client.post("/login", data={"username": "carl", "password": "wrong guess", "csrf_token": token})
        return answer.status_code, answer.headers.get("retry-after")

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(attempt, clients))
    codes = [code for code, _ in answers]
    assert len(checked) == codes.count(401) <= site.ctx.throttle.free
    assert codes.count(429) == 20 - codes.count(401) >= 17
    assert all(int(after) >= 1 for code, after in answers if code == 429)
    # the right password is refused too while the wait lasts: not even checked
    client, token = clients[0]
    assert client.post("/login", data={"username": "carl", "password": PASSWORD,
                                       "csrf_token": token}).status_code == 429
    assert len(checked) == codes.count(401)


def test_one_address_cannot_walk_through_many_user_names(site: Site) -> None:
    site.ctx.throttle.address_free = 5
    client = site.client()
    token = csrf_of(client.get("/login").text)
    codes = [client.post("/login", data={"username": f"user{n}", "password": "guess", "csrf_token": token}
                         ).status_code for n in range(8)]
    assert codes == [401] * 5 + [429] * 3  # each name is fresh; the address is not
    site.clock.now += 3
    assert client.post("/login", data={"username": "user9", "password": "guess", "csrf_token": token}
                       ).status_code == 401


def test_a_correct_password_gives_the_address_its_attempt_back(site: Site) -> None:
    site.ctx.throttle.address_free = 2
    for n in range(4):  # four colleagues behind one address sign in, one after the other
        site.login(f"colleague{n}", "viewer")


def _saved(site: Site, client: TestClient) -> TestClient:
    """Another client holding a copy of ``client``'s session cookie."""
    copy = site.client()
    copy.cookies.set("tradeflow_console", client.cookies.get("tradeflow_console"))
    return copy


def _reads(client: TestClient) -> tuple[int, int]:
    return client.get("/runs").status_code, client.get("/api/runs").status_code


def test_a_saved_cookie_is_dead_after_logout(site: Site) -> None:
    client = site.login("ann", "viewer")
    saved = _saved(site, client)
    assert _reads(saved) == (200, 200)
    other = site.login("ann", "viewer", add=False)  # ann's second browser
    token = csrf_of(client.get("/runs").text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    runs = saved.get("/runs")
    assert runs.status_code == 303 and runs.headers["location"].startswith("/login")
    assert saved.get("/api/runs").status_code == 401
    assert _reads(other) == (200, 200)  # logging out ends this session, not her other ones


def test_a_saved_cookie_is_dead_after_a_password_change_or_removal(site: Site) -> None:
    client = site.login("bob", "operator")
    saved = _saved(site, client)
    assert _reads(saved) == (200, 200)
    site.ctx.users.add("bob", "operator", "a brand new password")
    assert _reads(saved) == (303, 401)
    assert _reads(client) == (303, 401)
    client = site.login("bob", "operator")  # re-added with PASSWORD again by login()
    saved = _saved(site, client)
    assert _reads(saved) == (200, 200)
    site.ctx.users.remove("bob")
    assert _reads(saved) == (303, 401)
    site.ctx.users.add("bob", "operator", PASSWORD)  # the same name again is not the old session
    assert _reads(saved) == (303, 401)


def test_a_session_ends_after_its_hours_whatever_the_cookie_says(site: Site) -> None:
    client = site.login("cleo", "viewer")
    sid = client.cookies.get("tradeflow_console")
    assert sid and _reads(client) == (200, 200)
    sessions = site.ctx.sessions
    key = sessions.keys.sessions("cleo")
    for session_id in sessions.client.hkeys(key):
        sessions.client.hset(key, session_id, "1.0")  # expired long ago
    assert _reads(client) == (303, 401)
