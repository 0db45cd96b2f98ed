"""Command line: ``python -m order_calc plan FILE`` (``-`` reads stdin) prints the plan as JSON.

Exit status: 0 with the plan on stdout; 2 with one line on stderr for invalid input (bad
JSON, an unreadable file, or a request that breaks the contract, naming the field).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from order_calc.errors import OrderCalcError
from order_calc.plan import plan_orders

EXIT_INVALID = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m order_calc",
        description="Plan one account's orders for one trading day (ORDER_CALC.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plan = commands.add_parser(
        "plan",
        help="read one request as JSON and print the plan as JSON",
        description="Read one request as JSON from FILE ('-' for stdin) and print the plan as JSON on "
        "stdout. Invalid input exits with status 2 and one line on stderr naming the field.",
    )
    plan.add_argument("file", metavar="FILE", help="request JSON file, or '-' for stdin")
    plan.add_argument("--indent", type=int, default=2, help="JSON indentation (default 2; 0 for one line)")
    return parser


def _fail(message: str) -> int:
    print(f"order_calc: {message}", file=sys.stderr)
    return EXIT_INVALID


def _read(path: str) -> Any:
    if path == "-":
        return json.load(sys.stdin)
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    source = "<stdin>" if args.file == "-" else args.file
    try:
        data = _read(args.file)
    except OSError as exc:
        return _fail(f"{source}: cannot read: {exc.strerror or exc}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _fail(f"{source}: invalid JSON: {exc}")
    try:
        with _stdout_to_stderr():
            plan = plan_orders(data)
    except OrderCalcError as exc:
        return _fail(f"{source}: {exc}".replace("\n", " "))
    print(json.dumps(plan.model_dump(mode="json"), indent=args.indent or None))
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send anything written to file descriptor 1 while planning to stderr.

    The native solver may print a diagnostic line on the process's stdout; stdout must carry
    the plan's JSON and nothing else.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no usable stdout: nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
