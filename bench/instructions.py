"""Instructions per account, the engine against the peer: a figure that does not move with the machine's load.

    .venv/bin/python -m bench.instructions [--accounts 120] [--solver greedy] [--side engine|peer|both]

On a shared machine the CPU time of the same work moves by 20 % from one pass to the next, more than
most changes of the engine's step path are worth. The count of instructions does not: valgrind's
callgrind counts them, and two runs of the same code count the same to within 0.2 %. Use it to
compare a change before and after (run it on both commits); use :mod:`bench.profile_account` for
where the time goes, and the morning (``python -m bench --only morning``) for what a user gets.

Each side runs in a process of its own under ``valgrind --tool=callgrind`` (``valgrind`` from
Debian's package of that name; Python's hash seed fixed), in a sandbox of its own
(:mod:`bench.sandbox`) on the Redis at ``TRADEFLOW_REDIS_URL``: one book of ``--accounts`` seeded
accounts, ``WARMUP`` accounts run first (imports, caches, connections), then every active
account counted, exactly as :mod:`bench.profile_account` runs them (the engine: the daily
rebalance, every service inline in this process, on the real Redis; the peer: the plain script's
per-account function). Counting is switched on just before the measured accounts and off just
after (``callgrind_control``), so the book's seeding and the instances' start are not counted.
Redis's own work is another process and is not counted either.

Printed: instructions per account of each side, the engine's over the peer's, and the engine's
by library (the Python interpreter, pydantic, the codecs...), from ``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

#: A line of ``callgrind_annotate``: instructions, then the function, then [the object file].
_LINE = re.compile(r"^\s*([\d,]+) \([\s\d.]+%\)\s+(.*?)(?: \[(.+)\])?$")


def _count(side: str, accounts: int, solver: str) -> None:
    """Inside valgrind: seed, warm up, then run one side's accounts with counting on."""
    from bench.profile_account import WARMUP, EngineSide, PeerSide
    from bench.sandbox import Sandbox
    from portfolio_manager.cli import last_session
    from portfolio_manager.generator import seed_book

    url = os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
    with Sandbox(url) as sandbox:
        services = sandbox.services()
        run_date = last_session()
        seed_book(services.book, accounts, 7, run_date)
        if side == "peer":
            active = [(a.id, a.region.value) for a in services.book.list_accounts(active_only=True, invalid={})]
            peer = PeerSide(sandbox, run_date, active, solver)
            peer.run("warmup-peer", active[:WARMUP])()
            work, count = peer.run("peer"), len(active)
        else:
            engine = EngineSide(sandbox, run_date, True, solver)
            engine.work(engine.start("warmup-engine", WARMUP))()
            count = engine.start("engine")
            work = engine.work(count)
        _toggle("on")
        work()
        _toggle("off")
        print(f"counted accounts: {count}", flush=True)


def _toggle(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def measure(side: str, accounts: int, solver: str, out_dir: Path) -> tuple[int, int, dict[str, int]]:
    """Run ``side`` under callgrind: (instructions counted, accounts, instructions by object file)."""
    out = out_dir / f"{side}.callgrind"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, "-m", "bench.instructions", "--inner", side, "--accounts", str(accounts),
         "--solver", solver],
        env=env, capture_output=True, text=True, check=False)
    found = re.search(r"counted accounts: (\d+)", done.stdout)
    if done.returncode != 0 or found is None or not out.exists():
        raise SystemExit(f"the {side} side failed under valgrind:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out)],
                               capture_output=True, text=True, check=True).stdout
    total, by_object = split_annotation(annotated)
    return total, int(found.group(1)), by_object


def split_annotation(annotated: str) -> tuple[int, dict[str, int]]:
    """The program's total and its instructions by object file (a shared library's short name:
    ``libpython3``, ``_pydantic_core``, ``isal_zlib``...), from ``callgrind_annotate --inclusive=no``."""
    total = 0
    by_object: defaultdict[str, int] = defaultdict(int)
    for line in annotated.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        count = int(match.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in match.group(2):
            total = count
            continue
        obj = match.group(3)
        if obj:
            name = Path(obj).name.split(".cpython")[0].split(".so")[0]
        else:  # annotate names no object for some of the interpreter's own functions
            name = "libpython3" if "/Python-3" in match.group(2) or match.group(2).startswith("Python/") else "?"
        by_object[name.replace("libpython3.11", "libpython3")] += count
    return total, dict(by_object)


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=120, help="book size (default 120)")
    parser.add_argument("--solver", choices=["milp", "greedy"], default="greedy",
                        help="plan.solver of both sides (default greedy: the engine's own cost stands out)")
    parser.add_argument("--side", choices=["engine", "peer", "both"], default="both")
    parser.add_argument("--inner", choices=["engine", "peer"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _count(args.inner, args.accounts, args.solver)
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    sides = ["engine", "peer"] if args.side == "both" else [args.side]
    per_account: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tradeflow-instructions-") as tmp:
        for side in sides:
            total, accounts, by_object = measure(side, args.accounts, args.solver, Path(tmp))
            per_account[side] = total / accounts
            print(f"{side}: {total / accounts / 1e6:.3f} M instructions per account ({accounts} accounts)")
            for name, count in sorted(by_object.items(), key=lambda kv: -kv[1])[:6]:
                print(f"    {name:40s} {count / accounts / 1e6:7.3f} M")
    if len(per_account) == 2:
        extra = per_account["engine"] - per_account["peer"]
        print(f"engine over peer: {extra / 1e6:.3f} M instructions per account "
              f"({per_account['engine'] / per_account['peer']:.2f} x)")


if __name__ == "__main__":
    main()
