"""An activity record names the worker that wrote it: host, process id and thread."""

from __future__ import annotations

import os
import socket
import threading

from engine.runtime.outcomes import worker_name


def test_it_names_this_host_process_and_thread() -> None:
    assert worker_name() == f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.append(worker_name()), name="pool-7")
    thread.start()
    thread.join()
    assert seen == [f"{socket.gethostname()}:{os.getpid()}:pool-7"]


def test_a_forked_child_names_its_own_process() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its name, then out without running the test session's teardown
        try:
            os.write(write, f"{os.getpid()} {worker_name()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        child, name = os.read(read, 1000).decode().split(" ", 1)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert int(child) == pid and name == f"{socket.gethostname()}:{pid}:{threading.current_thread().name}"
    assert worker_name().split(":")[1] == str(os.getpid())
