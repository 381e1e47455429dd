"""session._proc_tree (the process tree from /proc/PID/task/TID/children) against psutil's children(recursive=True),
which reads every process's /proc/PID/stat."""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest

from hdrlog import session

pytestmark = pytest.mark.skipif(not session._PROC_CHILDREN, reason="no /proc/PID/task/TID/children")


def by_psutil(root: int) -> list[int]:
    return [root] + sorted(k.pid for k in psutil.Process(root).children(recursive=True))


def test_tree_matches_psutil_with_threads_grandchildren_and_zombies():
    # sh -> sleep, sh -> (sleep, sleep); python with a thread that forks (its child is listed under that thread);
    # a zombie child (exited, not reaped)
    p = subprocess.Popen(["sh", "-c", "sleep 30 & sh -c 'sleep 30 & sleep 30' & wait"])
    code = ("import os, subprocess, threading, time\n"
            "z = subprocess.Popen(['true'])\n"
            "threading.Thread(target=lambda: subprocess.Popen(['sleep', '30'])).start()\n"
            "time.sleep(30)\n")
    q = subprocess.Popen(["python3", "-c", code])
    try:
        deadline = time.monotonic() + 10
        while len(by_psutil(p.pid)) < 5 or len(by_psutil(q.pid)) < 3:
            assert time.monotonic() < deadline, (by_psutil(p.pid), by_psutil(q.pid))
            time.sleep(0.05)
        time.sleep(0.2)
        for root in (p.pid, q.pid):  # (a busy machine's other trees change between the two reads)
            assert session._proc_tree(root, True) == by_psutil(root)
        assert session._proc_tree(p.pid, False) == [p.pid]
    finally:
        for proc in (p, q):
            for k in psutil.Process(proc.pid).children(recursive=True):
                k.kill()
            proc.kill()
            proc.wait()
    assert session._proc_tree(p.pid, True) == [] and session._proc_tree(p.pid, False) == []
