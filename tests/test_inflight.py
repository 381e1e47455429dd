"""inflight.blocked_socket_reads on a real process blocked in recv, and one that is not."""

import socket
import subprocess
import sys
import time

from hdrlog.inflight import blocked_socket_reads

BLOCKED = "import socket,sys; a,b=socket.socketpair(); print('ready',flush=True); a.recv(1)"


def test_thread_blocked_in_recv_is_found():
    p = subprocess.Popen([sys.executable, "-c", BLOCKED], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 5
        found = []
        while not found and time.monotonic() < deadline:
            found = blocked_socket_reads(p.pid)
            time.sleep(0.05)
        assert len(found) == 1 and found[0][0] == p.pid
    finally:
        p.kill()
        p.wait()


def test_sleeping_process_has_none():
    p = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.1)
        assert blocked_socket_reads(p.pid) == []
    finally:
        p.kill()
        p.wait()
    assert blocked_socket_reads(999_999_999) == []
