"""Redis's instructions for the ``state.lua`` calls of a captured run, two versions of the script side by side.

Capture a run as for :mod:`bench.replay_state`, then::

    git show <commit>:engine/store/lua/state.lua > /tmp/before.lua
    python -m bench.replay_instructions /tmp/monitor.txt --other /tmp/before.lua [--rounds 3]
        [--server redis-server]

A redis-server of its own (``--server``, the one on ``PATH`` by default; append-only file on, as
the benchmarks' Redis; its timer at 1 Hz, so that the slowness of valgrind adds little of its
periodic work) runs under valgrind's callgrind on a free port. Each version first replays every
call of the capture once to warm (the script loaded, Redis's and Lua's allocators grown); then,
round after round, the versions alternated, each replays them once more with the count zeroed
before and dumped after (``callgrind_control``). Every replay runs in the capture's order,
pipelined (:func:`bench.replay_state.send`), under a key prefix of its own. Printed: each
version's median instructions (the whole server's user-space work: the scripts, the commands
they run, the append-only file; the kernel's side of the sockets is not counted) and the ratio
of the medians. Load on the machine barely moves the count: two replays of one script differ
by up to 1 % (Redis draws its hash seed at each start, and each replay's keys are new), where
Redis's CPU time for the same replay moves by 10 % and more (:mod:`bench.replay_state` measures
that). Nothing asserts a count.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from bench.replay_state import HERE, Call, captured, delete_prefix, script_source, send, versions_parser


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class CountedRedis:
    """A redis-server under valgrind's callgrind in ``folder``: :meth:`count` runs a function and
    says how many instructions Redis executed meanwhile."""

    def __init__(self, server: str, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/counted.%p", server,
             "--port", str(self.port), "--dir", str(folder), "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--hz", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{server} did not start under valgrind") from None
                time.sleep(0.2)

    def count(self, work: Callable[[], object]) -> int:
        """Instructions Redis executed while ``work()`` ran."""
        self._control("-z")
        work()
        before = set(self.folder.glob("counted.*"))
        self._control("-d")
        dumped = sorted(set(self.folder.glob("counted.*")) - before)
        for line in dumped[-1].read_text().splitlines():
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
        raise SystemExit(f"{dumped[-1]}: no totals line")

    def _control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(self.process.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """Shut the server down (nothing saved)."""
        with contextlib.suppress(redis.ConnectionError):  # (the connection closes as the server goes)
            self.client.shutdown(nosave=True)
        self.process.wait(timeout=60)


def replayed(server: CountedRedis, calls: list[Call], sha: str, old: bytes, counted: bool = True) -> int:
    """Instructions of one replay of ``calls`` through the loaded script ``sha`` (0 when not ``counted``)."""
    new = f"replay-{uuid.uuid4().hex[:8]}".encode()
    replay = functools.partial(send, server.client, calls, sha, old, new)
    if counted:
        count = server.count(replay)
    else:
        count = 0
        replay()
    delete_prefix(server.client, new)  # (not counted)
    return count


def main(argv: list[str] | None = None) -> None:
    """Print each version's instructions, per call and in all."""
    parser = versions_parser("python -m bench.replay_instructions", __doc__)
    parser.add_argument("--server", default="redis-server", help="the redis-server to run (default: on PATH)")
    parser.add_argument("--rounds", type=int, default=2, help="counted replays of each version (default 2)")
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", args.server):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install valgrind (apt-get install valgrind) and redis-server")
    calls, old = captured(args.monitor, args.prefix)
    with tempfile.TemporaryDirectory(prefix="replay-instructions-") as folder:
        server = CountedRedis(args.server, Path(folder))
        try:
            shas = {name: server.client.script_load(script_source(path))
                    for name, path in (("other", args.other), ("this", HERE))}
            for sha in shas.values():
                replayed(server, calls, sha, old, counted=False)
            counts: dict[str, list[int]] = {name: [] for name in shas}
            for number in range(args.rounds):
                for name in (["other", "this"] if number % 2 == 0 else ["this", "other"]):
                    counts[name].append(replayed(server, calls, shas[name], old))
        finally:
            server.stop()
    print(f"{len(calls)} calls of state.lua replayed on {args.server} under valgrind, {args.rounds} rounds")
    medians = {name: statistics.median(found) for name, found in counts.items()}
    for name, found in counts.items():
        print(f"{name}: {medians[name] / 1e6:,.1f} M instructions (median; all: "
              f"{', '.join(f'{n / 1e6:,.1f}' for n in found)}), {medians[name] / len(calls) / 1e3:,.1f} k per call")
    print(f"this / other: {medians['this'] / medians['other']:.3f}")


if __name__ == "__main__":
    main()
