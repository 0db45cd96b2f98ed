"""What every kind of step shares: its deadline, the attempts a lost one gets, the worker's name.

Kept apart from :mod:`engine.runtime.runner` so that the modules the runner uses (signals,
gather nodes) can use them too without importing the runner.
"""

from __future__ import annotations

import os
import socket
import threading

from engine.definitions.model import GatherNode, StepNode

#: Seconds added to a node's timeout before the sweeper calls a step lost.
DEADLINE_GRACE = 5.0
#: A step that made no progress is re-sent at least this many times in all, whatever its retry policy.
MIN_TIMEOUT_ATTEMPTS = 3


_HOST = socket.gethostname()


def step_allowance(node: StepNode | GatherNode) -> float:
    """Seconds a started step of ``node`` has before the sweeper calls it lost: its timeout plus a grace."""
    return node.timeout_seconds + DEADLINE_GRACE


def step_deadline(node: StepNode | GatherNode, now: float) -> float:
    """When the sweeper calls a step of ``node`` started at ``now`` lost: its timeout plus a grace."""
    return now + step_allowance(node)


def worker_name() -> str:
    """host:pid:thread of this worker, for activity records."""
    return f"{_HOST}:{os.getpid()}:{threading.current_thread().name}"
