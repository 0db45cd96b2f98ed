"""Fixtures shared by the broker's contract tests: the broker's key prefix, a sending Celery app, and a
kombu connection as a worker's (the broker's patches installed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery
from kombu import Connection

from engine.app import sender_app
from engine.broker import install_worker_patches


@pytest.fixture
def broker_prefix(key_prefix: str) -> str:
    return f"{key_prefix}:q:"


@pytest.fixture
def celery_app(redis_url: str, broker_prefix: str) -> Celery:
    return sender_app(redis_url, broker_prefix, "contract-test")


@pytest.fixture
def connection(redis_url: str, broker_prefix: str) -> Iterator[Connection]:
    """A kombu connection to the broker, as a worker's (the broker's patches installed)."""
    assert install_worker_patches()
    conn = Connection(redis_url, transport_options={"global_keyprefix": broker_prefix,
                                                    "priority_steps": [0, 3, 6, 9]})
    try:
        yield conn
    finally:
        conn.release()
