"""A Redis on the workers' machine, reached through its Unix socket: ``TRADEFLOW_REDIS_URL=unix://...``.

redis-py reads ``unix:///path/redis.sock?db=N`` as it is; kombu has no ``unix`` transport, so
the broker gets the same server in kombu's spelling (``engine.connections.kombu_url``). Pass
criterion: a worker's app takes the socket's broker for the state's Redis (the store's scripts
push the step messages), and real Celery workers whose only Redis URL is the socket's run an
instance to the end, every connection to that Redis a Unix-socket one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import redis
from celery import Celery

from engine.app import enqueuer_for
from engine.broker import RedisQueueEnqueuer
from engine.celery_config import celery_config
from engine.config import Settings
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.ops.fleet import FleetSpec
from tests.faults.redis_server import RedisServer
from tests.faults.shared_redis_fleet import shared_fleet

FLOW = {"name": "one-step", "start": "a",
        "nodes": {"a": {"type": "service", "service": "faulty", "action": "work", "transitions": {"ok": "done"},
                        "input": {"key": "data.key", "mode": "'ok'", "node": "'a'"}},
                  "done": {"type": "terminal", "status": "succeeded"}}}


def test_workers_given_only_a_unix_socket_url_run_an_instance_to_the_end(tmp_path: Path) -> None:
    sockets = Path(tempfile.mkdtemp(prefix="tf-sock-", dir="/tmp"))  # a socket's path has ~100 bytes at most
    socket_path = sockets / "redis.sock"
    server = RedisServer(tmp_path, extra=("--unixsocket", str(socket_path), "--unixsocketperm", "700")).start()
    try:
        url = f"unix://{socket_path}?db=0"
        client = redis.Redis.from_url(url)
        assert client.ping()
        app = Celery("unix-check", set_as_current=False)
        app.conf.update(celery_config(Settings(redis_url=url), url))
        assert app.conf.broker_url == f"redis+socket://{socket_path}?virtual_host=0"
        # the broker is recognised as the state's Redis: the store's scripts push the step messages
        assert isinstance(enqueuer_for(app, client=client), RedisQueueEnqueuer)
        specs = [FleetSpec("engine", "threads", 2), FleetSpec("faulty", "threads", 2)]
        with shared_fleet(url, "tests.faults.misbehaving_services", specs, name="unix") as live:
            live.engine.publish(load_definition(json.dumps(FLOW)), alias="production")
            iid = live.engine.start("one-step", {"key": "unix"}, run="unix")
            live.wait_run("unix", timeout=90)
            assert live.engine.get(iid).status is InstanceStatus.SUCCEEDED
            clients = client.client_list()
            by_socket = [c for c in clients if "U" in c["flags"]]
            logs = live.logs(10**7)
        assert "ready" in logs
        assert len(by_socket) >= 3, clients  # the workers' broker and state connections, and this test's own
        assert all(c["laddr"].startswith(str(socket_path)) for c in by_socket)
        print(f"\nUnix socket: workers on {url} ran the instance to the end; "
              f"{len(by_socket)} of {len(clients)} connections through the socket")
        client.close()
    finally:
        server.close()
        shutil.rmtree(sockets, ignore_errors=True)
