"""Run labels: what a run may be called, checked in one place by everything that creates a run.

A label names a run in URLs (``/runs/<label>``), CLI arguments and Redis keys, so it is kept to
characters that need no escaping anywhere: ASCII letters, digits and ``- _ . :``, starting with
a letter or digit, at most 128 characters (room for the platform's derived labels, such as
``submit-<run>``). Every label the platform makes fits: ``adhoc``, ``rebalance-2026-11-27``,
``deposits-2026-11-27``, ``submit-rebalance-2026-11-27``.
"""

from __future__ import annotations

import re

from engine.errors import InvalidInput

MAX_RUN_LABEL = 128
RUN_LABEL = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{MAX_RUN_LABEL - 1}}}")
ALLOWED = (f"1-{MAX_RUN_LABEL} characters: letters A-Z a-z, digits 0-9 and '-', '_', '.', ':', "
           "starting with a letter or digit")


def check_run_label(run: str) -> str:
    """``run`` when it is a valid run label; InvalidInput naming the allowed characters otherwise."""
    if not isinstance(run, str) or not RUN_LABEL.fullmatch(run):
        raise InvalidInput(f"run label {run!r} is not allowed: use {ALLOWED} (e.g. rebalance-2026-11-27)")
    return run
