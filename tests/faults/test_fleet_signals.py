"""Fix (a): ``tradeflow workers`` stops every celery child on SIGTERM and SIGHUP, as on Ctrl-C.

Pass criterion: after the signal, the ``tradeflow workers`` process exits within the warm
shutdown period and none of the processes it started (worker mains, their prefork
children, beat) is still running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.faults.harness import lab_env
from tests.faults.redis_server import RedisServer

TRADEFLOW = str(Path(sys.executable).parent / "tradeflow")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_tradeflow_workers_leaves_no_child_behind(tmp_path: Path, signum: signal.Signals) -> None:
    server = RedisServer(tmp_path).start()
    env = {**os.environ, **lab_env(tmp_path, server.url, "tfsig")}
    log = (tmp_path / "workers.log").open("wb")
    proc = subprocess.Popen([TRADEFLOW, "workers", "--fleet", "faults:prefork:2", "--fleet", "engine:threads:1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        end = time.monotonic() + 60
        descendants: list[int] = []
        while len(descendants) < 5 and time.monotonic() < end:  # 2 worker mains, 2 pool children, beat
            time.sleep(0.2)
            descendants = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(descendants) >= 5, (tmp_path / "workers.log").read_text()
        proc.send_signal(signum)
        assert proc.wait(60) == 0  # its warm shutdown lasts at most 15 s, then SIGKILL: generous on a busy machine
        end = time.monotonic() + 30  # what it SIGKILLed still has to be reaped
        while any(_alive(pid) for pid in descendants) and time.monotonic() < end:
            time.sleep(0.1)
        survivors = [pid for pid in descendants if _alive(pid)]
        assert not survivors, f"left running after {signum.name}: {survivors}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in descendants:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        server.close()
