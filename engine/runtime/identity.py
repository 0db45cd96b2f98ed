"""Who did a step: the worker's name in activity records (host:pid:thread)."""

from __future__ import annotations

import os
import socket
import threading


def worker_name() -> str:
    """host:pid:thread of this worker, for activity records."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


__all__ = ["worker_name"]
