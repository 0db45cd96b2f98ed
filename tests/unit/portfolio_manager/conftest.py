"""Fixtures of the portfolio manager's unit tests: fakeredis books and a live custodian server."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from portfolio_manager.redis_book import RedisBook
from tests.unit.portfolio_manager.custodian import Custodian, serve


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    """A fresh in-memory Redis (with Lua)."""
    return fakeredis.FakeRedis()


@pytest.fixture
def fake_book(fake_redis: fakeredis.FakeRedis) -> RedisBook:
    """An empty RedisBook on fakeredis."""
    return RedisBook(fake_redis, prefix="pm:")


@pytest.fixture
def custodian() -> Iterator[Custodian]:
    """A real HTTP custodian server on 127.0.0.1 (ephemeral port), backed by its own fakeredis book."""
    with serve(RedisBook(fakeredis.FakeRedis(), prefix="custodian:")) as running:
        yield running
