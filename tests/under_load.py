"""``make test-under-load``: the suite (``-m "not slow"``) while busy loops hold every core.

Starts one spinning process per core (two on the development machine), runs pytest with the
arguments given (default ``-q -m "not slow" tests``), always kills the spinners, and prints
the wall time and pytest's exit status. No verdict of the suite may depend on how busy the
machine is: this is how that is checked.

Run: ``.venv/bin/python -m tests.under_load [pytest arguments...]``
"""

from __future__ import annotations

import subprocess
import sys
import time

from tests.load import busy_cores

DEFAULT_ARGS = ["-q", "-m", "not slow", "tests"]


def main(argv: list[str]) -> int:
    """Run pytest with ``argv`` (or the default) under full CPU load; pytest's exit status."""
    args = argv or DEFAULT_ARGS
    began = time.monotonic()
    with busy_cores() as spinners:
        print(f"under load: {len(spinners)} busy-loop processes (pids "
              f"{', '.join(str(p.pid) for p in spinners)}) hold the cores", flush=True)
        status = subprocess.call([sys.executable, "-m", "pytest", *args])
    print(f"under load: pytest exited {status} after {time.monotonic() - began:.0f} s (busy loops stopped)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
