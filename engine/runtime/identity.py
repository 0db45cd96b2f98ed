"""Who did a step: the worker's name in activity records (host:pid:thread)."""

from __future__ import annotations

import os
import socket
import threading

#: The host name, read once (it was read on every activity record).
_HOST = socket.gethostname()


def worker_name() -> str:
    """host:pid:thread of this worker, for activity records."""
    return f"{_HOST}:{os.getpid()}:{threading.current_thread().name}"


__all__ = ["worker_name"]
