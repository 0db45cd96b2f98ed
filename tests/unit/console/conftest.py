"""A console app on the real test Redis, with an engine driven in-process (no workers)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from console.app import create_app
from console.burndown import BurndownStore
from console.config import ConsoleSettings
from console.console_keys import ConsoleKeys
from console.throttle import LoginThrottle
from console.users import UserStore
from console.web import ConsoleContext
from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.definitions.validation import load_definition
from engine.errors import ActionFailed
from engine.service import ActionRegistry, Transition, action
from engine.testing import Driver, make_store

ACTIONS = ActionRegistry()
PASSWORD = "correct horse battery"
#: Argon2id at its lowest cost for the sites here: the tests check what is stored, verified and
#: refused, not how slowly (the default costs took 0.1-0.6 s per hash and per login, hundreds of them).
TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@action("svc", "check", into=ACTIONS)
def check(payload: dict[str, Any]) -> Transition:
    """Fails for accounts named 'bad'."""
    if payload["account"] == "bad":
        raise ActionFailed("account data is broken")
    return Transition("ok", {"checked": payload["account"]})


FLOW = {"name": "flow", "initial_data": {"type": "object", "required": ["account"]}, "start": "check",
        "nodes": {"check": {"type": "service", "service": "svc", "action": "check",
                            "input": {"account": "data.account"}, "transitions": {"ok": "done"}},
                  "done": {"type": "terminal", "status": "succeeded"}}}


class Clock:
    """A settable clock for the login throttle."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Site:
    """The app, its context, a driver for the engine, the throttle's clock."""

    app: Any
    ctx: ConsoleContext
    driver: Driver
    clock: Clock

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="http://console.test", follow_redirects=False)

    def login(self, name: str, role: str, *, add: bool = True) -> TestClient:
        """A client signed in as ``name`` (added with ``role`` first unless ``add`` is False)."""
        if add:
            self.ctx.users.add(name, role, PASSWORD)
        client = self.client()
        token = csrf_of(client.get("/login").text)
        answer = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token})
        assert answer.status_code == 303, answer.text
        return client


def csrf_of(html: str) -> str:
    """The CSRF token of a page."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


@pytest.fixture
def site(real_redis: redis.Redis, key_prefix: str) -> Iterator[Site]:
    engine = Engine(make_store(real_redis, key_prefix), MemoryEnqueuer())
    engine.publish(load_definition(__import__("json").dumps(FLOW)), alias="production")
    keys = ConsoleKeys.under(key_prefix)
    clock = Clock()
    settings = ConsoleSettings(secret="x" * 40, metrics_token="metrics-secret-token")
    ctx = ConsoleContext(engine=engine, users=UserStore(real_redis, keys, TEST_HASHER),
                         throttle=LoginThrottle(real_redis, keys, free=3, base=2.0, maximum=60.0, clock=clock),
                         burndown=BurndownStore(real_redis, keys), settings=settings, queues=["svc"])
    yield Site(create_app(ctx, plugins=[], sample=False), ctx, Driver(engine, ACTIONS), clock)
