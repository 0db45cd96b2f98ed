"""The JSON of an account's morning, timed on its own: the standard library against the engine's codec.

    .venv/bin/python -m bench.codec --accounts 200 [--solver greedy] [--repeat 7]

Runs the engine side of :mod:`bench.profile_account` once (a book of ``--accounts`` accounts
in a sandbox of its own on ``TRADEFLOW_REDIS_URL``, every step in this process) with
:mod:`engine.jsoncodec`'s functions wrapped wherever the engine imported them, so that every
value encoded (``encode``: stored documents, the store's operation documents, messages;
``encode_strict``: a service's transition data) and every text decoded (``loads``) is kept.
Then each kept call is timed (best of ``--repeat`` passes over all of them) both ways: as the
standard library did it before (``json.JSONEncoder(separators=(",", ":"), default=str)``, the
same with ``allow_nan=False``, ``json.loads``) and by the codec. Printed: calls and CPU
microseconds per account of each kind, both ways. Only the JSON: zlib, Redis and the rest of
the step are not in these figures (``bench.profile_account`` has them, with the machine's noise).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from engine import jsoncodec

#: The standard library's path, as the engine used it before the codec.
_OLD: dict[str, Callable[[Any], Any]] = {
    "encode": json.JSONEncoder(separators=(",", ":"), default=str).encode,
    "encode_strict": json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode,
    "loads": json.loads,
}


def record(kept: dict[str, list[Any]]) -> Callable[[], None]:
    """Wrap the codec's functions in every loaded ``engine`` module; the calls' arguments go into ``kept``.
    Returns the function that puts the originals back."""
    originals = {name: getattr(jsoncodec, name) for name in ("encode", "encode_strict", "loads", "dumps")}

    def wrapper(name: str) -> Callable[[Any], Any]:
        inner = originals[name]
        into = kept["encode" if name == "dumps" else name]

        def call(value: Any) -> Any:
            into.append(value)
            return inner(value)
        return call

    wrappers = {name: wrapper(name) for name in originals}
    patched: list[tuple[Any, str, Any]] = []
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("engine.") or module is jsoncodec:
            continue
        for attr, value in list(vars(module).items()):
            for name, original in originals.items():
                if value is original:
                    patched.append((module, attr, value))
                    setattr(module, attr, wrappers[name])

    def restore() -> None:
        for module, attr, value in patched:
            setattr(module, attr, value)
    return restore


def best_us(fn: Callable[[Any], Any], values: list[Any], repeat: int) -> float:
    """The best total time (microseconds) of ``fn`` over ``values`` in ``repeat`` passes."""
    best = float("inf")
    clock = time.process_time
    for _ in range(repeat):
        began = clock()
        for value in values:
            fn(value)
        best = min(best, clock() - began)
    return best * 1e6


def main(argv: list[str] | None = None) -> None:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=200, help="book size (default 200)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--solver", choices=["milp", "greedy"], default="greedy")
    parser.add_argument("--repeat", type=int, default=7, help="timed passes of each way (default 7)")
    parser.add_argument("--redis-url", default=os.environ.get("TRADEFLOW_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args(argv)

    import engine.testing  # noqa: F401  (loads the store and the runtime, whose codec calls are wrapped)
    from bench import profile_account  # imports the engine's modules, which the wrapping needs loaded

    kept: dict[str, list[Any]] = {"encode": [], "encode_strict": [], "loads": []}
    restore = record(kept)
    try:
        options = profile_account.Options(accounts=args.accounts, seed=args.seed, repeat=1, profile=False,
                                          solver=args.solver)
        _, engine_side = profile_account.run(args.redis_url, options)
    finally:
        restore()
    accounts = engine_side.accounts + profile_account.WARMUP
    print(f"\nJSON calls kept: {sum(map(len, kept.values()))} over {accounts} accounts (the warm-up's included); "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"  {'kind':<15}{'calls/acct':>11}{'stdlib us/acct':>16}{'codec us/acct':>15}{'ratio':>8}")
    totals = [0.0, 0.0]
    for name, values in kept.items():
        old = best_us(_OLD[name], values, args.repeat) / accounts
        new = best_us(getattr(jsoncodec, name), values, args.repeat) / accounts
        totals[0] += old
        totals[1] += new
        print(f"  {name:<15}{len(values) / accounts:>11.1f}{old:>16.1f}{new:>15.1f}{new / old if old else 0:>8.2f}")
    print(f"  {'total':<15}{'':>11}{totals[0]:>16.1f}{totals[1]:>15.1f}{totals[1] / totals[0]:>8.2f}")


if __name__ == "__main__":
    main()
